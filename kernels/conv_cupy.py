"""conv2d on the GPU: im2col and col2im RawKernels around cuBLAS (``cupy.matmul``).

The same decomposition as :mod:`gpunn.kernels.conv_numba`; the CUDA source is
``cuda_sources.CONV``. Same interface as :mod:`gpunn.kernels.conv`.
"""

from __future__ import annotations

import cupy
import numpy as np

from gpunn.kernels import checks
from gpunn.kernels.conv import check_dout
from gpunn.kernels.cupy_module import THREADS, blocks, function


class Conv2dCupy:
    """conv2d as im2col + cuBLAS + col2im (float32 and float64)."""

    backend = "cupy"

    def forward(self, x, w, b, stride: int = 1, padding: int = 0):
        """``x (N, C, H, W)``, ``w (F, C, KH, KW)``, ``b (F,)`` -> ``(out (N, F, OH, OW), cache)``.

        Computes the convolution with ``stride`` and zero ``padding`` on all four sides.
        """
        oh, ow = checks.conv2d(x, w, b, stride, padding)
        x = cupy.ascontiguousarray(x)
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        cols = cupy.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
        geometry = tuple(np.int32(v) for v in (n, c, h, wd, kh, kw, stride, padding, oh, ow))
        function("conv", x.dtype, "im2col")(blocks(cols.size), (THREADS,), (x, cols, *geometry))
        w2 = cupy.ascontiguousarray(w).reshape(f, c * kh * kw)
        out2 = cupy.matmul(w2, cols).reshape(f, n, oh * ow)
        out = (out2.transpose(1, 0, 2) + b[None, :, None]).reshape(n, f, oh, ow)
        return out, (cols, w2, w.shape, geometry, x.shape, out.shape)

    def backward(self, dout, cache, need_dx: bool = True):
        """``dout (N, F, OH, OW)`` -> ``(dx (N, C, H, W) or None, dw (F, C, KH, KW), db (F,))``."""
        cols, w2, w_shape, geometry, x_shape, out_shape = cache
        check_dout(dout, out_shape)
        # in the forward's dtype: a float64 dout would make float64 dcols, which col2im,
        # compiled for float32, would read as float32
        dout = cupy.asarray(dout, dtype=cols.dtype)
        n, f, oh, ow = out_shape
        db = dout.sum(axis=(0, 2, 3))
        dout2 = cupy.ascontiguousarray(dout.reshape(n, f, oh * ow).transpose(1, 0, 2))
        dout2 = dout2.reshape(f, n * oh * ow)
        dw = cupy.matmul(dout2, cols.T).reshape(w_shape)
        dx = None
        if need_dx:
            dcols = cupy.matmul(w2.T, dout2)
            dx = cupy.empty(x_shape, dtype=cols.dtype)
            function("conv", cols.dtype, "col2im")(
                blocks(dx.size), (THREADS,), (dcols, dx, *geometry)
            )
        return dx, dw, db


conv2d = Conv2dCupy()
