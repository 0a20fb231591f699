"""conv2d on the CPU: Numba im2col/col2im around one BLAS sgemm per product.

The convolution becomes matrix products (as in Caffe): ``im2col`` lays every input patch out
as a column of ``cols (C*KH*KW, N*OH*OW)``, so that

    forward:   out  = w (F, C*KH*KW) @ cols                       (+ b, back to N, F, OH, OW)
    backward:  dw   = dout (F, N*OH*OW) @ cols.T
               dcols = w.T @ dout, scattered back onto dx by ``col2im``

The products go to NumPy's BLAS from Python (Numba's own ``np.dot`` would need SciPy); the
loops around them are ``@njit(cache=True)``, compiled once per dtype and kept on disk.
Padding is handled inside the loops, so no padded copy of ``x`` is made. Single-threaded
Numba (``parallel=True`` costs more per call than these sizes gain); BLAS uses its threads.
Same interface as :mod:`gpunn.kernels.conv`.
"""

from __future__ import annotations

import numpy as np
from gpunn.kernels import checks
from gpunn.kernels.conv import check_dout
from numba import njit


@njit(cache=True)
def _valid(k, stride, padding, size, out_size):
    """The output range ``[lo, hi)`` whose input index ``o*stride + k - padding`` is inside."""
    lo = 0
    if padding > k:
        lo = (padding - k + stride - 1) // stride
    last = size - 1 + padding - k  # o*stride <= last
    hi = last // stride + 1 if last >= 0 else 0
    return lo, min(hi, out_size)


@njit(cache=True)
def _im2col(x_t, kh, kw, stride, padding, oh, ow, cols):
    """``cols[(c, i, j), (y, xo, n)] = x[n, c, y*stride + i - p, xo*stride + j - p]``, 0 outside."""
    c_, h_, w_, n_ = x_t.shape
    if padding > 0:
        cols[:] = 0
    for c in range(c_):
        for i in range(kh):
            y_lo, y_hi = _valid(i, stride, padding, h_, oh)
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                x_lo, x_hi = _valid(j, stride, padding, w_, ow)
                for y in range(y_lo, y_hi):
                    src = x_t[c, y * stride + i - padding].reshape(-1)
                    if stride == 1:  # one contiguous run of (x_hi - x_lo) * N values
                        d0, s0 = (y * ow + x_lo) * n_, (x_lo + j - padding) * n_
                        for k in range((x_hi - x_lo) * n_):
                            row[d0 + k] = src[s0 + k]
                    else:
                        for xo in range(x_lo, x_hi):
                            d0, s0 = (y * ow + xo) * n_, (xo * stride + j - padding) * n_
                            for k in range(n_):
                                row[d0 + k] = src[s0 + k]


@njit(cache=True)
def _col2im(dcols, kh, kw, stride, padding, oh, ow, dx_t):
    """The adjoint of ``_im2col``: add every column entry back onto its input pixel."""
    c_, h_, w_, n_ = dx_t.shape
    dx_t[:] = 0
    for c in range(c_):
        for i in range(kh):
            y_lo, y_hi = _valid(i, stride, padding, h_, oh)
            for j in range(kw):
                row = dcols[(c * kh + i) * kw + j]
                x_lo, x_hi = _valid(j, stride, padding, w_, ow)
                for y in range(y_lo, y_hi):
                    dst = dx_t[c, y * stride + i - padding].reshape(-1)
                    if stride == 1:
                        s0, d0 = (y * ow + x_lo) * n_, (x_lo + j - padding) * n_
                        for k in range((x_hi - x_lo) * n_):
                            dst[d0 + k] += row[s0 + k]
                    else:
                        for xo in range(x_lo, x_hi):
                            s0, d0 = (y * ow + xo) * n_, (xo * stride + j - padding) * n_
                            for k in range(n_):
                                dst[d0 + k] += row[s0 + k]


@njit(cache=True)
def _transpose(a, add, out):
    """``out[s, r] = a[r, s] + add[r]`` for ``a (R, S)``, in cache-sized tiles."""
    r_, s_ = a.shape
    tile = 32
    for r0 in range(0, r_, tile):
        r1 = min(r0 + tile, r_)
        for s0 in range(0, s_, tile):
            s1 = min(s0 + tile, s_)
            for s in range(s0, s1):
                for r in range(r0, r1):
                    out[s, r] = a[r, s] + add[r]


class Conv2dNumba:
    """conv2d as im2col + BLAS + col2im (float32 and float64)."""

    backend = "numba"

    def forward(self, x, w, b, stride: int = 1, padding: int = 0):
        """``x (N, C, H, W)``, ``w (F, C, KH, KW)``, ``b (F,)`` -> ``(out (N, F, OH, OW), cache)``.

        Computes the convolution with ``stride`` and zero ``padding`` on all four sides.
        """
        oh, ow = checks.conv2d(x, w, b, stride, padding)
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        x_t = np.empty((c, h, wd, n), dtype=x.dtype)
        _transpose(x.reshape(n, c * h * wd), np.zeros(n, x.dtype), x_t.reshape(c * h * wd, n))
        cols = np.empty((c * kh * kw, oh * ow * n), dtype=x.dtype)
        _im2col(x_t, kh, kw, stride, padding, oh, ow, cols)
        w2 = np.ascontiguousarray(w).reshape(f, c * kh * kw)
        out = np.empty((n, f, oh, ow), dtype=x.dtype)
        bias = np.repeat(b, oh * ow)  # one per row (f, y, xo) of the product
        _transpose((w2 @ cols).reshape(f * oh * ow, n), bias, out.reshape(n, f * oh * ow))
        return out, (cols, w2, w.shape, stride, padding, x.shape, out.shape)

    def backward(self, dout, cache, need_dx: bool = True):
        """``dout (N, F, OH, OW)`` -> ``(dx (N, C, H, W) or None, dw (F, C, KH, KW), db (F,))``."""
        cols, w2, w_shape, stride, padding, x_shape, out_shape = cache
        check_dout(dout, out_shape)
        n, f, oh, ow = out_shape
        dout = np.ascontiguousarray(dout, dtype=cols.dtype)
        db = dout.sum(axis=(0, 2, 3))
        dout2 = np.empty((f, oh * ow * n), dtype=cols.dtype)
        _transpose(dout.reshape(n, f * oh * ow), np.zeros(n, dout.dtype), dout2.reshape(-1, n))
        dw = (dout2 @ cols.T).reshape(w_shape)
        dx = None
        if need_dx:
            _, c, h, wd = x_shape
            dx_t = np.empty((c, h, wd, n), dtype=cols.dtype)
            _col2im(w2.T @ dout2, w_shape[2], w_shape[3], stride, padding, oh, ow, dx_t)
            dx = np.empty(x_shape, dtype=cols.dtype)
            zeros = np.zeros(c * h * wd, dtype=cols.dtype)
            _transpose(dx_t.reshape(c * h * wd, n), zeros, dx.reshape(n, c * h * wd))
        return dx, dw, db


conv2d = Conv2dNumba()
