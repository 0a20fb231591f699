"""Shared fixtures: the backend parameterisation (one test body, every backend)."""

from __future__ import annotations

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
