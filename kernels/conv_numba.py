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
parallel launch to pay for.

A batch whose ``cols`` fit in :data:`WHOLE_BYTES` runs whole and keeps its ``cols`` from forward
to backward; they go back to a pool once backward has used them (a second backward on the
same cache rebuilds them). A larger batch (alexnet-small's 48→128 layer: 69 MB at batch 64;
evaluation batches) runs in chunks of examples of :data:`CHUNK_BYTES`: each chunk's ``cols``,
product and ``dcols`` live in per-thread work buffers reused from call to call (fresh pages
for each call cost more than the copies: network3 conv2 at N=10, 1.6 ms fwd+bwd with fresh
arrays, 0.9 ms reused), the weight gradient adds up chunk by chunk, and backward rebuilds each
chunk's ``cols`` from ``x`` instead of holding the batch's between the passes. Chunks cost a
second im2col and smaller products: 10–27% more time on a 23 MB ``cols`` (64→64 5×5 on
15×15, batch 16), 4–11% less on the 69 MB one; hence the two sizes.
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

_KEEP_COUNT = 16  # distinct held cols kept per thread before the pool starts afresh
WHOLE_BYTES = 32 << 20  # a batch whose cols fit in this runs whole, its cols kept for backward
CHUNK_BYTES = 8 << 20  # else it runs in chunks of examples whose cols fit in this
_pool = threading.local()


def _work(name: str, shape: tuple, dtype):
    """A per-thread work buffer of ``shape``, grown as needed and shared by every call:
    valid only until the next call that asks for ``name``."""
    buffers = _pool.__dict__.setdefault("work", {})
    size = int(np.prod(shape))
    buf = buffers.get((name, np.dtype(dtype)))
    if buf is None or buf.size < size:
        buf = buffers[(name, np.dtype(dtype))] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def _give_back(key, buf) -> None:
    buffers = _pool.__dict__.setdefault("buffers", {})  # held cols are <= WHOLE_BYTES each
    if len(buffers) >= _KEEP_COUNT:
        buffers.clear()
    buffers[key] = buf


def _chunk(n: int, per_example: int, itemsize: int) -> int:
    """Examples per chunk: the batch when its ``cols`` fit in :data:`WHOLE_BYTES`, else as
    many as keep a chunk's ``cols`` within :data:`CHUNK_BYTES`, at least 1."""
    if n * per_example * itemsize <= WHOLE_BYTES:
        return n
    return max(1, min(n, CHUNK_BYTES // max(1, per_example * itemsize)))


def _sum_rows(partial, dtype):
    """``partial (B, R)`` summed over ``B`` in order (float64), as ``dtype``."""
    return partial.sum(axis=0).astype(dtype)


class Pixels:
    """cols ``(n*OH*OW, KH*KW*C)``, one row per output pixel; ``prod (n, OH*OW, F)``."""

    name = "pixels"

    @staticmethod
    def cols_shape(n, c, kh, kw, oh, ow):
        return (n * oh * ow, kh * kw * c)

    @staticmethod
    def im2col(x, kh, kw, stride, padding, oh, ow, cols):
        _run(pixels.im2col, pixels.im2col_par, x, kh, kw, stride, padding, oh, ow, cols)

    @staticmethod
    def weights(w):
        f, c, kh, kw = w.shape
        return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(f, kh * kw * c)

    @staticmethod
    def prod_shape(n, f, oh, ow):
        return (n, oh * ow, f)

    @staticmethod
    def product(cols, w2, prod):
        np.matmul(cols, w2.T, out=prod.reshape(cols.shape[0], w2.shape[0]))

    @staticmethod
    def dw_product(dprod, cols, out):
        """``out (F, KH*KW*C) = dprodᵀ · cols``."""
        np.matmul(dprod.reshape(cols.shape[0], -1).T, cols, out=out)

    @staticmethod
    def dcols(dprod, w2, out):
        np.matmul(dprod.reshape(out.shape[0], w2.shape[0]), w2, out=out)

    @staticmethod
    def dw_final(dw2, w_shape):
        f, c, kh, kw = w_shape
        return dw2.reshape(f, kh, kw, c).transpose(0, 3, 1, 2).copy()

    @staticmethod
    def col2im(dcols, kh, kw, stride, padding, oh, ow, dx):
        _run(pixels.col2im, pixels.col2im_par, dcols, kh, kw, stride, padding, oh, ow, dx)

    @staticmethod
    def out(prod, b, out):
        """``out (n, F, OH, OW)`` from ``prod`` and the bias."""
        n, f = out.shape[:2]
        _run(pixels.transpose, pixels.transpose_par, prod, b, out.reshape(n, f, -1))

    @staticmethod
    def dout_in(dout, dprod, partial):
        """``dprod`` from ``dout (n, F, OH, OW)``, and the bias gradient's partial sums."""
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
    """cols ``(C*KH*KW, n*OH*OW)``, one row per kernel tap; ``prod (F, n*OH*OW)``."""

    name = "taps"

    @staticmethod
    def cols_shape(n, c, kh, kw, oh, ow):
        return (c * kh * kw, n * oh * ow)

    @staticmethod
    def im2col(x, kh, kw, stride, padding, oh, ow, cols):
        _run(taps.im2col, taps.im2col_par, x, kh, kw, stride, padding, oh, ow, cols)

    @staticmethod
    def weights(w):
        return np.ascontiguousarray(w).reshape(w.shape[0], -1)

    @staticmethod
    def prod_shape(n, f, oh, ow):
        return (f, n * oh * ow)

    @staticmethod
    def product(cols, w2, prod):
        np.matmul(w2, cols, out=prod)

    @staticmethod
    def dw_product(dprod, cols, out):
        np.matmul(dprod, cols.T, out=out)

    @staticmethod
    def dcols(dprod, w2, out):
        np.matmul(w2.T, dprod, out=out)

    @staticmethod
    def dw_final(dw2, w_shape):
        return dw2.reshape(w_shape)

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


class _Geometry:
    """One call's shapes: x (N, C, H, W), w (F, C, KH, KW), stride, padding, (OH, OW), and
    the examples per chunk."""

    def __init__(self, layout, x, w_shape, stride, padding, oh, ow):
        self.layout, self.x = layout, x
        self.n, self.c = x.shape[:2]
        self.w_shape = tuple(w_shape)
        self.f, _, self.kh, self.kw = self.w_shape
        self.stride, self.padding, self.oh, self.ow = stride, padding, oh, ow
        self.dtype = x.dtype
        self.step = _chunk(self.n, self.kh * self.kw * self.c * oh * ow, x.dtype.itemsize)

    def chunks(self):
        return [(e, min(self.n, e + self.step)) for e in range(0, self.n, self.step)]

    def cols(self, e0, e1, cols=None):
        """The im2col of examples ``e0:e1`` (into ``cols``, else a work buffer)."""
        if cols is None:
            cols = _work("cols", self.layout.cols_shape(e1 - e0, self.c, self.kh, self.kw,
                                                        self.oh, self.ow), self.dtype)
        self.layout.im2col(self.x[e0:e1], self.kh, self.kw, self.stride, self.padding,
                           self.oh, self.ow, cols)
        return cols


def _forward(layout, x, w, stride, padding, oh, ow, emit):
    """The product ``prod`` of each chunk, handed to ``emit(prod, e0, e1)``; -> (held, w2):
    ``held = [cols]`` when the batch was one chunk (kept for backward), else ``[None]``."""
    g = _Geometry(layout, x, w.shape, stride, padding, oh, ow)
    w2 = layout.weights(w)
    held = [None]
    for e0, e1 in g.chunks():
        if g.step >= g.n:  # one chunk: its cols are kept for backward
            shape = layout.cols_shape(g.n, g.c, g.kh, g.kw, oh, ow)
            held[0] = g.cols(e0, e1, _take_cols(shape, x.dtype))
            cols = held[0]
        else:
            cols = g.cols(e0, e1)
        prod = _work("prod", layout.prod_shape(e1 - e0, g.f, oh, ow), x.dtype)
        layout.product(cols, w2, prod)
        emit(prod, e0, e1)
    return held, w2


def _backward(layout, grad_in, held, x, w2, w_shape, stride, padding, oh, ow, need_dx):
    """``(dx or None, dw)``: chunk by chunk, ``grad_in(dprod, e0, e1)`` fills the chunk's
    ``dprod`` (and the bias partials); gives a held ``cols`` back to the pool."""
    g = _Geometry(layout, x, w_shape, stride, padding, oh, ow)
    dx = np.empty(x.shape, x.dtype) if need_dx else None
    dw2 = np.empty((g.f, g.c * g.kh * g.kw), x.dtype)
    part = None
    for e0, e1 in g.chunks():
        dprod = _work("dprod", layout.prod_shape(e1 - e0, g.f, oh, ow), x.dtype)
        grad_in(dprod, e0, e1)
        cols = held[0] if held[0] is not None else g.cols(e0, e1)
        if e0 == 0:
            layout.dw_product(dprod, cols, dw2)
        else:  # the weight gradient adds up chunk by chunk
            part = part if part is not None else np.empty_like(dw2)
            layout.dw_product(dprod, cols, part)
            dw2 += part
        if need_dx:
            dcols = _work("dcols", cols.shape, x.dtype)
            layout.dcols(dprod, w2, dcols)
            layout.col2im(dcols, g.kh, g.kw, stride, padding, oh, ow, dx[e0:e1])
    if held[0] is not None:
        cols, held[0] = held[0], None  # a second backward rebuilds it
        _give_back(("cols", cols.shape, x.dtype), cols)
    return dx, layout.dw_final(dw2, w_shape)


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
        out = np.empty((x.shape[0], w.shape[0], oh, ow), dtype=x.dtype)
        b = np.ascontiguousarray(b)

        def emit(prod, e0, e1):
            layout.out(prod, b, out[e0:e1])

        held, w2 = _forward(layout, x, w, stride, padding, oh, ow, emit)
        return out, (layout, x, held, w2, w.shape, stride, padding, out.shape)

    def backward(self, dout, cache, need_dx: bool = True):
        """``dout (N, F, OH, OW)`` -> ``(dx (N, C, H, W) or None, dw (F, C, KH, KW), db (F,))``."""
        layout, x, held, w2, w_shape, stride, padding, out_shape = cache
        check_dout(dout, out_shape)
        n, f, oh, ow = out_shape
        dtype = x.dtype
        dout = np.ascontiguousarray(dout, dtype=dtype)
        partial = np.empty((n, f))

        def grad_in(dprod, e0, e1):
            layout.dout_in(dout[e0:e1], dprod, partial[e0:e1])

        dx, dw = _backward(layout, grad_in, held, x, w2, w_shape, stride, padding, oh, ow,
                           need_dx)
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
        shape = (x.shape[0], w.shape[0], ph, pw)
        a = np.empty(shape, x.dtype)
        argmax = np.empty(shape, np.int32)
        code = pixels.CODES[name]
        b = np.ascontiguousarray(b)

        def emit(prod, e0, e1):
            layout.pool_activate(prod, b, int(pool), oh, ow, code, a[e0:e1], argmax[e0:e1])

        held, w2 = _forward(layout, x, w, 1, 0, oh, ow, emit)
        return a, (layout, x, held, w2, w.shape, a, argmax, code, oh, ow)

    def backward(self, grad, cache, need_dx: bool = True):
        """``grad (N, F, PH, PW)`` = ∂C/∂a -> ``(dx (N, C, H, W) or None, dw, db (F,))``."""
        if cache[0] == "composed":
            return self._composed.backward(grad, cache[1], need_dx)
        layout, x, held, w2, w_shape, a, argmax, code, oh, ow = cache
        check_grad(grad, a.shape)
        n, f = a.shape[:2]
        dtype = x.dtype
        grad = np.ascontiguousarray(grad, dtype=dtype)
        partial = np.empty((n, f))

        def grad_in(dprod, e0, e1):
            layout.unpool(grad[e0:e1], a[e0:e1], argmax[e0:e1], code, dprod, partial[e0:e1])

        dx, dw = _backward(layout, grad_in, held, x, w2, w_shape, 1, 0, oh, ow, need_dx)
        return dx, dw, _sum_rows(partial, dtype)


def _take_cols(shape: tuple, dtype):
    """``cols`` for a forward pass: from the pool if backward gave one back, else new."""
    buffers = _pool.__dict__.setdefault("buffers", {})
    buf = buffers.pop(("cols", shape, dtype), None)
    return np.empty(shape, dtype) if buf is None else buf


conv2d = Conv2dNumba()
conv_pool = ConvPoolNumba()
