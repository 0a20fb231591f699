"""conv2d's "pixels" layout on the CPU: the Numba loops around its products, and conv_pool's.

``cols (N*OH*OW, KH*KW*C)`` holds one row per output pixel, its input patch read channels-last
so that each kernel row ``i`` is one contiguous run of ``KW*C`` values (copied over views,
which LLVM vectorises); the product is ``prod (N, OH*OW, F) = cols @ w2ᵀ``. conv_pool's loops
read that product once: forward pools it, adds the bias and applies σ, keeping each window's
argmax row; backward forms δ = ∂C/∂a ⊙ σ'(a) and its bias sums while it scatters δ back to
those rows. :mod:`gpunn.kernels.conv_numba` runs them; it explains the drivers.

Each loop comes as a serial driver and a ``prange`` driver around one per-example body; both
visit the same values in the same order per example, so results do not depend on the thread
count, and sums across examples go through per-example partials added in order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _im2col_one(x, n, kh, kw, stride, padding, oh, ow, cols, xp):
    """Example ``n``'s rows of ``cols``; ``xp`` is its zero-bordered channels-last scratch."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    wp = w_ + 2 * padding
    flat = xp.reshape(-1)
    run = kw * c_
    for c in range(c_):
        for y in range(h_):
            for xi in range(w_):
                xp[y + padding, xi + padding, c] = x[n, c, y, xi]
    for y in range(oh):
        for xo in range(ow):
            row = cols[(n * oh + y) * ow + xo]
            for i in range(kh):
                s0 = ((y * stride + i) * wp + xo * stride) * c_
                src, dst = flat[s0 : s0 + run], row[i * run : (i + 1) * run]
                for k in range(run):  # views, so that LLVM vectorises the loop
                    dst[k] = src[k]


@njit(cache=True)
def im2col(x, kh, kw, stride, padding, oh, ow, cols):
    """``cols[(n, y, xo), (i, j, c)] = x[n, c, y*stride + i - p, xo*stride + j - p]``, 0 outside."""
    n_, c_, h_, w_ = x.shape
    xp = np.zeros((h_ + 2 * padding, w_ + 2 * padding, c_), x.dtype)  # one example
    for n in range(n_):
        _im2col_one(x, n, kh, kw, stride, padding, oh, ow, cols, xp)


@njit(cache=True, parallel=True)
def im2col_par(x, kh, kw, stride, padding, oh, ow, cols):
    n_, c_, h_, w_ = x.shape
    for n in prange(n_):
        xp = np.zeros((h_ + 2 * padding, w_ + 2 * padding, c_), x.dtype)
        _im2col_one(x, n, kh, kw, stride, padding, oh, ow, cols, xp)


@njit(cache=True)
def _col2im_one(dcols, n, kh, kw, stride, padding, oh, ow, dx, dxp):
    """The adjoint of ``_im2col_one``: add example ``n``'s rows back onto its pixels of ``dx``."""
    c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
    wp = w_ + 2 * padding
    flat = dxp.reshape(-1)
    run = kw * c_
    dxp[:] = 0
    for y in range(oh):
        for xo in range(ow):
            row = dcols[(n * oh + y) * ow + xo]
            for i in range(kh):
                d0 = ((y * stride + i) * wp + xo * stride) * c_
                src, dst = row[i * run : (i + 1) * run], flat[d0 : d0 + run]
                for k in range(run):  # views, so that LLVM vectorises the loop
                    dst[k] += src[k]
    for c in range(c_):
        for y in range(h_):
            for xi in range(w_):
                dx[n, c, y, xi] = dxp[y + padding, xi + padding, c]


@njit(cache=True)
def col2im(dcols, kh, kw, stride, padding, oh, ow, dx):
    n_, c_, h_, w_ = dx.shape
    dxp = np.empty((h_ + 2 * padding, w_ + 2 * padding, c_), dx.dtype)
    for n in range(n_):
        _col2im_one(dcols, n, kh, kw, stride, padding, oh, ow, dx, dxp)


@njit(cache=True, parallel=True)
def col2im_par(dcols, kh, kw, stride, padding, oh, ow, dx):
    n_, c_, h_, w_ = dx.shape
    for n in prange(n_):
        dxp = np.empty((h_ + 2 * padding, w_ + 2 * padding, c_), dx.dtype)
        _col2im_one(dcols, n, kh, kw, stride, padding, oh, ow, dx, dxp)


@njit(cache=True)
def _transpose_one(a, b, add, out):
    """``out[b, s, r] = a[b, r, s] + add[s]`` for ``a (B, R, S)``: contiguous writes."""
    ab, ob = a[b], out[b]
    for s in range(a.shape[2]):
        row, v = ob[s], add[s]
        for r in range(a.shape[1]):
            row[r] = ab[r, s] + v


@njit(cache=True)
def transpose(a, add, out):
    for b in range(a.shape[0]):
        _transpose_one(a, b, add, out)


@njit(cache=True, parallel=True)
def transpose_par(a, add, out):
    for b in prange(a.shape[0]):
        _transpose_one(a, b, add, out)


@njit(cache=True)
def _transpose_sum_one(a, b, out, partial):
    """``out[b, s, r] = a[b, r, s]`` and ``partial[b, r] = sum_s a[b, r, s]`` (in float64)."""
    for r in range(a.shape[1]):
        t = 0.0
        for s in range(a.shape[2]):
            v = a[b, r, s]
            out[b, s, r] = v
            t += v
        partial[b, r] = t


@njit(cache=True)
def transpose_sum(a, out, partial):
    for b in range(a.shape[0]):
        _transpose_sum_one(a, b, out, partial)


@njit(cache=True, parallel=True)
def transpose_sum_par(a, out, partial):
    for b in prange(a.shape[0]):
        _transpose_sum_one(a, b, out, partial)


# Forward reads the product (N, OH*OW, F) once and writes only the pooled activations and
# their argmax rows: no (N, F, OH, OW) output, no separate pool, bias or σ pass. Backward
# forms δ = ∂C/∂a ⊙ σ'(a) and its bias sum while it scatters δ to the argmax rows of the
# product's layout, which is where the weight and input products want it.
SIGMOID, TANH, RELU, LINEAR, STEP = 0, 1, 2, 3, 4
CODES = {"sigmoid": SIGMOID, "tanh": TANH, "relu": RELU, "linear": LINEAR, "step": STEP}


@njit(cache=True)
def activate(code, z):
    if code == SIGMOID:  # e^-z may overflow to inf, giving 0, never NaN
        return 1.0 / (1.0 + np.exp(-z))
    if code == TANH:
        return np.tanh(z)
    if code == RELU:
        return z if z > 0 else z * 0
    if code == STEP:
        return 1.0 if z > 0 else 0.0
    return z


@njit(cache=True)
def prime(code, a):
    """σ'(z) from a = σ(z); for relu z > 0 exactly when a > 0; the step's is 0."""
    if code == SIGMOID:
        return a * (1.0 - a)
    if code == TANH:
        return 1.0 - a * a
    if code == RELU:
        return 1.0 if a > 0 else 0.0
    if code == STEP:
        return 0.0
    return 1.0


@njit(cache=True)
def _pool_activate_one(prod, n, b, pool, ow, code, a, argmax):
    """Example ``n``: ``a = σ(max over each window of prod + b)``, each window's first
    maximum (row-major) kept as its row of ``prod[n]`` in ``argmax``."""
    f_, ph, pw = a.shape[1], a.shape[2], a.shape[3]
    rows = prod[n]
    best = np.empty(f_, prod.dtype)
    at = np.empty(f_, np.int32)
    for py in range(ph):
        for px in range(pw):
            r0 = py * pool * ow + px * pool
            first = rows[r0]
            for f in range(f_):
                best[f] = first[f]
                at[f] = r0
            for i in range(pool):
                for j in range(pool):
                    r = r0 + i * ow + j
                    if r == r0:
                        continue
                    row = rows[r]
                    for f in range(f_):
                        if row[f] > best[f]:
                            best[f] = row[f]
                            at[f] = r
            for f in range(f_):
                a[n, f, py, px] = activate(code, best[f] + b[f])
                argmax[n, f, py, px] = at[f]


@njit(cache=True)
def pool_activate(prod, b, pool, ow, code, a, argmax):
    for n in range(a.shape[0]):
        _pool_activate_one(prod, n, b, pool, ow, code, a, argmax)


@njit(cache=True, parallel=True)
def pool_activate_par(prod, b, pool, ow, code, a, argmax):
    for n in prange(a.shape[0]):
        _pool_activate_one(prod, n, b, pool, ow, code, a, argmax)


@njit(cache=True)
def _unpool_one(grad, a, argmax, n, code, dout2, partial):
    """Example ``n``: ``dout2[n]`` zeroed, then δ = grad ⊙ σ'(a) added at each argmax row;
    ``partial[n, f]`` = Σ δ over the pooled pixels of filter ``f`` (in float64)."""
    dout2[n] = 0
    for f in range(a.shape[1]):
        t = 0.0
        for py in range(a.shape[2]):
            for px in range(a.shape[3]):
                d = grad[n, f, py, px] * prime(code, a[n, f, py, px])
                dout2[n, argmax[n, f, py, px], f] += d
                t += d
        partial[n, f] = t


@njit(cache=True)
def unpool(grad, a, argmax, code, dout2, partial):
    for n in range(a.shape[0]):
        _unpool_one(grad, a, argmax, n, code, dout2, partial)


@njit(cache=True, parallel=True)
def unpool_par(grad, a, argmax, code, dout2, partial):
    for n in prange(a.shape[0]):
        _unpool_one(grad, a, argmax, n, code, dout2, partial)
