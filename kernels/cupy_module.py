"""Compiling and launching the CUDA sources of :mod:`gpunn.kernels.cuda_sources` with CuPy.

Imported only by the ``*_cupy`` modules, so only on a GPU backend. A module is compiled once
per (source, dtype) and process; CuPy also caches the binary on disk.
"""

from __future__ import annotations

import cupy

from gpunn.kernels.cuda_sources import source
from gpunn.kernels.nvrtc import CUPY_OPTIONS

THREADS = 256
_MAX_BLOCKS = 65535  # the kernels loop over the grid, so any size is covered
_MODULES: dict = {}
_FUNCTIONS: dict = {}


def function(name: str, dtype, kernel: str):
    """The ``__global__`` function ``kernel`` of source ``name`` compiled for ``dtype``.

    Kept per (source, dtype, kernel, GPU): ``RawModule.get_function`` builds a new function
    object on every call, which a launch per mini-batch would pay each time; a function is
    loaded on one device, hence the GPU in the key."""
    key = (name, cupy.dtype(dtype).char)
    fn_key = key + (kernel, cupy.cuda.get_device_id())
    fn = _FUNCTIONS.get(fn_key)
    if fn is None:
        module = _MODULES.get(key)
        if module is None:
            module = _MODULES[key] = cupy.RawModule(code=source(name, dtype),
                                                    options=CUPY_OPTIONS)
        fn = _FUNCTIONS[fn_key] = module.get_function(kernel)
    return fn


def blocks(total: int) -> tuple[int]:
    """A 1-D grid of ``THREADS``-thread blocks for ``total`` elements (grid-stride loops)."""
    return (max(1, min((total + THREADS - 1) // THREADS, _MAX_BLOCKS)),)
