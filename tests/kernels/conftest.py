"""Helpers shared by the kernel tests: the implementations to compare and a gradient check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpunn.kernels import lookup

# float32 sums of up to ~100 products of O(1) values: 1e-4 relative, 1e-4 absolute near zero.
TOLERANCES = {np.dtype(np.float32): (1e-4, 1e-4), np.dtype(np.float64): (1e-9, 1e-10)}


def tolerance(dtype) -> dict:
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    return {"rtol": rtol, "atol": atol}


def reference(op: str):
    """The NumPy reference implementation of ``op`` (the oracle)."""
    return lookup(op, "numpy")


def numerical_gradient(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to each element of ``a``."""
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        plus = f()
        flat[i] = keep - eps
        minus = f()
        flat[i] = keep
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


# Settings of the CPU kernels only: on CuPy each variant would run the same code again.
_CPU_ONLY = {"layout": "taps", "threads": 2, "chunks": "per-example"}


def pytest_collection_modifyitems(config, items):
    """Leave out the CuPy runs of the CPU-only variants above (one CuPy run per case stays)."""
    here = Path(__file__).parent
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        cpu_only = any(params.get(name) == value for name, value in _CPU_ONLY.items())
        if here in Path(item.path).parents and params.get("backend") == "cupy" and cpu_only:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=["reference", "backend"])
def impl(request, backend):
    """A function ``op -> implementation``: the NumPy reference, or the backend's kernel."""
    if request.param == "reference":
        return reference
    return backend.kernel


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """Run the CPU kernels on one thread (their serial drivers) and on two (``prange``)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(request.param)
    yield request.param
    numba.set_num_threads(before)


@pytest.fixture(params=["pixels", "taps"])
def layout(request):
    """Pin the CPU conv kernels to one im2col layout (each is tested, never the timing)."""
    from gpunn.kernels import conv_numba

    kernels = (conv_numba.conv2d, conv_numba.conv_pool)
    before = [k.layout for k in kernels]
    for k in kernels:
        k.layout = request.param
    yield request.param
    for k, was in zip(kernels, before, strict=True):
        k.layout = was


@pytest.fixture
def store(tmp_path, monkeypatch):
    """kernels.choice keeps its measurements in a fresh file under tmp_path (returned)."""
    from gpunn.kernels import choice

    monkeypatch.setattr(choice, "_path", lambda: tmp_path / choice.FILE_NAME)
    monkeypatch.setattr(choice, "_MEMORY", {})
    return tmp_path / choice.FILE_NAME


@pytest.fixture(params=["whole-batch", "per-example"])
def chunks(request, monkeypatch):
    """Run the CPU conv kernels on the batch at once, and in chunks of one example (the
    path a batch takes when its ``cols`` would pass ``WHOLE_BYTES``)."""
    from gpunn.kernels import conv_numba

    if request.param == "per-example":
        monkeypatch.setattr(conv_numba, "WHOLE_BYTES", 0)
        monkeypatch.setattr(conv_numba, "CHUNK_BYTES", 1)
    return request.param


def laid_out(a: np.ndarray, how: str) -> np.ndarray:
    """``a``'s values in C order ("c"), Fortran order ("f"), or as a strided view into a
    larger array ("strided"): the memory layouts a kernel may be handed."""
    if how == "c":
        return np.ascontiguousarray(a)
    if how == "f":
        return np.asfortranarray(a)
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    wide[:, ::2] = a
    return wide[:, ::2]


@pytest.fixture
def oracle():
    """The helpers above, for test modules (conftest is not importable as a module)."""

    class Oracle:
        tolerance = staticmethod(tolerance)
        reference = staticmethod(reference)
        numerical_gradient = staticmethod(numerical_gradient)
        laid_out = staticmethod(laid_out)

    return Oracle
