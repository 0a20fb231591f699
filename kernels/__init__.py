"""Custom compute kernels behind a registry: conv2d, max_pool2d, softmax_cross_entropy.

Each op has a readable NumPy reference (the oracle), a Numba CPU kernel and a CuPy GPU
kernel. The library never imports these modules directly: it asks its backend,
``backend.kernel("conv2d")``, and the registry imports the implementation on first use, so
``import gpunn`` compiles nothing and imports neither Numba nor CuPy.

Every implementation is an object with ``forward(...) -> (out, cache)`` and
``backward(...)``::

    conv2d.forward(x, w, b, stride=1, padding=0) -> (out, cache)
    conv2d.backward(dout, cache, need_dx=True)  -> (dx, dw, db)
    max_pool2d.forward(x, kernel=2, stride=None) -> (out, cache)
    max_pool2d.backward(dout, cache)             -> dx
    conv_pool.forward(x, w, b, pool=2, activation="relu") -> (a, cache)
    conv_pool.backward(grad, cache, need_dx=True) -> (dx, dw, db)
    softmax_cross_entropy.forward(logits, labels)           -> (loss, probs)
    softmax_cross_entropy.backward(probs, labels, scale=1.0) -> dlogits

Shapes and the letters used for them are described in :mod:`gpunn.kernels.checks`.
"""

from gpunn.kernels.registry import KernelNotFound, available, lookup, register

__all__ = [
    "KernelNotFound",
    "available",
    "lookup",
    "register",
]

# op -> module stem; the implementations are ``gpunn.kernels.<stem>{,_numba,_cupy}:<op>``.
_OPS = {"conv2d": "conv", "max_pool2d": "pool", "softmax_cross_entropy": "softmax_xent"}

for _op, _stem in _OPS.items():
    register(_op, "numpy", f"gpunn.kernels.{_stem}:{_op}")
    register(_op, "numba", f"gpunn.kernels.{_stem}_numba:{_op}")
    register(_op, "cupy", f"gpunn.kernels.{_stem}_cupy:{_op}")
del _op, _stem

# network3's conv + max-pool + bias + σ: fused on the CPU; on the GPU, CuPy's conv2d and
# max_pool2d kernels composed (the reference composes the NumPy references).
register("conv_pool", "numpy", "gpunn.kernels.conv_pool:conv_pool")
register("conv_pool", "numba", "gpunn.kernels.conv_numba:conv_pool")
register("conv_pool", "cupy", "gpunn.kernels.conv_pool:conv_pool_cupy")

# Rows of compact uint8 images as float32, once per training chunk (no GPU twin: data is
# gathered on the host and then copied).
register("gather_rows", "numpy", "gpunn.kernels.gather:gather_rows")
register("gather_rows", "numba", "gpunn.kernels.gather_numba:gather_rows")

# A whole chunk of SGD steps of a fully connected network (the NumPy loop is the reference).
register("dense_sgd", "numpy", "gpunn.kernels.dense:DENSE_SGD")
register("dense_sgd", "numba", "gpunn.kernels.dense_numba:DENSE_SGD")
register("dense_sgd", "cupy", "gpunn.kernels.dense_cupy:DENSE_SGD")

# One fully connected layer's SGD step, W ← βW − ηδᵀx, without forming δᵀx (no GPU twin:
# CuPy runs the reference).
register("weight_update", "numpy", "gpunn.kernels.dense:WEIGHT_UPDATE")
register("weight_update", "numba", "gpunn.kernels.dense_numba:WEIGHT_UPDATE")

# A fully connected layer's x Wᵀ: on the CPU the faster of two BLAS orientations, measured
# per shape (no GPU twin: CuPy runs the reference).
register("linear", "numpy", "gpunn.kernels.dense:LINEAR")
register("linear", "numba", "gpunn.kernels.dense_numba:LINEAR")
