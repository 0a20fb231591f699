"""Custom compute kernels behind a registry: conv2d, max_pool2d, softmax_cross_entropy.

Each op has a readable NumPy reference (the oracle), a Numba CPU kernel and a CuPy GPU
kernel. The library never imports these modules directly: it asks its backend,
``backend.kernel("conv2d")``, and the registry imports the implementation on first use, so
``import gpunn`` compiles nothing.
"""

from gpunn.kernels.registry import KernelNotFound, available, lookup, register

__all__ = [
    "KernelNotFound",
    "available",
    "lookup",
    "register",
]
