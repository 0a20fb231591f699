"""gpunn: the networks of Nielsen's *Neural Networks and Deep Learning*, on NumPy or CuPy.

Importing gpunn does no work: CuPy, Numba and the data are loaded when first used.

    import gpunn
    from gpunn.data import load_dataset
    mnist = load_dataset("mnist")
    net = gpunn.Network([784, 30, 10])
    history = net.sgd(mnist.train, epochs=30, mini_batch_size=10, eta=3.0,
                      evaluation_data=mnist.test)
    gpunn.save(net, "ch1.npz")
"""

import os as _os
import sys as _sys

# OpenBLAS keeps its idle threads spinning for a while after each product; between the
# products, the CPU kernels' own threads then find no free core (on 2 cores the chapter-6
# net's steps stalled for 16 ms scheduler slices). OpenBLAS reads this setting once, when
# NumPy loads it, so it is given here, before gpunn imports NumPy; a value the user set is
# kept. ``gpunn.backend.set_num_threads`` warns when NumPy was imported first.
_BLAS_SPINS = "numpy" in _sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in _os.environ
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Network",
    "History",
    "SGD",
    "fit",
    "save",
    "load",
    "gradcheck",
    "GradientCheckError",
]

_LAZY = {
    "Network": ("gpunn.network", "Network"),
    "History": ("gpunn.train", "History"),
    "SGD": ("gpunn.optim", "SGD"),
    "fit": ("gpunn.train", "fit"),
    "save": ("gpunn.io", "save"),
    "load": ("gpunn.io", "load"),
    "gradcheck": ("gpunn.gradcheck", "gradcheck"),
    "GradientCheckError": ("gpunn.gradcheck", "GradientCheckError"),
}


def __getattr__(name):
    # Public names resolve on first use, so `import gpunn` stays instant.
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gpunn' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
