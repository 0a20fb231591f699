"""max_pool2d on the CPU: one Numba pass forward (max and argmax), one scatter backward.

Forward keeps, for every output, the flat index ``h*W + w`` of its window's first maximum;
backward adds each output's gradient at that index (adding, so overlapping windows work).
The book's 2x2 stride-2 pooling and KSH's overlapping 3x3 stride-2 pooling have unrolled
loops of their own; other windows take the general loop. Every loop runs over the
``(n, c)`` planes, on Numba's threads when it has several (see :mod:`gpunn.kernels.conv_numba`),
each plane the same way on any thread count. Same interface as :mod:`gpunn.kernels.pool`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpunn.kernels import checks
from gpunn.kernels.pool import check_dout
from gpunn.kernels.registry import run_loop


@njit(cache=True)
def _plane(x, out, argmax, p, kernel, stride):
    """Plane ``p`` of the flattened ``(N*C)`` planes: any window and stride."""
    w_ = x.shape[2]
    plane = x[p]
    for y in range(out.shape[1]):
        for xo in range(out.shape[2]):
            y0, x0 = y * stride, xo * stride
            best = plane[y0, x0]
            at = y0 * w_ + x0
            for i in range(kernel):
                for j in range(kernel):
                    v = plane[y0 + i, x0 + j]
                    if v > best:
                        best = v
                        at = (y0 + i) * w_ + x0 + j
            out[p, y, xo] = best
            argmax[p, y, xo] = at


@njit(cache=True)
def _plane_2x2(x, out, argmax, p, kernel, stride):
    w_ = x.shape[2]
    plane = x[p]
    for y in range(out.shape[1]):
        top, bottom = plane[2 * y], plane[2 * y + 1]
        for xo in range(out.shape[2]):
            x0 = 2 * xo
            best, at = top[x0], 2 * y * w_ + x0
            if top[x0 + 1] > best:
                best, at = top[x0 + 1], at + 1
            if bottom[x0] > best:
                best, at = bottom[x0], (2 * y + 1) * w_ + x0
            if bottom[x0 + 1] > best:
                best, at = bottom[x0 + 1], (2 * y + 1) * w_ + x0 + 1
            out[p, y, xo] = best
            argmax[p, y, xo] = at


@njit(cache=True)
def _plane_3x3s2(x, out, argmax, p, kernel, stride):
    """KSH's overlapping pooling: each output row reads three input rows, in row-major
    order with the first maximum kept, as the general loop does."""
    w_ = x.shape[2]
    plane = x[p]
    for y in range(out.shape[1]):
        r0, r1, r2 = plane[2 * y], plane[2 * y + 1], plane[2 * y + 2]
        base = 2 * y * w_
        for xo in range(out.shape[2]):
            x0 = 2 * xo
            best, at = r0[x0], base + x0
            for j in range(1, 3):
                if r0[x0 + j] > best:
                    best, at = r0[x0 + j], base + x0 + j
            for j in range(3):
                if r1[x0 + j] > best:
                    best, at = r1[x0 + j], base + w_ + x0 + j
            for j in range(3):
                if r2[x0 + j] > best:
                    best, at = r2[x0 + j], base + 2 * w_ + x0 + j
            out[p, y, xo] = best
            argmax[p, y, xo] = at


# One serial and one prange driver per plane body (Numba cannot take a function argument
# and still cache the compiled code, so each body gets its own pair).
@njit(cache=True)
def _forward(x, out, argmax, kernel, stride):
    for p in range(x.shape[0]):
        _plane(x, out, argmax, p, kernel, stride)


@njit(cache=True, parallel=True)
def _forward_par(x, out, argmax, kernel, stride):
    for p in prange(x.shape[0]):
        _plane(x, out, argmax, p, kernel, stride)


@njit(cache=True)
def _forward_2x2(x, out, argmax, kernel, stride):
    for p in range(x.shape[0]):
        _plane_2x2(x, out, argmax, p, kernel, stride)


@njit(cache=True, parallel=True)
def _forward_2x2_par(x, out, argmax, kernel, stride):
    for p in prange(x.shape[0]):
        _plane_2x2(x, out, argmax, p, kernel, stride)


@njit(cache=True)
def _forward_3x3s2(x, out, argmax, kernel, stride):
    for p in range(x.shape[0]):
        _plane_3x3s2(x, out, argmax, p, kernel, stride)


@njit(cache=True, parallel=True)
def _forward_3x3s2_par(x, out, argmax, kernel, stride):
    for p in prange(x.shape[0]):
        _plane_3x3s2(x, out, argmax, p, kernel, stride)


@njit(cache=True)
def _scatter(dout, argmax, dx, p):
    plane, g, at = dx[p].reshape(-1), dout[p].reshape(-1), argmax[p].reshape(-1)
    plane[:] = 0
    for k in range(g.size):
        plane[at[k]] += g[k]


@njit(cache=True)
def _backward(dout, argmax, dx):
    for p in range(dx.shape[0]):
        _scatter(dout, argmax, dx, p)


@njit(cache=True, parallel=True)
def _backward_par(dout, argmax, dx):
    for p in prange(dx.shape[0]):
        _scatter(dout, argmax, dx, p)


_FORWARD = {(2, 2): (_forward_2x2, _forward_2x2_par), (3, 2): (_forward_3x3s2, _forward_3x3s2_par)}


class MaxPool2dNumba:
    """max_pool2d with an argmax kept per output (float32 and float64)."""

    backend = "numba"

    def forward(self, x, kernel: int = 2, stride: int | None = None):
        """``x (N, C, H, W)`` -> ``(out (N, C, OH, OW), cache)``."""
        kernel, stride, oh, ow = checks.max_pool2d(x, kernel, stride)
        n, c, h, w = x.shape
        x = np.ascontiguousarray(x)
        shape = (n, c, oh, ow)
        out = np.empty(shape, dtype=x.dtype)
        argmax = np.empty(shape, dtype=np.int32)
        serial, parallel = _FORWARD.get((kernel, stride), (_forward, _forward_par))
        run_loop(serial, parallel, x.reshape(n * c, h, w), out.reshape(n * c, oh, ow),
                 argmax.reshape(n * c, oh, ow), kernel, stride)
        return out, (argmax, x.shape, x.dtype)

    def backward(self, dout, cache):
        """``dout (N, C, OH, OW)`` -> ``dx (N, C, H, W)``."""
        argmax, x_shape, dtype = cache
        check_dout(dout, argmax.shape)
        n, c, h, w = x_shape
        dx = np.empty(x_shape, dtype=dtype)
        planes = n * c
        dout = np.ascontiguousarray(dout, dtype=dtype).reshape(planes, *argmax.shape[2:])
        run_loop(_backward, _backward_par, dout, argmax.reshape(planes, *argmax.shape[2:]),
                 dx.reshape(planes, h, w))
        return dx


max_pool2d = MaxPool2dNumba()
