"""max_pool2d, the NumPy reference: the oracle every other implementation is tested against.

Max-pooling of ``x (N, C, H, W)`` over ``kernel x kernel`` windows placed every ``stride``
pixels (no padding; a window never runs off the edge), giving ``(N, C, OH, OW)`` with
``OH = (H - kernel) // stride + 1``. ``stride`` defaults to ``kernel``: the book's 2x2 pooling;
``kernel=3, stride=2`` is AlexNet's overlapping pooling.

Backward routes each output's gradient to the argmax of its window (the first maximum in
row-major order when there are ties); where windows overlap, the routed gradients add.
Uses only ``xp`` operations, so it runs on CuPy arrays too.

Interface (shared by ``pool_numba`` and ``pool_cupy``)::

    out, cache = max_pool2d.forward(x, kernel=2, stride=None)
    dx = max_pool2d.backward(dout, cache)         # dout (N, C, OH, OW)
"""

from __future__ import annotations

from gpunn.backend import array_module
from gpunn.kernels import checks


def check_dout(dout, out_shape) -> None:
    """Raise unless ``dout`` has the shape of the forward output (shared by all backends)."""
    checks.dout("max_pool2d", "N, C, OH, OW", dout, out_shape)


class MaxPool2dReference:
    """max_pool2d in plain ``xp`` operations (NumPy or CuPy)."""

    backend = "numpy"

    def forward(self, x, kernel: int = 2, stride: int | None = None):
        """``x (N, C, H, W)`` -> ``(out (N, C, OH, OW), cache)``."""
        kernel, stride, oh, ow = checks.max_pool2d(x, kernel, stride)
        xp = array_module(x)
        offsets = [(i, j) for i in range(kernel) for j in range(kernel)]
        # (kernel*kernel, N, C, OH, OW): every candidate of every window, in row-major order.
        candidates = xp.stack([x[checks.window(i, j, stride, oh, ow)] for i, j in offsets])
        argmax = candidates.argmax(axis=0)  # the first maximum
        out = xp.take_along_axis(candidates, argmax[None], axis=0)[0]
        return out, (argmax, kernel, stride, x.shape, x.dtype)

    def backward(self, dout, cache):
        """``dout (N, C, OH, OW)`` -> ``dx (N, C, H, W)``."""
        argmax, kernel, stride, x_shape, dtype = cache
        check_dout(dout, argmax.shape)
        xp = array_module(dout)
        oh, ow = argmax.shape[2:]
        dx = xp.zeros(x_shape, dtype=dtype)
        for k in range(kernel * kernel):
            i, j = divmod(k, kernel)
            # One offset's strided positions are distinct, so += is exact here.
            dx[checks.window(i, j, stride, oh, ow)] += xp.where(argmax == k, dout, 0)
        return dx


max_pool2d = MaxPool2dReference()
