"""conv2d and conv_pool on the CPU: Numba loops around BLAS products, in one of two layouts.

The convolution becomes matrix products (as in Caffe): ``im2col`` copies every input patch
into a matrix ``cols``, one sgemm makes the output, and backward takes two more (``dw`` and
the ``dcols`` that ``col2im`` adds back onto ``dx``). Two layouts of ``cols``, each with its
own loops:

- ``pixels`` (:mod:`gpunn.kernels.conv_numba_pixels`): ``cols (N*OH*OW, KH*KW*C)``, one row
  per output pixel, channels-last patches: ``prod = cols @ w2ᵀ``. OpenBLAS's fastest layout
  for most shapes here (at network3's conv2, ~17% faster than the other for the forward and
  dx products).
- ``taps`` (:mod:`gpunn.kernels.conv_numba_taps`): ``cols (C*KH*KW, N*OH*OW)``, one row per
  kernel tap: ``prod = w2 @ cols``. Its copies are runs of OW values, which wins where
  channels are few (3→64 5×5 on 64×64, ~25%).

Which one a shape runs in is measured once per shape, dtype and thread count and kept on disk
(:mod:`gpunn.kernels.choice`); ``Conv2dNumba("pixels")`` fixes it (the tests test both).

``conv_pool`` is network3's conv + max-pool + bias + σ fused around the same products: forward
reads the product once and writes only the pooled activations and their argmax; backward
forms δ and the bias gradient while it scatters δ back into the product's layout. No
``(N, F, OH, OW)`` array is made.

The products go to NumPy's BLAS from Python (Numba's own ``np.dot`` would need SciPy); the
loops are ``@njit(cache=True)``, compiled once per dtype and kept on disk. The loops run over
examples on Numba's threads and the products on BLAS's, both as many as
:func:`gpunn.backend.set_num_threads` says; with one thread the serial drivers run, with no
parallel launch to pay for. Scratch arrays are reused across calls (per thread, by shape;
large ones are not kept), and ``cols`` goes back to that pool once backward has used it (a
second backward on the same cache rebuilds it from ``x``): fresh pages for each call cost more
than the copies (network3 conv2 at N=10: 1.6 ms fwd+bwd with fresh arrays, 0.9 ms reused).
Same interface as :mod:`gpunn.kernels.conv` and :mod:`gpunn.kernels.conv_pool`.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from gpunn import activations
from gpunn.errors import ConfigError
from gpunn.kernels import checks
from gpunn.kernels import conv_numba_pixels as pixels
from gpunn.kernels import conv_numba_taps as taps
from gpunn.kernels.conv import check_dout
from gpunn.kernels.conv_pool import ConvPoolComposed, check_grad
from gpunn.kernels.registry import run_loop as _run

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


def _sum_rows(partial, dtype):
    """``partial (B, R)`` summed over ``B`` in order (float64), as ``dtype``."""
    return partial.sum(axis=0).astype(dtype)


class Pixels:
    """cols ``(N*OH*OW, KH*KW*C)``, one row per output pixel; ``prod (N, OH*OW, F)``."""

    name = "pixels"

    @staticmethod
    def forward(x, w, stride, padding, oh, ow):
        """im2col and the product; ``prod`` is scratch for this call. -> (cols, w2, prod)"""
        n, c, _, _ = x.shape
        f, _, kh, kw = w.shape
        cols = _take_cols((n * oh * ow, kh * kw * c), x.dtype)
        _run(pixels.im2col, pixels.im2col_par, x, kh, kw, stride, padding, oh, ow, cols)
        w2 = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(f, kh * kw * c)
        prod = _scratch("prod", (n, oh * ow, f), x.dtype)
        np.matmul(cols, w2.T, out=prod.reshape(n * oh * ow, f))
        return cols, w2, prod

    @staticmethod
    def im2col(x, kh, kw, stride, padding, oh, ow):
        cols = np.empty((x.shape[0] * oh * ow, kh * kw * x.shape[1]), x.dtype)
        _run(pixels.im2col, pixels.im2col_par, x, kh, kw, stride, padding, oh, ow, cols)
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

    @staticmethod
    def col2im(dcols, kh, kw, stride, padding, oh, ow, dx):
        _run(pixels.col2im, pixels.col2im_par, dcols, kh, kw, stride, padding, oh, ow, dx)

    @staticmethod
    def out(prod, b, out):
        """``out (N, F, OH, OW)`` from ``prod`` and the bias."""
        n, f = out.shape[:2]
        _run(pixels.transpose, pixels.transpose_par, prod, b, out.reshape(n, f, -1))

    @staticmethod
    def dout_in(dout, dprod, partial):
        """``dprod`` from ``dout (N, F, OH, OW)``, and the bias gradient's partial sums."""
        n, f = dout.shape[:2]
        _run(pixels.transpose_sum, pixels.transpose_sum_par, dout.reshape(n, f, -1), dprod,
             partial)

    @staticmethod
    def pool_activate(prod, b, pool, oh, ow, code, a, argmax):
        _run(pixels.pool_activate, pixels.pool_activate_par, prod, b, pool, ow, code, a, argmax)

    @staticmethod
    def unpool(grad, a, argmax, code, dprod, partial):
        _run(pixels.unpool, pixels.unpool_par, grad, a, argmax, code, dprod, partial)


class Taps:
    """cols ``(C*KH*KW, N*OH*OW)``, one row per kernel tap; ``prod (F, N*OH*OW)``."""

    name = "taps"

    @staticmethod
    def forward(x, w, stride, padding, oh, ow):
        n, c, _, _ = x.shape
        f, _, kh, kw = w.shape
        cols = _take_cols((c * kh * kw, n * oh * ow), x.dtype)
        _run(taps.im2col, taps.im2col_par, x, kh, kw, stride, padding, oh, ow, cols)
        w2 = np.ascontiguousarray(w).reshape(f, c * kh * kw)
        prod = _scratch("prodT", (f, n * oh * ow), x.dtype)
        np.matmul(w2, cols, out=prod)
        return cols, w2, prod

    @staticmethod
    def im2col(x, kh, kw, stride, padding, oh, ow):
        cols = np.empty((kh * kw * x.shape[1], x.shape[0] * oh * ow), x.dtype)
        _run(taps.im2col, taps.im2col_par, x, kh, kw, stride, padding, oh, ow, cols)
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

    @staticmethod
    def col2im(dcols, kh, kw, stride, padding, oh, ow, dx):
        _run(taps.col2im, taps.col2im_par, dcols, kh, kw, stride, padding, oh, ow, dx)

    @staticmethod
    def out(prod, b, out):
        n, f = out.shape[:2]
        _run(taps.planes_out, taps.planes_out_par, prod, b, out.reshape(n, f, -1))

    @staticmethod
    def dout_in(dout, dprod, partial):
        n, f = dout.shape[:2]
        _run(taps.planes_in, taps.planes_in_par, dout.reshape(n, f, -1), dprod, partial)

    @staticmethod
    def pool_activate(prod, b, pool, oh, ow, code, a, argmax):
        _run(taps.pool_activate, taps.pool_activate_par, prod, b, pool, oh, ow, code, a, argmax)

    @staticmethod
    def unpool(grad, a, argmax, code, dprod, partial):
        _run(taps.unpool, taps.unpool_par, grad, a, argmax, code, dprod, partial)


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
            raise ConfigError(f"layout must be one of {sorted(LAYOUTS)} or None; "
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
        return activations.get(activation).name in pixels.CODES

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
        code = pixels.CODES[name]
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
