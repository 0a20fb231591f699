"""Named convnets for image-folder data: KSH 2012's network ("AlexNet") and a CPU-sized copy.

    from gpunn import models
    net = models.build("alexnet-small", classes=10, seed=1, backend="cpu")   # 3 x 64 x 64
    models.summary("alexnet", classes=1000)   # rows per layer, no parameters allocated

``alexnet`` is the network of Krizhevsky, Sutskever and Hinton (2012) for 3 x 224 x 224
images, on one device: conv 96 11x11 stride 4 (padding 2), overlapping max-pool 3x3 stride
2, conv 256 5x5, pool, conv 384, 384 and 256 3x3, pool, two fully connected layers of 4096
ReLUs with dropout 0.5 on their outputs, and a softmax. 62,378,344 parameters for 1,000
classes (the paper's 60M is its two-GPU version, whose conv2, 4 and 5 see half the
channels). ``alexnet-small`` keeps that shape for 3 x 64 x 64 images with narrower layers,
so it trains on a CPU in minutes.

Departures from the paper, and why: weights start N(0, 1/fan_in) (the book's chapter-3
initialisation; the softmax layer at 0, as network3) and biases at 0, where KSH draw
N(0, 0.01²) with some biases 1 — a start that needs the paper's hand-tuned schedule to leave
its plateau. (He's N(0, 2/fan_in) keeps activations too large here: with η = 0.01 the
first steps overshoot.) Local response normalisation (:class:`gpunn.layers.LRN`, after conv
1 and 2) is off unless ``lrn=True``: later work found it does little. What it leaves out:
the two-GPU split, PCA colour noise.
"""

from __future__ import annotations

import numpy as np

from gpunn.errors import ConfigError
from gpunn.layers import LRN, Conv2D, Flatten, FullyConnected, MaxPool, Softmax

__all__ = ["ARCHS", "INPUT_SIZE", "layers", "build", "summary", "ksh_init"]

#: conv layers as (out_channels, kernel, stride, padding), "pool" (3x3 stride 2), "lrn";
#: then the hidden fully connected widths.
_SPECS = {
    "alexnet": ([(96, 11, 4, 2), "lrn", "pool", (256, 5, 1, 2), "lrn", "pool",
                 (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1), "pool"], (4096, 4096)),
    "alexnet-small": ([(48, 5, 2, 2), "lrn", "pool", (128, 5, 1, 2), "lrn", "pool",
                       (192, 3, 1, 1), (192, 3, 1, 1), (128, 3, 1, 1), "pool"], (512, 512)),
}
ARCHS = tuple(_SPECS)
#: the side of the square input each network is laid out for
INPUT_SIZE = {"alexnet": 224, "alexnet-small": 64}
DROPOUT = 0.5


def _spec(arch: str):
    try:
        return _SPECS[arch]
    except KeyError:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of "
                          f"{', '.join(ARCHS)}") from None


def layers(arch: str, classes: int = 1000, lrn: bool = False, size: int | None = None) -> list:
    """The layers of ``arch`` for ``classes`` classes and square inputs of side ``size``
    (default :data:`INPUT_SIZE`), not yet built (no parameters drawn)."""
    convs, hidden = _spec(arch)
    if not isinstance(classes, (int, np.integer)) or classes < 2:
        raise ConfigError(f"a classifier needs classes >= 2; received {classes!r}")
    size = INPUT_SIZE[arch] if size is None else size
    out, channels, side = [], 3, size
    for item in convs:
        if item == "pool":
            out.append(MaxPool(3, 2))
            side = (side - 3) // 2 + 1
        elif item == "lrn":
            if lrn:
                out.append(LRN())
        else:
            f, k, s, p = item
            out.append(Conv2D(channels, f, k, stride=s, padding=p, activation="relu"))
            channels, side = f, (side + 2 * p - k) // s + 1
        if side < 1:
            raise ConfigError(f"{arch} needs inputs larger than {size}x{size} pixels; it is "
                              f"laid out for {INPUT_SIZE[arch]}x{INPUT_SIZE[arch]}")
    n_in = channels * side * side
    out.append(Flatten())
    # FullyConnected drops its *inputs* (network3's convention): KSH's dropout on the
    # outputs of the two hidden layers is dropout on the inputs of the layers above them.
    for i, width in enumerate(hidden):
        out.append(FullyConnected(n_in, width, "relu", dropout=DROPOUT if i else 0.0))
        n_in = width
    out.append(Softmax(n_in, int(classes), dropout=DROPOUT))
    return out


def ksh_init(net) -> None:
    """Weights N(0, 1/fan_in) and biases 0, drawn from ``net``'s generator (the same start
    on CPU and GPU for a seed); the softmax layer stays at zero, as network3 starts it.

    (A random softmax start reaches the lower layers from the first step, but on the toy
    set at η = 0.02 it overshot within four epochs and left every ReLU dead.)
    """
    for layer in net.layers:
        w = getattr(layer, "w", None)
        if w is None or isinstance(layer, Softmax):
            continue
        fan_in = int(np.prod(w.shape[1:]))
        layer.w = net.rng.normal(0.0, 1.0 / np.sqrt(fan_in), w.shape, dtype=w.dtype)
        layer.b[...] = 0


def build(arch: str, classes: int = 1000, lrn: bool = False, size: int | None = None,
          seed=None, backend="auto"):
    """A :class:`gpunn.Network` of ``arch`` (log-likelihood cost), started by :func:`ksh_init`.

    Its input is (N, 3, size, size) images, its output (N, classes) probabilities.
    """
    from gpunn.network import Network

    size = INPUT_SIZE[arch] if arch in INPUT_SIZE and size is None else size
    net = Network(layers(arch, classes, lrn, size), cost="log-likelihood",
                  input_shape=(3, size, size), seed=seed, backend=backend)
    ksh_init(net)
    return net


class _ShapesOnly:
    """A stand-in generator whose draws take no memory: every array is one broadcast zero
    (``xp.zeros`` too, for the softmax layer's start)."""

    @property
    def xp(self):
        return self

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=np.float32):
        return np.broadcast_to(np.zeros((), dtype), size)

    def zeros(self, shape, dtype=np.float32):
        return np.broadcast_to(np.zeros((), dtype), shape)


class _NoKernels:
    xp = np

    def kernel(self, name):
        return None


def summary(arch: str, classes: int = 1000, lrn: bool = False,
            size: int | None = None) -> list[dict]:
    """One row per layer of ``arch`` (``layer`` description, ``config``, ``output_shape``,
    ``weights``, ``biases``), found without allocating any parameters: alexnet's 62M stay
    unmade."""
    size = INPUT_SIZE[arch] if arch in INPUT_SIZE and size is None else size
    rows, shape = [], (3, size, size)
    for layer in layers(arch, classes, lrn, size):
        shape = layer.build(shape, _NoKernels(), _ShapesOnly())
        groups = layer.param_groups()
        rows.append({
            "layer": repr(layer), "config": layer.config(), "output_shape": tuple(shape),
            "weights": sum(int(np.prod(p.shape)) for p, _, decays in groups if decays),
            "biases": sum(int(np.prod(p.shape)) for p, _, decays in groups if not decays),
        })
    return rows
