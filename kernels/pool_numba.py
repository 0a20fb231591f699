"""max_pool2d on the CPU: one Numba pass forward (max and argmax), one scatter backward.

Forward keeps, for every output, the flat index ``h*W + w`` of its window's first maximum;
backward adds each output's gradient at that index (adding, so overlapping windows work).
The 2x2 stride-2 case, the book's, has its own unrolled loop. Same interface as
:mod:`gpunn.kernels.pool`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gpunn.kernels import checks
from gpunn.kernels.pool import check_dout


@njit(cache=True)
def _forward(x, kernel, stride, out, argmax):
    n_, c_, oh, ow = out.shape
    w_ = x.shape[3]
    for n in range(n_):
        for c in range(c_):
            plane = x[n, c]
            for y in range(oh):
                for xo in range(ow):
                    y0, x0 = y * stride, xo * stride
                    best = plane[y0, x0]
                    at = y0 * w_ + x0
                    for i in range(kernel):
                        for j in range(kernel):
                            v = plane[y0 + i, x0 + j]
                            if v > best:
                                best = v
                                at = (y0 + i) * w_ + x0 + j
                    out[n, c, y, xo] = best
                    argmax[n, c, y, xo] = at


@njit(cache=True)
def _forward_2x2(x, out, argmax):
    n_, c_, oh, ow = out.shape
    w_ = x.shape[3]
    for n in range(n_):
        for c in range(c_):
            plane = x[n, c]
            for y in range(oh):
                top, bottom = plane[2 * y], plane[2 * y + 1]
                for xo in range(ow):
                    x0 = 2 * xo
                    best, at = top[x0], 2 * y * w_ + x0
                    if top[x0 + 1] > best:
                        best, at = top[x0 + 1], at + 1
                    if bottom[x0] > best:
                        best, at = bottom[x0], (2 * y + 1) * w_ + x0
                    if bottom[x0 + 1] > best:
                        best, at = bottom[x0 + 1], (2 * y + 1) * w_ + x0 + 1
                    out[n, c, y, xo] = best
                    argmax[n, c, y, xo] = at


@njit(cache=True)
def _backward(dout, argmax, dx):
    n_, c_, oh, ow = dout.shape
    dx[:] = 0
    for n in range(n_):
        for c in range(c_):
            plane = dx[n, c].reshape(-1)
            for y in range(oh):
                for xo in range(ow):
                    plane[argmax[n, c, y, xo]] += dout[n, c, y, xo]


class MaxPool2dNumba:
    """max_pool2d with an argmax kept per output (float32 and float64)."""

    backend = "numba"

    def forward(self, x, kernel: int = 2, stride: int | None = None):
        """``x (N, C, H, W)`` -> ``(out (N, C, OH, OW), cache)``."""
        kernel, stride, oh, ow = checks.max_pool2d(x, kernel, stride)
        x = np.ascontiguousarray(x)
        shape = (x.shape[0], x.shape[1], oh, ow)
        out = np.empty(shape, dtype=x.dtype)
        argmax = np.empty(shape, dtype=np.int32)
        if kernel == 2 and stride == 2:
            _forward_2x2(x, out, argmax)
        else:
            _forward(x, kernel, stride, out, argmax)
        return out, (argmax, x.shape, x.dtype)

    def backward(self, dout, cache):
        """``dout (N, C, OH, OW)`` -> ``dx (N, C, H, W)``."""
        argmax, x_shape, dtype = cache
        check_dout(dout, argmax.shape)
        dx = np.empty(x_shape, dtype=dtype)
        _backward(np.ascontiguousarray(dout, dtype=dtype), argmax, dx)
        return dx


max_pool2d = MaxPool2dNumba()
