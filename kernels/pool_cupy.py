"""max_pool2d on the GPU: a forward RawKernel (max and argmax) and a gathering backward one.

The CUDA source is ``cuda_sources.POOL``; backward gathers per input pixel, so overlapping
windows need no atomics. Same interface as :mod:`gpunn.kernels.pool`.
"""

from __future__ import annotations

import cupy
import numpy as np

from gpunn.kernels import checks
from gpunn.kernels.cupy_module import THREADS, blocks, function
from gpunn.kernels.pool import check_dout


class MaxPool2dCupy:
    """max_pool2d with an argmax kept per output (float32 and float64)."""

    backend = "cupy"

    def forward(self, x, kernel: int = 2, stride: int | None = None):
        """``x (N, C, H, W)`` -> ``(out (N, C, OH, OW), cache)``."""
        kernel, stride, oh, ow = checks.max_pool2d(x, kernel, stride)
        x = cupy.ascontiguousarray(x)
        n, c, h, w = x.shape
        out = cupy.empty((n, c, oh, ow), dtype=x.dtype)
        argmax = cupy.empty(out.shape, dtype=cupy.int32)
        geometry = tuple(np.int32(v) for v in (n, c, h, w, kernel, stride, oh, ow))
        function("pool", x.dtype, "max_pool_forward")(
            blocks(out.size), (THREADS,), (x, out, argmax, *geometry)
        )
        return out, (argmax, geometry, x.shape, x.dtype)

    def backward(self, dout, cache):
        """``dout (N, C, OH, OW)`` -> ``dx (N, C, H, W)``."""
        argmax, geometry, x_shape, dtype = cache
        check_dout(dout, argmax.shape)
        dout = cupy.ascontiguousarray(dout, dtype=dtype)
        dx = cupy.empty(x_shape, dtype=dtype)
        function("pool", dtype, "max_pool_backward")(
            blocks(dx.size), (THREADS,), (dout, argmax, dx, *geometry)
        )
        return dx


max_pool2d = MaxPool2dCupy()
