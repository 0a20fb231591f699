"""gpunn: the networks of Nielsen's *Neural Networks and Deep Learning*, on NumPy or CuPy.

Importing gpunn does no work: CuPy, Numba and the data are loaded when first used.
"""

__version__ = "0.1.0"

__all__ = [
    "__version__",
]
