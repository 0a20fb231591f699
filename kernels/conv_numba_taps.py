"""conv2d's "taps" layout on the CPU: one row of cols per kernel tap, one column per pixel.

``colsT (C*KH*KW, N*OH*OW)``, so ``prodT (F, N*OH*OW) = w.reshape(F, -1) @ colsT`` holds each
output plane as one contiguous run. Each row is written OW values at a time (one contiguous
copy when stride is 1), where the "pixels" layout (:mod:`gpunn.kernels.conv_numba_pixels`)
copies runs of KW*C; with few input channels, such as a 3-channel image, this layout copies
faster. conv_pool's loops pool each plane of ``prodT`` directly. Same drivers and the same
order-independence of the thread count as the pixels layout.
"""

from __future__ import annotations

from numba import njit, prange

from gpunn.kernels.conv_numba_pixels import activate, prime


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
def im2col(x, kh, kw, stride, padding, oh, ow, cols):
    for n in range(x.shape[0]):
        _im2col_taps_one(x, n, kh, kw, stride, padding, oh, ow, cols)


@njit(cache=True, parallel=True)
def im2col_par(x, kh, kw, stride, padding, oh, ow, cols):
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
def col2im(dcols, kh, kw, stride, padding, oh, ow, dx):
    for n in range(dx.shape[0]):
        _col2im_taps_one(dcols, n, kh, kw, stride, padding, oh, ow, dx)


@njit(cache=True, parallel=True)
def col2im_par(dcols, kh, kw, stride, padding, oh, ow, dx):
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
def planes_out(prod, add, out):
    for n in range(out.shape[0]):
        _planes_out_one(prod, n, add, out)


@njit(cache=True, parallel=True)
def planes_out_par(prod, add, out):
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
def planes_in(dout, dprod, partial):
    for n in range(dout.shape[0]):
        _planes_in_one(dout, n, dprod, partial)


@njit(cache=True, parallel=True)
def planes_in_par(dout, dprod, partial):
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
                a[n, f, py, px] = activate(code, best + bf)
                argmax[n, f, py, px] = at


@njit(cache=True)
def pool_activate(prod, b, pool, oh, ow, code, a, argmax):
    for n in range(a.shape[0]):
        _pool_activate_taps_one(prod, n, b, pool, oh, ow, code, a, argmax)


@njit(cache=True, parallel=True)
def pool_activate_par(prod, b, pool, oh, ow, code, a, argmax):
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
                d = grad[n, f, py, px] * prime(code, a[n, f, py, px])
                plane[argmax[n, f, py, px]] += d
                t += d
        partial[n, f] = t


@njit(cache=True)
def unpool(grad, a, argmax, code, dprod, partial):
    for n in range(a.shape[0]):
        _unpool_taps_one(grad, a, argmax, n, code, dprod, partial)


@njit(cache=True, parallel=True)
def unpool_par(grad, a, argmax, code, dprod, partial):
    for n in prange(a.shape[0]):
        _unpool_taps_one(grad, a, argmax, n, code, dprod, partial)
