"""What the page needs from a network: every layer's activations, and the network as JSON.

The page (``static/app.js``) runs the forward pass itself, from the weights this module
exports, so that drawing updates at once and an exported copy works without a server. The
server's ``/api/forward`` and the tests run :func:`layer_activations` here, gpunn's own
forward pass, and the two must agree layer by layer.

A *bundle* is one JSON document: the architecture (each layer's ``config()``, its output
shape and its float32 parameters, base64), a name, and a sample of MNIST test images (some
random, some the network gets wrong) with their labels. No pickle: JSON and raw float32.

What it leaves out: networks that do not read one 28 x 28 grey digit (the ImageNet models)
and the LRN layer; :func:`check_servable` says so by name.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from gpunn.errors import ConfigError

__all__ = ["BUNDLE_FORMAT", "DEFAULT_SIZES", "bundle_json", "check_servable", "default_model",
           "describe", "layer_activations", "mnist_sample", "model_bundle"]

BUNDLE_FORMAT = "gpunn-web"
SIDE = 28
PIXELS = SIDE * SIDE
# the layers app.js can run; anything else is refused up front rather than drawn wrong
PAGE_LAYERS = ("FullyConnected", "Softmax", "Conv2D", "MaxPool", "ConvPool", "Flatten")
PAGE_ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear", "step", "softmax")
DEFAULT_SIZES = (784, 16, 16, 10)  # 3Blue1Brown's network


def check_servable(net) -> None:
    """Raise :class:`ConfigError` unless the page can show ``net``: a 28 x 28 grey input
    ((784,) or (1, 28, 28)) and only the layers and activations ``app.js`` implements."""
    if tuple(net.input_shape) not in ((PIXELS,), (1, SIDE, SIDE)):
        raise ConfigError(f"the page shows networks that read one 28x28 grey digit (input shape "
                          f"(784,) or (1, 28, 28)); this model takes "
                          f"{tuple(net.input_shape)}")
    for i, layer in enumerate(net.layers):
        config = layer.config()
        if config["type"] not in PAGE_LAYERS:
            raise ConfigError(f"layer {i} is {config['type']}, which the page cannot run; it "
                              f"runs {', '.join(PAGE_LAYERS)}")
        activation = config.get("activation", "softmax" if config["type"] == "Softmax" else None)
        if activation is not None and activation not in PAGE_ACTIVATIONS:
            raise ConfigError(f"layer {i} uses activation {activation!r}, which the page "
                              f"cannot run; it runs {', '.join(PAGE_ACTIVATIONS)}")


def _pixels(net, X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None]
    if X.ndim != 2 or X.shape[1] != PIXELS:
        raise ConfigError(f"layer_activations expects X of shape (N, 784); received "
                          f"X.shape={X.shape}")
    return X.reshape((len(X),) + tuple(net.input_shape))


def layer_activations(net, X) -> list[np.ndarray]:
    """Each layer's output for inputs X of shape (N, 784), as host arrays: the last is
    ``net.feedforward(X)``. The forward pass is gpunn's (``layer.forward``), not a copy.

    Not thread-safe: a layer keeps what backward needs on itself, so callers running this
    from several threads hold one lock around it (the server does).
    """
    a = net.xp.asarray(_pixels(net, X), dtype=net.dtype)
    out = []
    for layer in net.layers:
        a = layer.forward(a, False, None)
        out.append(net.backend.to_numpy(a))
    return out


def _b64(array) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _layer_entry(net, layer) -> dict:
    entry = dict(layer.config())
    entry["output_shape"] = [int(d) for d in layer.output_shape]
    if entry["type"] == "Softmax":
        entry["activation"] = "softmax"
    for name in ("w", "b"):
        value = getattr(layer, name, None)
        if value is not None:
            value = net.backend.to_numpy(value)
            entry[name] = _b64(value)
            entry[name + "_shape"] = [int(d) for d in value.shape]
    return entry


def mnist_sample(net, split, random: int = 50, wrong: int = 50, seed: int = 0) -> dict:
    """A sample of ``split`` (a gpunn.data Split) for the page's "a test image" buttons:
    ``random`` images drawn at random and up to ``wrong`` that ``net`` misclassifies.

    Returns ``{"pixels": base64 float32 (n, 784), "labels": [...], "predicted": [...],
    "wrong": [bool, ...], "index": [index in the split, ...]}``.
    """
    rng = np.random.default_rng(seed)
    n = len(split)
    predicted = np.empty(n, dtype=np.int64)
    for lo in range(0, n, 1000):
        idx = np.arange(lo, min(n, lo + 1000))
        predicted[idx] = np.asarray(net.backend.to_numpy(net.predict(split.x(idx))))
    labels = np.asarray(split.labels)
    missed = np.flatnonzero(predicted != labels)
    chosen_wrong = rng.permutation(missed)[:wrong]
    chosen_random = rng.choice(n, size=min(random, n), replace=False)
    index = np.concatenate([chosen_random, chosen_wrong]).astype(np.int64)
    return {"pixels": _b64(split.x(index)), "labels": labels[index].tolist(),
            "predicted": predicted[index].tolist(),
            "wrong": [False] * len(chosen_random) + [True] * len(chosen_wrong),
            "index": index.tolist()}


def model_bundle(net, name: str = "", tests: dict | None = None) -> dict:
    """The JSON document the page runs: ``{"format", "name", "input_shape", "layers": [...],
    "tests"}``; each layer is its ``config()`` plus ``output_shape`` and base64 float32
    ``w``/``b`` (with their shapes). ``tests`` is a :func:`mnist_sample` or None."""
    check_servable(net)
    return {"format": BUNDLE_FORMAT, "version": 1, "name": name or describe(net),
            "input_shape": [int(d) for d in net.input_shape],
            "layers": [_layer_entry(net, layer) for layer in net.layers],
            "tests": tests}


def describe(net) -> str:
    """A short name: ``784-16-16-10`` for a fully connected net, else its layer kinds."""
    if getattr(net, "sizes", None):
        return "-".join(str(s) for s in net.sizes)
    return " → ".join(layer.config()["type"] for layer in net.layers)


def bundle_json(bundle: dict) -> str:
    """The bundle as compact JSON that is safe inside a ``<script>`` element."""
    text = json.dumps(bundle, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def default_model(cache_path, load_data, epochs: int = 30, eta: float = 0.1, on_epoch=None,
                  seed: int = 1):
    """3Blue1Brown's 784-16-16-10 network, loaded from ``cache_path`` when it is there, else
    trained (cross-entropy, η = 0.1, L2 λ = 5, mini-batches of 10, 30 epochs: 95.1% test,
    seconds on a laptop CPU) and saved there. Returns ``(net, trained)``, ``trained`` True on
    first use.

    ``load_data()`` returns the dataset (``.train``, ``.validation``); it is called only when
    training is needed. ``on_epoch(record)`` is handed to ``sgd``.
    """
    from pathlib import Path

    import gpunn

    cache_path = Path(cache_path)
    if cache_path.is_file():
        return gpunn.load(cache_path, backend="cpu"), False
    data = load_data()
    net = gpunn.Network(list(DEFAULT_SIZES), cost="cross-entropy", seed=seed, backend="cpu")
    net.sgd(data.train, epochs, 10, eta, lmbda=5.0, evaluation_data=data.validation,
            on_epoch=on_epoch)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    gpunn.save(net, cache_path, training={"preset": "3b1b", "epochs": epochs,
                                          "mini_batch_size": 10, "eta": eta, "lmbda": 5.0,
                                          "cost": "cross-entropy", "seed": seed})
    return net, True
