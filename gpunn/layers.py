"""Layers of a network: each keeps its parameters and runs forward and backward side by side.

Every layer has the same small protocol, so one :class:`gpunn.Network` trains any stack:

- ``build(input_shape, backend, rng, init, dtype) -> output_shape`` checks that the layer
  accepts the per-example ``input_shape`` (raising with both shapes named), draws its
  parameters and looks up the kernels it needs.
- ``forward(x, train, rng)`` keeps what backward needs under named attributes (``self._z``).
- ``backward(grad, need_grad_input)`` takes ∂C/∂a of the layer's output (one row per example,
  already divided by the batch size), sets the parameter gradients (``nabla_w``, ``nabla_b``)
  and returns ∂C/∂x of its input. ``backward_delta(delta, ...)`` starts one step later, from
  δ = ∂C/∂z, which is what a cost hands the output layer (BP1).
- ``param_groups()`` lists ``(param, grad, decays)``: weights decay under L2/L1, biases not.

Shapes: fully connected layers take (N, n_in) (or any (N, ...) whose per-example size is
n_in, flattened as network3 does); convolutional layers take (N, C, H, W).
"""

from __future__ import annotations

import math

import numpy as np

from gpunn import activations
from gpunn.errors import ConfigError

__all__ = ["Layer", "FullyConnected", "Softmax", "Conv2D", "MaxPool", "ConvPool", "Flatten",
           "LRN", "INITS", "from_config"]

INITS = ("default", "large", "network3")


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}; received {init!r}")


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1); received {dropout}")
    return float(dropout)


def _positive(name: str, **values) -> None:
    for key, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} needs {key} to be an integer >= 1; received {value!r}")


class Layer:
    """The protocol; layers without parameters inherit the empty parts."""

    dropout = 0.0
    kind = "layer"
    w = b = None  # weights (decayed by L2/L1) and biases, for layers that have them
    output_shape = None  # per example, e.g. (20, 12, 12); the network sets it when it builds

    def build(self, input_shape, backend, rng, init="default", dtype=np.float32):
        raise NotImplementedError

    def param_groups(self) -> list:
        if self.w is None:
            return []
        return [(self.w, getattr(self, "nabla_w", None), True),
                (self.b, getattr(self, "nabla_b", None), False)]

    def zero_gradients(self) -> None:
        """Gradients of zero (a data-parallel rank whose slice of a mini-batch is empty)."""
        if self.w is not None:
            self.nabla_w, self.nabla_b = self.w * 0, self.b * 0

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(p.shape)) for p, _, _ in self.param_groups())

    def config(self) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class FullyConnected(Layer):
    """z = x Wᵀ + b, a = σ(z), for x of shape (N, n_in); W has the book's shape (n_out, n_in).

    ``dropout`` drops each *input* of the layer with that probability in training, as
    network3's ``p_dropout`` does (so a hidden layer's units are dropped by the layer above).
    ``dropout_mode`` "inverted" (the default) scales the kept inputs by 1/(1 − p) in training;
    "scale-at-eval" (network3) keeps them as they are and scales by (1 − p) at evaluation.
    """

    kind = "fully-connected"

    def __init__(self, n_in: int, n_out: int, activation="sigmoid", dropout: float = 0.0,
                 dropout_mode: str = "inverted"):
        if n_in < 1 or n_out < 1:
            raise ConfigError(f"a layer needs n_in >= 1 and n_out >= 1; received "
                              f"n_in={n_in}, n_out={n_out}")
        if dropout_mode not in ("inverted", "scale-at-eval"):
            raise ConfigError(f"dropout_mode must be 'inverted' or 'scale-at-eval'; received "
                              f"{dropout_mode!r}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.activation = activations.get(activation)
        self.dropout = _check_dropout(dropout)
        self.dropout_mode = dropout_mode

    def build(self, input_shape, backend, rng, init="default", dtype=np.float32):
        size = int(np.prod(input_shape))
        if size != self.n_in:
            raise ConfigError(
                f"{self!r} expects {self.n_in} inputs per example but the layer below gives "
                f"shape {tuple(input_shape)} = {size} values; set n_in={size}"
            )
        self.init_params(rng, init, dtype)
        self._backend = backend
        return (self.n_out,)

    def init_params(self, rng, init: str = "default", dtype=np.float32) -> None:
        """Gaussian weights: N(0, 1/n_in) for ``default`` (chapter 3), N(0, 1) for ``large``
        (chapter 1), N(0, 1/n_out) for ``network3`` (what network3.py does); biases N(0, 1)."""
        _check_init(init)
        fan = {"default": self.n_in, "large": 1, "network3": self.n_out}[init]
        self.w = rng.normal(0.0, 1.0 / math.sqrt(fan), (self.n_out, self.n_in), dtype=dtype)
        self.b = rng.normal(0.0, 1.0, (self.n_out,), dtype=dtype)

    def forward(self, x, train: bool = False, rng=None, activate: bool = True):
        """σ(x Wᵀ + b); with ``activate=False`` only z (a fused cost applies σ itself)."""
        self._in_shape = x.shape
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)
        self._mask = None
        if self.dropout:
            keep = 1.0 - self.dropout
            if train:
                mask = rng.device_random(x.shape, dtype=x.dtype) < keep  # drawn on the GPU
                scale = 1.0 / keep if self.dropout_mode == "inverted" else 1.0
                self._mask = mask * x.dtype.type(scale)
                x = x * self._mask
            elif self.dropout_mode == "scale-at-eval":
                x = x * x.dtype.type(keep)
        z = self._backend.kernel("linear")(x, self.w)  # x Wᵀ
        z += self.b
        self._x, self._z = x, z
        self._a = self.activation.fn(z) if activate else None
        return self._a if activate else z

    @property
    def logits(self):
        """z = x Wᵀ + b of the last forward pass (N, n_out): what a cost computes from
        where σ(z) has saturated to exactly 0 or 1."""
        return self._z

    def delta_from(self, grad_a):
        """δ = ∂C/∂a ⊙ σ'(z): BP2's elementwise half."""
        return grad_a * self.activation.prime(self._z, self._a)

    # ∂C/∂W = δᵀx is formed only when read: the optimiser's step can instead add −ηδᵀx to W
    # in one product (:meth:`descend`) and never hold it.
    _nabla_w = _factors = _backend = None

    @property
    def nabla_w(self):
        """∂C/∂W (n_out, n_in) of the last backward pass (formed from δ and x on first read)."""
        if self._nabla_w is None and self._factors is not None:
            delta, x = self._factors
            self._nabla_w, self._factors = delta.T @ x, None
        return self._nabla_w

    @nabla_w.setter
    def nabla_w(self, value):
        self._nabla_w, self._factors = value, None

    def descend(self, eta: float, decay: float = 1.0) -> bool:
        """W ← decay·W − η ∂C/∂W straight from the backward pass's δ and x, without forming
        ∂C/∂W (the ``weight_update`` kernel: one sgemm on the CPU). False, and nothing done,
        when ∂C/∂W was already formed (read or set since backward) or the kernel cannot take
        these arrays: the caller then updates W from ``nabla_w``. Biases are the caller's."""
        if self._factors is None or self._backend is None:
            return False
        delta, x = self._factors
        update = self._backend.kernel("weight_update")
        if not update.supports(self.w, delta, x):
            return False
        update(self.w, delta, x, eta, decay)
        self._factors = None
        return True

    def backward_delta(self, delta, need_grad_input: bool = True):
        self.nabla_b = delta.sum(axis=0)
        self._nabla_w, self._factors = None, (delta, self._x)
        if not need_grad_input:
            return None
        grad = delta @ self.w
        if self._mask is not None:
            grad *= self._mask
        return grad.reshape(self._in_shape)

    def backward(self, grad, need_grad_input: bool = True):
        return self.backward_delta(self.delta_from(grad), need_grad_input)

    @property
    def num_params(self) -> int:
        return self.n_out * self.n_in + self.n_out

    def config(self) -> dict:
        c = {"type": "FullyConnected", "n_in": self.n_in, "n_out": self.n_out,
             "activation": self.activation.name, "dropout": self.dropout}
        if self.dropout_mode != "inverted":
            c["dropout_mode"] = self.dropout_mode
        return c


class Softmax(FullyConnected):
    """A softmax output layer (network3's SoftmaxLayer): weights and biases start at zero.

    Paired with the log-likelihood cost, whose gradient the fused softmax-cross-entropy
    kernel computes from the logits ``self._z``.
    """

    kind = "softmax"

    def __init__(self, n_in: int, n_out: int, dropout: float = 0.0,
                 dropout_mode: str = "inverted"):
        super().__init__(n_in, n_out, "softmax", dropout, dropout_mode)

    def init_params(self, rng, init: str = "default", dtype=np.float32) -> None:
        _check_init(init)
        xp = rng.xp
        self.w = xp.zeros((self.n_out, self.n_in), dtype=dtype)
        self.b = xp.zeros((self.n_out,), dtype=dtype)

    def config(self) -> dict:
        c = super().config()
        c["type"] = "Softmax"
        del c["activation"]
        return c


class Flatten(Layer):
    """(N, C, H, W) -> (N, C·H·W)."""

    kind = "flatten"

    def build(self, input_shape, backend, rng, init="default", dtype=np.float32):
        return (int(np.prod(input_shape)),)

    def forward(self, x, train=False, rng=None):
        self._in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad, need_grad_input=True):
        return grad.reshape(self._in_shape) if need_grad_input else None

    def config(self) -> dict:
        return {"type": "Flatten"}


def _check_chw(layer, input_shape, channels) -> None:
    if len(input_shape) != 3 or input_shape[0] != channels:
        raise ConfigError(f"{layer!r} expects inputs of shape (C={channels}, H, W) per "
                          f"example; the layer below gives {tuple(input_shape)}")


def _conv_init(rng, init, f, c, k, fan_out, dtype):
    """Filters (F, C, K, K) ~ N(0, 1/fan_in) (``default``), N(0, 1) (``large``) or
    N(0, 1/fan_out) as network3 draws them; biases N(0, 1)."""
    _check_init(init)
    fan = {"default": c * k * k, "large": 1, "network3": fan_out}[init]
    w = rng.normal(0.0, 1.0 / math.sqrt(fan), (f, c, k, k), dtype=dtype)
    return w, rng.normal(0.0, 1.0, (f,), dtype=dtype)


class Conv2D(Layer):
    """a = σ(conv(x, W) + b) for x (N, C, H, W), W (F, C, K, K): stride and zero padding."""

    kind = "conv2d"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5,
                 stride: int = 1, padding: int = 0, activation="relu"):
        _positive("Conv2D", in_channels=in_channels, out_channels=out_channels,
                  kernel_size=kernel_size, stride=stride)
        if not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ConfigError(f"Conv2D needs padding >= 0; received {padding!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = int(kernel_size), int(stride), int(padding)
        self.activation = activations.get(activation)

    def build(self, input_shape, backend, rng, init="default", dtype=np.float32):
        _check_chw(self, input_shape, self.in_channels)
        _, h, w = input_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if oh < 1 or ow < 1:
            raise ConfigError(f"{self!r} cannot slide a {k}x{k} kernel over a {h}x{w} input "
                              f"with padding {p}")
        self.conv = backend.kernel("conv2d")
        self.w, self.b = _conv_init(rng, init, self.out_channels, self.in_channels, k,
                                    self.out_channels * k * k, dtype)
        return (self.out_channels, oh, ow)

    def forward(self, x, train=False, rng=None):
        z, self._cache = self.conv.forward(x, self.w, self.b, self.stride, self.padding)
        self._a = self.activation.fn(z)  # z is not kept: one activation-sized array less
        return self._a

    def backward(self, grad, need_grad_input=True):
        # σ'(z) from a alone, which every elementwise σ allows (relu: z > 0 exactly when a > 0)
        delta = grad * self.activation.prime(self._a, self._a)
        dx, self.nabla_w, self.nabla_b = self.conv.backward(delta, self._cache,
                                                            need_dx=need_grad_input)
        return dx

    def config(self) -> dict:
        return {"type": "Conv2D", "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding,
                "activation": self.activation.name}


class MaxPool(Layer):
    """Max-pooling over ``kernel``×``kernel`` windows every ``stride`` pixels (default kernel)."""

    kind = "max-pool"

    def __init__(self, kernel: int = 2, stride: int | None = None):
        _positive("MaxPool", kernel=kernel, stride=stride or kernel)
        self.kernel, self.stride = int(kernel), int(stride or kernel)

    def build(self, input_shape, backend, rng, init="default", dtype=np.float32):
        if len(input_shape) != 3:
            raise ConfigError(f"{self!r} expects inputs of shape (C, H, W) per example; the "
                              f"layer below gives {tuple(input_shape)}")
        c, h, w = input_shape
        if h < self.kernel or w < self.kernel:
            raise ConfigError(f"{self!r} cannot pool a {h}x{w} input")
        self.pool = backend.kernel("max_pool2d")
        k, s = self.kernel, self.stride
        return (c, (h - k) // s + 1, (w - k) // s + 1)

    def forward(self, x, train=False, rng=None):
        out, self._cache = self.pool.forward(x, self.kernel, self.stride)
        return out

    def backward(self, grad, need_grad_input=True):
        return self.pool.backward(grad, self._cache) if need_grad_input else None

    def config(self) -> dict:
        return {"type": "MaxPool", "kernel": self.kernel, "stride": self.stride}


class ConvPool(Layer):
    """network3's ConvPoolLayer: a valid convolution, max-pooling, then σ(pooled + b).

    Pooling before the bias and activation gives the same result as after (the bias is per
    channel and σ is increasing) and applies σ to 4× fewer values. The backend's
    ``conv_pool`` kernel does all four (on the CPU, fused: :mod:`gpunn.kernels.conv_numba`).
    """

    kind = "conv-pool"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5,
                 pool: int = 2, activation="sigmoid"):
        _positive("ConvPool", in_channels=in_channels, out_channels=out_channels,
                  kernel_size=kernel_size, pool=pool)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.pool_size = int(kernel_size), int(pool)
        self.activation = activations.get(activation)

    def build(self, input_shape, backend, rng, init="default", dtype=np.float32):
        _check_chw(self, input_shape, self.in_channels)
        _, h, w = input_shape
        k, p = self.kernel_size, self.pool_size
        oh, ow = (h - k + 1) // p, (w - k + 1) // p
        if oh < 1 or ow < 1:
            raise ConfigError(f"{self!r} cannot convolve and pool a {h}x{w} input")
        self.conv_pool = backend.kernel("conv_pool")
        self.w, self.b = _conv_init(rng, init, self.out_channels, self.in_channels, k,
                                    self.out_channels * k * k // (p * p), dtype)
        return (self.out_channels, oh, ow)

    def forward(self, x, train=False, rng=None):
        self._a, self._cache = self.conv_pool.forward(x, self.w, self.b, self.pool_size,
                                                      self.activation.name)
        return self._a

    def backward(self, grad, need_grad_input=True):
        dx, self.nabla_w, self.nabla_b = self.conv_pool.backward(grad, self._cache,
                                                                 need_dx=need_grad_input)
        return dx

    def config(self) -> dict:
        return {"type": "ConvPool", "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "pool": self.pool_size, "activation": self.activation.name}


class LRN(Layer):
    """KSH's local response normalisation across channels, for x of shape (N, C, H, W):

        b_c = a_c / (k + α Σ_{c' within size/2 of c} a_c'²)^β

    with KSH's k=2, size=5, α=1e-4, β=0.75. (PyTorch's ``LocalResponseNorm`` divides α by
    ``size``: ``LocalResponseNorm(5, 5e-4, 0.75, 2)`` is this layer.) No parameters.
    """

    kind = "lrn"

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        _positive("LRN", size=size)
        if alpha < 0 or beta < 0 or k <= 0:
            raise ConfigError(f"LRN needs alpha >= 0, beta >= 0 and k > 0; received "
                              f"alpha={alpha}, beta={beta}, k={k}")
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def build(self, input_shape, backend, rng, init="default", dtype=np.float32):
        if len(input_shape) != 3:
            raise ConfigError(f"{self!r} expects inputs of shape (C, H, W) per example; the "
                              f"layer below gives {tuple(input_shape)}")
        return tuple(input_shape)

    def _window_sum(self, v):
        """Σ over the ``size`` channels centred on each channel (zeros beyond the ends)."""
        half, c = self.size // 2, v.shape[1]
        out = v.copy()
        for d in range(1, half + 1):
            if d < c:
                out[:, d:] += v[:, :-d]
                out[:, :-d] += v[:, d:]
        return out

    def forward(self, x, train=False, rng=None):
        dt = x.dtype.type
        self._x = x
        self._s = self._window_sum(x * x)
        self._s *= dt(self.alpha)
        self._s += dt(self.k)
        self._scale = self._s ** dt(-self.beta)  # s^-β
        return x * self._scale

    def backward(self, grad, need_grad_input=True):
        if not need_grad_input:
            return None
        dt = grad.dtype.type
        # ∂b_i/∂a_j = δ_ij s_i^-β − 2αβ a_i a_j s_i^(-β-1) for j in i's window (symmetric)
        t = grad * self._x * self._scale / self._s
        return grad * self._scale - dt(2 * self.alpha * self.beta) * self._x * self._window_sum(t)

    def config(self) -> dict:
        return {"type": "LRN", "size": self.size, "alpha": self.alpha, "beta": self.beta,
                "k": self.k}


_TYPES = {cls.__name__: cls for cls in (FullyConnected, Softmax, Conv2D, MaxPool, ConvPool,
                                        Flatten, LRN)}


def from_config(config: dict) -> Layer:
    """The layer a :meth:`Layer.config` dict describes (parameters not drawn yet)."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in _TYPES:
        raise ConfigError(f"unknown layer type {kind!r}; known: {', '.join(_TYPES)}")
    try:
        return _TYPES[kind](**config)
    except TypeError as exc:
        raise ConfigError(f"layer {kind} cannot be built from {config}: {exc}") from exc
