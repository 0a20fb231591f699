"""conv_pool, the reference: network3's ConvPoolLayer as the ops it is made of.

A valid stride-1 convolution of ``x (N, C, H, W)`` with ``w (F, C, KH, KW)``, max-pooling of
``pool``x``pool`` windows every ``pool`` pixels (a remainder row or column is dropped, as in
network3), then the bias and the activation: ``a = σ(maxpool(conv(x, w)) + b)``, of shape
``(N, F, PH, PW)`` with ``PH = (H - KH + 1) // pool``. Pooling before the bias and σ gives
the same result as after (the bias is per channel and σ is increasing) on 4x fewer values.

:class:`ConvPoolComposed` builds it from one backend's ``conv2d`` and ``max_pool2d``
kernels; on the NumPy references it is the oracle of the fused CPU kernel
(:mod:`gpunn.kernels.conv_numba`), and on CuPy's kernels it is the GPU's conv_pool (no
fused CUDA kernel yet). ``activation`` is a name from :mod:`gpunn.activations`.

Interface::

    a, cache = conv_pool.forward(x, w, b, pool=2, activation="relu")
    dx, dw, db = conv_pool.backward(grad, cache, need_dx=True)   # grad = ∂C/∂a, (N, F, PH, PW)
"""

from __future__ import annotations

from gpunn import activations
from gpunn.kernels import checks
from gpunn.kernels.registry import lookup


def check_grad(grad, out_shape) -> None:
    """Raise unless ``grad`` has the shape of the forward output (shared by all backends)."""
    checks.dout("conv_pool", "N, F, PH, PW", grad, out_shape)


class ConvPoolComposed:
    """conv_pool as ``backend``'s conv2d, then its max_pool2d, then bias and σ in ``xp``."""

    def __init__(self, backend: str):
        self.backend = backend

    def forward(self, x, w, b, pool: int = 2, activation="sigmoid"):
        """``x (N, C, H, W)``, ``w (F, C, KH, KW)``, ``b (F,)`` -> ``(a (N, F, PH, PW), cache)``."""
        checks.conv_pool(x, w, b, pool)
        act = activations.get(activation)
        conv, pool_op = lookup("conv2d", self.backend), lookup("max_pool2d", self.backend)
        out, conv_cache = conv.forward(x, w, b * 0, 1, 0)
        pooled, pool_cache = pool_op.forward(out, pool, pool)
        pooled += b[None, :, None, None]
        a = act.fn(pooled)
        return a, (conv_cache, pool_cache, pooled, a, act)

    def backward(self, grad, cache, need_dx: bool = True):
        """``grad (N, F, PH, PW)`` -> ``(dx (N, C, H, W) or None, dw, db (F,))``."""
        conv_cache, pool_cache, z, a, act = cache
        check_grad(grad, a.shape)
        delta = grad * act.prime(z, a)
        db = delta.sum(axis=(0, 2, 3))
        dconv = lookup("max_pool2d", self.backend).backward(delta, pool_cache)
        dx, dw, _ = lookup("conv2d", self.backend).backward(dconv, conv_cache, need_dx=need_dx)
        return dx, dw, db


conv_pool = ConvPoolComposed("numpy")
conv_pool_cupy = ConvPoolComposed("cupy")
