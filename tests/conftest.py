"""Shared fixtures: the backend parameterisation (one test body, every backend)."""

from __future__ import annotations

import os
from pathlib import Path

# The kernels' parallel drivers need a Numba pool of two threads or more to run at all; a
# one-core machine would otherwise test the serial drivers only. Set before Numba loads.
os.environ.setdefault("NUMBA_NUM_THREADS", str(max(2, os.cpu_count() or 1)))

import numpy as np
import pytest

from gpunn import backend as backend_module


def _cuda_backend():
    try:
        return backend_module.select("cuda")
    except backend_module.BackendUnavailable:
        return None


_CUDA = None
_CUDA_CHECKED = False


def cuda_backend():
    global _CUDA, _CUDA_CHECKED
    if not _CUDA_CHECKED:
        _CUDA, _CUDA_CHECKED = _cuda_backend(), True
    return _CUDA


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend(request):
    """Each test that takes ``backend`` runs on NumPy and, where a GPU works, on CuPy."""
    if request.param == "numpy":
        return backend_module.select("cpu")
    be = cuda_backend()
    if be is None:
        pytest.skip("no CUDA GPU with CuPy on this machine")
    return be


# Tolerances keyed by dtype: (rtol, atol).
TOLERANCES = {np.dtype(np.float32): (1e-4, 1e-5), np.dtype(np.float64): (1e-9, 1e-12)}


def tolerance(dtype) -> tuple[float, float]:
    return TOLERANCES[np.dtype(dtype)]


# The book's MNIST file sits in shared/ beside the checkout on the project's machines and in
# CI; elsewhere tests fall back to data they make themselves.
BOOK_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.pkl.gz"


@pytest.fixture(scope="session")
def mnist_small():
    """1,000 training images (N, 784) float32 and labels: MNIST's first 1,000 when the book's
    file is at hand, else 1,000 noisy strokes of ten synthetic 'digits'."""
    if BOOK_MNIST.exists():
        from gpunn.data import load_mnist

        train = load_mnist(BOOK_MNIST).train
        return train.x(np.arange(1000)), train.labels[:1000].copy()
    r = np.random.default_rng(0)
    prototypes = (r.random((10, 784)) < 0.2).astype(np.float32)
    y = r.integers(0, 10, 1000)
    X = np.clip(prototypes[y] + 0.3 * r.standard_normal((1000, 784)), 0, 1)
    return X.astype(np.float32), y


@pytest.fixture
def isolated_data(tmp_path, monkeypatch):
    """No real cache, no system Fashion-MNIST, no network: data tests see only tmp_path."""
    from gpunn.data import download, mnist

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUNN_DATA", raising=False)
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "system"]})
    monkeypatch.setattr(download, "MNIST_MIRRORS", [])

    def no_pip(requirement, into):
        raise download._Failed("pip is disabled in the tests")

    monkeypatch.setattr(download, "_pip_download", no_pip)
    return tmp_path


# -- plots: matplotlib is optional (the plot extra) --------------------------------------------
@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib", reason="plots need the gpunn[plot] extra")


@pytest.fixture
def png_of_size():
    """``check(path, inches)``: the file is a non-empty PNG of the pixels gpunn's plots have
    for a figure of ``inches`` (width, height)."""
    from PIL import Image

    from gpunn import plots

    def check(path, inches):
        assert path.exists() and path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (round(inches[0] * plots.DPI), round(inches[1] * plots.DPI))

    return check


# -- mpi: data-parallel runs on several ranks ---------------------------------------------------
def pytest_collection_modifyitems(config, items):
    """Leave the ``mpi`` tests out unless the marker expression names them.

    They run under MPI, as ``.ci/run`` does: ``timeout 300 mpiexec -n 2 python -m mpi4py -m
    pytest -m mpi``, and pass at any rank count, 1 included (each rank trains the
    one-process reference itself; tests that start their own ``mpiexec`` run on rank 0).
    """
    if "mpi" in (config.getoption("markexpr") or ""):
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("mpi") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session")
def comm():
    """MPI's COMM_WORLD (one rank when pytest was not started by mpiexec)."""
    pytest.importorskip("mpi4py", reason="the mpi tests need gpunn[mpi]")
    from gpunn.distributed import MPIComm

    return MPIComm()
