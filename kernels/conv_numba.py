"""conv2d and conv_pool on the CPU: Numba im2col/col2im around one BLAS sgemm per product.

The convolution becomes matrix products (as in Caffe), laid out for OpenBLAS's fastest thin
shapes: ``im2col`` writes every output pixel's input patch as a row of
``cols (N*OH*OW, KH*KW*C)``, the patch read channels-last so that each kernel row ``i`` is one
contiguous run of ``KW*C`` values. With ``w2 = w`` as ``(F, KH*KW*C)`` and ``dout2 = dout`` as
``(N*OH*OW, F)``:

    forward:   out   = cols @ w2.T                   (+ b, back to N, F, OH, OW)
    backward:  dw    = dout2.T @ cols
               dcols = dout2 @ w2, added back onto dx by ``col2im``

At network3's conv2 (N=64) OpenBLAS runs the forward and dx products ~17% faster in these
layouts than with ``cols`` transposed (``w2 @ cols``), dw at par. The channels-last runs
(100 values there) are copied over views, which LLVM vectorises (indexed by offset into the
whole array, col2im's adds stayed scalar and took 3x as long).
The products go to NumPy's BLAS from Python (Numba's own ``np.dot`` would need SciPy); the
loops around them are ``@njit(cache=True)``, compiled once per dtype and kept on disk.
Padding is handled by a zero-bordered copy of one example at a time, never of the batch.

Scratch arrays are reused across calls (per thread, by shape; large ones are not kept), and
``cols`` goes back to that pool once backward has used it (a second backward on the same
cache rebuilds it from ``x``): fresh pages for each call cost more than the copies, e.g.
network3 conv2 at N=10 takes 1.6 ms fwd+bwd with fresh arrays and 0.9 ms with reused ones.
The loops run over examples on Numba's threads and the products on BLAS's, both as many as
:func:`gpunn.backend.set_num_threads` says; with one thread the serial drivers run, with no
parallel launch to pay for. Same interface as :mod:`gpunn.kernels.conv`.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange

from gpunn import activations
from gpunn.kernels import checks
from gpunn.kernels.conv import check_dout
from gpunn.kernels.conv_pool import ConvPoolComposed, check_grad

_KEEP_BYTES = 32 << 20  # scratch larger than this (evaluation batches) is not kept
_KEEP_COUNT = 16  # distinct scratch arrays kept per thread before the pool starts afresh
_pool = threading.local()


def _scratch(name: str, shape: tuple, dtype):
    """A reusable uninitialised array; the caller must not keep it past its own call."""
    buffers = _pool.__dict__.setdefault("buffers", {})
    key = (name, shape, dtype)
    buf = buffers.pop(key, None)
    if buf is None:
        buf = np.empty(shape, dtype)
    _give_back(key, buf)
    return buf


def _give_back(key, buf) -> None:
    buffers = _pool.__dict__.setdefault("buffers", {})
    if buf.nbytes <= _KEEP_BYTES:
        if len(buffers) >= _KEEP_COUNT:
            buffers.clear()
        buffers[key] = buf


# Each kernel below loops over examples (or batch rows) that touch disjoint memory; it comes
# as a serial driver and a ``prange`` driver around one per-example body, and ``_run`` takes
# the parallel one when Numba has more than one thread (``gpunn.backend.set_num_threads``).
# Both visit the same values in the same order per example, so results do not depend on
# the thread count; sums across examples go through per-example partials added in order.


def _run(serial, parallel, *args):
    """Call the ``prange`` driver when Numba may use several threads, else the serial one."""
    (parallel if numba.get_num_threads() > 1 else serial)(*args)


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
def _im2col(x, kh, kw, stride, padding, oh, ow, cols):
    """``cols[(n, y, xo), (i, j, c)] = x[n, c, y*stride + i - p, xo*stride + j - p]``, 0 outside."""
    n_, c_, h_, w_ = x.shape
    xp = np.zeros((h_ + 2 * padding, w_ + 2 * padding, c_), x.dtype)  # one example
    for n in range(n_):
        _im2col_one(x, n, kh, kw, stride, padding, oh, ow, cols, xp)


@njit(cache=True, parallel=True)
def _im2col_par(x, kh, kw, stride, padding, oh, ow, cols):
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
def _col2im(dcols, kh, kw, stride, padding, oh, ow, dx):
    n_, c_, h_, w_ = dx.shape
    dxp = np.empty((h_ + 2 * padding, w_ + 2 * padding, c_), dx.dtype)
    for n in range(n_):
        _col2im_one(dcols, n, kh, kw, stride, padding, oh, ow, dx, dxp)


@njit(cache=True, parallel=True)
def _col2im_par(dcols, kh, kw, stride, padding, oh, ow, dx):
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
def _transpose(a, add, out):
    for b in range(a.shape[0]):
        _transpose_one(a, b, add, out)


@njit(cache=True, parallel=True)
def _transpose_par(a, add, out):
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
def _transpose_sum(a, out, partial):
    for b in range(a.shape[0]):
        _transpose_sum_one(a, b, out, partial)


@njit(cache=True, parallel=True)
def _transpose_sum_par(a, out, partial):
    for b in prange(a.shape[0]):
        _transpose_sum_one(a, b, out, partial)


def _sum_rows(partial, dtype):
    """``partial (B, R)`` summed over ``B`` in order (float64), as ``dtype``."""
    return partial.sum(axis=0).astype(dtype)


# -- conv_pool: network3's conv + max-pool + bias + σ around the same products ---------------
# Forward reads the product (N, OH*OW, F) once and writes only the pooled activations and
# their argmax rows: no (N, F, OH, OW) output, no separate pool, bias or σ pass. Backward
# forms δ = ∂C/∂a ⊙ σ'(a) and its bias sum while it scatters δ to the argmax rows of the
# product's layout, which is where the weight and input products want it.
SIGMOID, TANH, RELU, LINEAR, STEP = 0, 1, 2, 3, 4
_CODES = {"sigmoid": SIGMOID, "tanh": TANH, "relu": RELU, "linear": LINEAR, "step": STEP}


@njit(cache=True)
def _activate(code, z):
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
def _prime(code, a):
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
                a[n, f, py, px] = _activate(code, best[f] + b[f])
                argmax[n, f, py, px] = at[f]


@njit(cache=True)
def _pool_activate(prod, b, pool, ow, code, a, argmax):
    for n in range(a.shape[0]):
        _pool_activate_one(prod, n, b, pool, ow, code, a, argmax)


@njit(cache=True, parallel=True)
def _pool_activate_par(prod, b, pool, ow, code, a, argmax):
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
                d = grad[n, f, py, px] * _prime(code, a[n, f, py, px])
                dout2[n, argmax[n, f, py, px], f] += d
                t += d
        partial[n, f] = t


@njit(cache=True)
def _unpool(grad, a, argmax, code, dout2, partial):
    for n in range(a.shape[0]):
        _unpool_one(grad, a, argmax, n, code, dout2, partial)


@njit(cache=True, parallel=True)
def _unpool_par(grad, a, argmax, code, dout2, partial):
    for n in prange(a.shape[0]):
        _unpool_one(grad, a, argmax, n, code, dout2, partial)


# -- the "taps" layout: one row of cols per kernel tap (c, i, j), one column per output pixel -----
# ``colsT (C*KH*KW, N*OH*OW)``, so ``prodT (F, N*OH*OW) = w.reshape(F, -1) @ colsT`` holds each
# output plane as one contiguous run. Each row is written OW values at a time (contiguous
# when stride is 1), where the "pixels" layout above copies runs of KW*C: for few input
# channels (network3's first layer has C=1, runs of 5) this layout copies far faster.
@njit(cache=True)
def _span(j, stride, padding, w_, ow):
    """The output columns ``[lo, hi)`` whose input column ``xo*stride + j - padding`` is inside."""
    lo = 0
    while lo < ow and lo * stride + j - padding < 0:
        lo += 1
    hi = ow
    while hi > lo and (hi - 1) * stride + j - padding >= w_:
        hi -= 1
    return lo, hi


@njit(cache=True)
def _im2col_taps_one(x, n, kh, kw, stride, padding, oh, ow, cols):
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    base = n * oh * ow
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                lo, hi = _span(j, stride, padding, w_, ow)
                for y in range(oh):
                    dst = row[base + y * ow : base + (y + 1) * ow]
                    yi = y * stride + i - padding
                    if yi < 0 or yi >= h_:
                        dst[:] = 0
                        continue
                    src = x[n, c, yi]
                    dst[:lo] = 0
                    dst[hi:] = 0
                    x0 = j - padding
                    if stride == 1:  # one contiguous run: a vectorised copy
                        dst[lo:hi] = src[lo + x0 : hi + x0]
                    else:
                        for xo in range(lo, hi):
                            dst[xo] = src[xo * stride + x0]


@njit(cache=True)
def _im2col_taps(x, kh, kw, stride, padding, oh, ow, cols):
    for n in range(x.shape[0]):
        _im2col_taps_one(x, n, kh, kw, stride, padding, oh, ow, cols)


@njit(cache=True, parallel=True)
def _im2col_taps_par(x, kh, kw, stride, padding, oh, ow, cols):
    for n in prange(x.shape[0]):
        _im2col_taps_one(x, n, kh, kw, stride, padding, oh, ow, cols)


@njit(cache=True)
def _col2im_taps_one(dcols, n, kh, kw, stride, padding, oh, ow, dx):
    c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
    base = n * oh * ow
    dx[n] = 0
    for c in range(c_):
        for i in range(kh):
            for j in range(kw):
                row = dcols[(c * kh + i) * kw + j]
                lo, hi = _span(j, stride, padding, w_, ow)
                x0 = j - padding
                for y in range(oh):
                    yi = y * stride + i - padding
                    if yi < 0 or yi >= h_:
                        continue
                    src, dst = row[base + y * ow : base + (y + 1) * ow], dx[n, c, yi]
                    if stride == 1:
                        dst[lo + x0 : hi + x0] += src[lo:hi]
                    else:
                        for xo in range(lo, hi):
                            dst[xo * stride + x0] += src[xo]


@njit(cache=True)
def _col2im_taps(dcols, kh, kw, stride, padding, oh, ow, dx):
    for n in range(dx.shape[0]):
        _col2im_taps_one(dcols, n, kh, kw, stride, padding, oh, ow, dx)


@njit(cache=True, parallel=True)
def _col2im_taps_par(dcols, kh, kw, stride, padding, oh, ow, dx):
    for n in prange(dx.shape[0]):
        _col2im_taps_one(dcols, n, kh, kw, stride, padding, oh, ow, dx)


@njit(cache=True)
def _planes_out_one(prod, n, add, out):
    """``out[n, f, :] = prod[f, n*P:(n+1)*P] + add[f]`` for ``out (N, F, P)``."""
    p_ = out.shape[2]
    for f in range(out.shape[1]):
        src, dst, v = prod[f, n * p_ : (n + 1) * p_], out[n, f], add[f]
        for k in range(p_):
            dst[k] = src[k] + v


@njit(cache=True)
def _planes_out(prod, add, out):
    for n in range(out.shape[0]):
        _planes_out_one(prod, n, add, out)


@njit(cache=True, parallel=True)
def _planes_out_par(prod, add, out):
    for n in prange(out.shape[0]):
        _planes_out_one(prod, n, add, out)


@njit(cache=True)
def _planes_in_one(dout, n, dprod, partial):
    """``dprod[f, n*P:(n+1)*P] = dout[n, f, :]``; ``partial[n, f]`` its sum (float64)."""
    p_ = dout.shape[2]
    for f in range(dout.shape[1]):
        src, dst = dout[n, f], dprod[f, n * p_ : (n + 1) * p_]
        t = 0.0
        for k in range(p_):
            dst[k] = src[k]
            t += src[k]
        partial[n, f] = t


@njit(cache=True)
def _planes_in(dout, dprod, partial):
    for n in range(dout.shape[0]):
        _planes_in_one(dout, n, dprod, partial)


@njit(cache=True, parallel=True)
def _planes_in_par(dout, dprod, partial):
    for n in prange(dout.shape[0]):
        _planes_in_one(dout, n, dprod, partial)


@njit(cache=True)
def _pool_activate_taps_one(prod, n, b, pool, oh, ow, code, a, argmax):
    """As ``_pool_activate_one`` from ``prodT (F, N*OH*OW)``: plane by plane; the argmax is
    the index ``y*OW + x`` within example ``n``'s plane."""
    ph, pw = a.shape[2], a.shape[3]
    base = n * oh * ow
    for f in range(a.shape[1]):
        plane = prod[f, base : base + oh * ow]
        bf = b[f]
        for py in range(ph):
            for px in range(pw):
                r0 = py * pool * ow + px * pool
                best, at = plane[r0], r0
                for i in range(pool):
                    for j in range(pool):
                        r = r0 + i * ow + j
                        if plane[r] > best:
                            best, at = plane[r], r
                a[n, f, py, px] = _activate(code, best + bf)
                argmax[n, f, py, px] = at


@njit(cache=True)
def _pool_activate_taps(prod, b, pool, oh, ow, code, a, argmax):
    for n in range(a.shape[0]):
        _pool_activate_taps_one(prod, n, b, pool, oh, ow, code, a, argmax)


@njit(cache=True, parallel=True)
def _pool_activate_taps_par(prod, b, pool, oh, ow, code, a, argmax):
    for n in prange(a.shape[0]):
        _pool_activate_taps_one(prod, n, b, pool, oh, ow, code, a, argmax)


@njit(cache=True)
def _unpool_taps_one(grad, a, argmax, n, code, dprod, partial):
    """As ``_unpool_one``, into ``dprodT (F, N*OH*OW)``: each plane zeroed, δ added at argmax."""
    p_ = dprod.shape[1] // a.shape[0]
    for f in range(a.shape[1]):
        plane = dprod[f, n * p_ : (n + 1) * p_]
        plane[:] = 0
        t = 0.0
        for py in range(a.shape[2]):
            for px in range(a.shape[3]):
                d = grad[n, f, py, px] * _prime(code, a[n, f, py, px])
                plane[argmax[n, f, py, px]] += d
                t += d
        partial[n, f] = t


@njit(cache=True)
def _unpool_taps(grad, a, argmax, code, dprod, partial):
    for n in range(a.shape[0]):
        _unpool_taps_one(grad, a, argmax, n, code, dprod, partial)


@njit(cache=True, parallel=True)
def _unpool_taps_par(grad, a, argmax, code, dprod, partial):
    for n in prange(a.shape[0]):
        _unpool_taps_one(grad, a, argmax, n, code, dprod, partial)


# -- the two layouts, behind one interface -----------------------------------------------------
class Pixels:
    """cols ``(N*OH*OW, KH*KW*C)``, one row per output pixel; ``prod (N, OH*OW, F)``."""

    name = "pixels"

    @staticmethod
    def forward(x, w, stride, padding, oh, ow):
        """im2col and the product; ``prod`` is scratch for this call. -> (cols, w2, prod)"""
        n, c, _, _ = x.shape
        f, _, kh, kw = w.shape
        cols = _take_cols((n * oh * ow, kh * kw * c), x.dtype)
        _run(_im2col, _im2col_par, x, kh, kw, stride, padding, oh, ow, cols)
        w2 = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(f, kh * kw * c)
        prod = _scratch("prod", (n, oh * ow, f), x.dtype)
        np.matmul(cols, w2.T, out=prod.reshape(n * oh * ow, f))
        return cols, w2, prod

    @staticmethod
    def im2col(x, kh, kw, stride, padding, oh, ow):
        cols = np.empty((x.shape[0] * oh * ow, kh * kw * x.shape[1]), x.dtype)
        _run(_im2col, _im2col_par, x, kh, kw, stride, padding, oh, ow, cols)
        return cols

    @staticmethod
    def dprod(n, f, oh, ow, dtype):
        return _scratch("dout2", (n, oh * ow, f), dtype)

    @staticmethod
    def products_back(dprod, cols, w2, w_shape):
        """``dw (F, C, KH, KW)`` and, if ``w2`` is given, ``dcols`` (scratch)."""
        f, c, kh, kw = w_shape
        dprod = dprod.reshape(-1, f)
        dw = (dprod.T @ cols).reshape(f, kh, kw, c).transpose(0, 3, 1, 2).copy()
        if w2 is None:
            return dw, None
        dcols = _scratch("dcols", cols.shape, cols.dtype)
        np.matmul(dprod, w2, out=dcols)
        return dw, dcols

    col2im = staticmethod(lambda *args: _run(_col2im, _col2im_par, *args))
    out = staticmethod(lambda prod, b, out: _run(
        _transpose, _transpose_par, prod, b, out.reshape(out.shape[0], out.shape[1], -1)))
    dout_in = staticmethod(lambda dout, dprod, partial: _run(
        _transpose_sum, _transpose_sum_par, dout.reshape(dout.shape[0], dout.shape[1], -1),
        dprod, partial))
    pool_activate = staticmethod(lambda prod, b, pool, oh, ow, code, a, argmax: _run(
        _pool_activate, _pool_activate_par, prod, b, pool, ow, code, a, argmax))
    unpool = staticmethod(lambda *args: _run(_unpool, _unpool_par, *args))


class Taps:
    """cols ``(C*KH*KW, N*OH*OW)``, one row per kernel tap; ``prod (F, N*OH*OW)``."""

    name = "taps"

    @staticmethod
    def forward(x, w, stride, padding, oh, ow):
        n, c, _, _ = x.shape
        f, _, kh, kw = w.shape
        cols = _take_cols((c * kh * kw, n * oh * ow), x.dtype)
        _run(_im2col_taps, _im2col_taps_par, x, kh, kw, stride, padding, oh, ow, cols)
        w2 = np.ascontiguousarray(w).reshape(f, c * kh * kw)
        prod = _scratch("prodT", (f, n * oh * ow), x.dtype)
        np.matmul(w2, cols, out=prod)
        return cols, w2, prod

    @staticmethod
    def im2col(x, kh, kw, stride, padding, oh, ow):
        cols = np.empty((kh * kw * x.shape[1], x.shape[0] * oh * ow), x.dtype)
        _run(_im2col_taps, _im2col_taps_par, x, kh, kw, stride, padding, oh, ow, cols)
        return cols

    @staticmethod
    def dprod(n, f, oh, ow, dtype):
        return _scratch("doutT", (f, n * oh * ow), dtype)

    @staticmethod
    def products_back(dprod, cols, w2, w_shape):
        dw = (dprod @ cols.T).reshape(w_shape)
        if w2 is None:
            return dw, None
        dcols = _scratch("dcolsT", cols.shape, cols.dtype)
        np.matmul(w2.T, dprod, out=dcols)
        return dw, dcols

    col2im = staticmethod(lambda *args: _run(_col2im_taps, _col2im_taps_par, *args))
    out = staticmethod(lambda prod, b, out: _run(
        _planes_out, _planes_out_par, prod, b, out.reshape(out.shape[0], out.shape[1], -1)))
    dout_in = staticmethod(lambda dout, dprod, partial: _run(
        _planes_in, _planes_in_par, dout.reshape(dout.shape[0], dout.shape[1], -1), dprod,
        partial))
    pool_activate = staticmethod(lambda *args: _run(
        _pool_activate_taps, _pool_activate_taps_par, *args))
    unpool = staticmethod(lambda *args: _run(_unpool_taps, _unpool_taps_par, *args))


LAYOUTS = {"pixels": Pixels, "taps": Taps}


def _backward_products(layout, dprod, held, x, w2, w_shape, stride, padding, oh, ow, need_dx):
    """``dx`` (or None) and ``dw`` from ``dprod`` in ``layout``; gives ``cols`` back."""
    _, _, kh, kw = w_shape
    cols = held[0]
    if cols is None:  # a second backward on this cache: cols went back to the pool
        cols = layout.im2col(x, kh, kw, stride, padding, oh, ow)
    dw, dcols = layout.products_back(dprod, cols, w2 if need_dx else None, w_shape)
    if held[0] is not None:
        held[0] = None
        _give_back(("cols", cols.shape, x.dtype), cols)
    dx = None
    if need_dx:
        dx = np.empty(x.shape, x.dtype)
        layout.col2im(dcols, kh, kw, stride, padding, oh, ow, dx)
    return dx, dw


class _Chooser:
    """The layout an op runs in: a fixed one, or the faster one measured per shape."""

    def __init__(self, layout: str | None):
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)} or None; "
                             f"received {layout!r}")
        self.layout = layout

    def _pick(self, key: str, make_run):
        if self.layout is not None:
            return LAYOUTS[self.layout]
        key = f"{key} | {numba.get_num_threads()} threads"
        layout = _CHOSEN.get(key)
        if layout is None:
            from gpunn.kernels import choice

            name = choice.choose(key, {name: make_run(name) for name in LAYOUTS})
            layout = _CHOSEN[key] = LAYOUTS[name]
            _pool.__dict__.pop("buffers", None)  # the loser's scratch would stay resident
        return layout


_CHOSEN: dict[str, type] = {}  # key -> layout, for this process


def _random_like(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class Conv2dNumba(_Chooser):
    """conv2d as im2col + BLAS + col2im (float32 and float64), in either layout (``None``:
    the faster for each shape, measured once: :mod:`gpunn.kernels.choice`)."""

    backend = "numba"

    def __init__(self, layout: str | None = None):
        super().__init__(layout)

    def layout_for(self, x_shape, w_shape, stride, padding, dtype):
        """The layout conv2d runs in for these arguments (measured on first use)."""
        def make_run(name):
            kernel = Conv2dNumba(name)
            x, w = _random_like(x_shape, dtype, 0), _random_like(w_shape, dtype, 1)
            b = np.zeros(w_shape[0], dtype)

            def run():
                out, cache = kernel.forward(x, w, b, stride, padding)
                kernel.backward(out, cache)
            return run

        return self._pick(f"conv2d {tuple(x_shape)} {tuple(w_shape)} s{stride} p{padding} "
                          f"{np.dtype(dtype).name}", make_run)

    def forward(self, x, w, b, stride: int = 1, padding: int = 0):
        """``x (N, C, H, W)``, ``w (F, C, KH, KW)``, ``b (F,)`` -> ``(out (N, F, OH, OW), cache)``.

        Computes the convolution with ``stride`` and zero ``padding`` on all four sides.
        """
        oh, ow = checks.conv2d(x, w, b, stride, padding)
        layout = self.layout_for(x.shape, w.shape, stride, padding, x.dtype)
        x = np.ascontiguousarray(x)
        cols, w2, prod = layout.forward(x, w, stride, padding, oh, ow)
        out = np.empty((x.shape[0], w.shape[0], oh, ow), dtype=x.dtype)
        layout.out(prod, np.ascontiguousarray(b), out)
        return out, (layout, x, [cols], w2, w.shape, stride, padding, out.shape)

    def backward(self, dout, cache, need_dx: bool = True):
        """``dout (N, F, OH, OW)`` -> ``(dx (N, C, H, W) or None, dw (F, C, KH, KW), db (F,))``."""
        layout, x, held, w2, w_shape, stride, padding, out_shape = cache
        check_dout(dout, out_shape)
        n, f, oh, ow = out_shape
        dtype = x.dtype
        dprod = layout.dprod(n, f, oh, ow, dtype)
        partial = np.empty((n, f))
        layout.dout_in(np.ascontiguousarray(dout, dtype=dtype), dprod, partial)
        dx, dw = _backward_products(layout, dprod, held, x, w2, w_shape, stride, padding,
                                    oh, ow, need_dx)
        return dx, dw, _sum_rows(partial, dtype)


class ConvPoolNumba(_Chooser):
    """conv_pool fused around the conv2d products, for σ in sigmoid, tanh, relu, linear and
    step (float32 and float64), in either layout (``None``: the faster, measured per shape);
    any other activation runs as the composed ops."""

    backend = "numba"

    def __init__(self, layout: str | None = None):
        super().__init__(layout)
        self._composed = ConvPoolComposed("numba")

    def fused(self, activation) -> bool:
        """Whether ``activation`` runs fused (else as conv2d, max_pool2d, bias, σ)."""
        return activations.get(activation).name in _CODES

    def layout_for(self, x_shape, w_shape, pool, activation, dtype):
        def make_run(name):
            kernel = ConvPoolNumba(name)
            x, w = _random_like(x_shape, dtype, 0), _random_like(w_shape, dtype, 1)
            b = np.zeros(w_shape[0], dtype)

            def run():
                a, cache = kernel.forward(x, w, b, pool, activation)
                kernel.backward(a, cache)
            return run

        return self._pick(f"conv_pool {tuple(x_shape)} {tuple(w_shape)} pool{pool} "
                          f"{np.dtype(dtype).name}", make_run)

    def forward(self, x, w, b, pool: int = 2, activation="sigmoid"):
        """``x (N, C, H, W)``, ``w (F, C, KH, KW)``, ``b (F,)`` -> ``(a (N, F, PH, PW), cache)``."""
        if not self.fused(activation):
            a, cache = self._composed.forward(x, w, b, pool, activation)
            return a, ("composed", cache)
        oh, ow, ph, pw = checks.conv_pool(x, w, b, pool)
        name = activations.get(activation).name
        layout = self.layout_for(x.shape, w.shape, int(pool), name, x.dtype)
        x = np.ascontiguousarray(x)
        cols, w2, prod = layout.forward(x, w, 1, 0, oh, ow)
        shape = (x.shape[0], w.shape[0], ph, pw)
        a = np.empty(shape, x.dtype)
        argmax = np.empty(shape, np.int32)
        code = _CODES[name]
        layout.pool_activate(prod, np.ascontiguousarray(b), int(pool), oh, ow, code, a, argmax)
        return a, (layout, x, [cols], w2, w.shape, a, argmax, code, oh, ow)

    def backward(self, grad, cache, need_dx: bool = True):
        """``grad (N, F, PH, PW)`` = ∂C/∂a -> ``(dx (N, C, H, W) or None, dw, db (F,))``."""
        if cache[0] == "composed":
            return self._composed.backward(grad, cache[1], need_dx)
        layout, x, held, w2, w_shape, a, argmax, code, oh, ow = cache
        check_grad(grad, a.shape)
        n, f = a.shape[:2]
        dtype = x.dtype
        dprod = layout.dprod(n, f, oh, ow, dtype)
        partial = np.empty((n, f))
        layout.unpool(np.ascontiguousarray(grad, dtype=dtype), a, argmax, code, dprod, partial)
        dx, dw = _backward_products(layout, dprod, held, x, w2, w_shape, 1, 0, oh, ow, need_dx)
        return dx, dw, _sum_rows(partial, dtype)


def _take_cols(shape: tuple, dtype):
    """``cols`` for a forward pass: from the pool if backward gave one back, else new."""
    buffers = _pool.__dict__.setdefault("buffers", {})
    buf = buffers.pop(("cols", shape, dtype), None)
    return np.empty(shape, dtype) if buf is None else buf


conv2d = Conv2dNumba()
conv_pool = ConvPoolNumba()
