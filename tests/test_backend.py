"""Backend selection, transfers, RNG and array-module checks, without and with (faked) CuPy."""

from __future__ import annotations

import logging
import subprocess
import sys
import types

import numpy as np
import pytest

from gpunn import backend
from gpunn.backend import select as select_backend


class FakeCUDARuntimeError(RuntimeError):
    pass


def fake_cupy(available=True, alloc_fails=False, devices=1):
    """A stand-in for CuPy installed on a machine without a (working) driver."""
    cupy = types.ModuleType("cupy")
    cupy.is_available = lambda: available

    def arange(*args, **kwargs):
        if alloc_fails:
            raise FakeCUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is "
                                       "insufficient for CUDA runtime version")
        return np.arange(*args, **kwargs)

    cupy.arange = arange
    cupy.float32 = np.float32
    runtime = types.SimpleNamespace(getDeviceCount=lambda: devices,
                                    getDeviceProperties=lambda i: {"name": b"Fake GPU"})

    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def use(self):
            pass

    cupy.cuda = types.SimpleNamespace(runtime=runtime, Device=Device)
    return cupy


@pytest.fixture
def no_cupy(monkeypatch):
    def refuse():
        raise backend.BackendUnavailable("CuPy is not installed")

    monkeypatch.setattr(backend, "_import_cupy", refuse)
    monkeypatch.delenv("GPUNN_DEVICE", raising=False)


def test_auto_without_cupy_is_numpy_with_a_reason(no_cupy, caplog):
    backend._LOGGED.clear()
    with caplog.at_level(logging.INFO, logger="gpunn.backend"):
        be = backend.select("auto")
        backend.select("auto")
    assert be.name == "numpy" and be.xp is np and be.device == "cpu"
    assert "CuPy is not installed" in be.reason
    assert sum("CuPy is not installed" in r.message for r in caplog.records) == 1


def test_cuda_without_cupy_raises_naming_cause_and_fix(no_cupy):
    with pytest.raises(backend.BackendUnavailable) as info:
        backend.select("cuda")
    message = str(info.value)
    assert "CuPy is not installed" in message
    assert "gpunn[cuda12]" in message and "--device cpu" in message


@pytest.mark.parametrize("kwargs,cause", [
    ({"alloc_fails": True}, "FakeCUDARuntimeError"),
    ({"available": False}, "no usable CUDA device"),
])
def test_cupy_present_but_no_driver(monkeypatch, kwargs, cause):
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake_cupy(**kwargs))
    monkeypatch.delenv("GPUNN_DEVICE", raising=False)
    be = backend.select("auto")
    assert be.name == "numpy" and cause in be.reason
    with pytest.raises(backend.BackendUnavailable, match=cause):
        backend.select("cuda:0")


def test_working_cupy_is_chosen_by_auto(monkeypatch):
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake_cupy())
    monkeypatch.delenv("GPUNN_DEVICE", raising=False)
    be = backend.select("auto")
    assert be.name == "cupy" and be.device == "cuda:0" and "Fake GPU" in be.reason
    with pytest.raises(backend.BackendUnavailable, match="GPU 3 does not exist"):
        backend.select("cuda:3")


def test_environment_variable_and_bad_specs(monkeypatch, no_cupy):
    monkeypatch.setenv("GPUNN_DEVICE", "cpu")
    assert backend.select().reason == "asked for --device cpu"
    for bad in ("tpu", "cuda:x", "gpu0"):
        with pytest.raises(ValueError, match="auto, cpu, cuda"):
            backend.select(bad)


def test_asarray_defaults_to_float32_and_round_trips():
    be = backend.select("cpu")
    a = be.asarray([[1, 2], [3, 4]])
    assert a.dtype == np.float32 and a.shape == (2, 2)
    assert be.asarray([1, 2], dtype=None).dtype.kind == "i"
    assert np.array_equal(be.to_numpy(a), [[1, 2], [3, 4]])


def test_rng_draws_the_same_numbers_for_the_same_seed(backend):
    # `backend` here is the fixture (NumPy, and CuPy where a GPU works)
    cpu = select_backend("cpu")
    a = cpu.rng(7).normal(0, 1, (3, 4))
    b = backend.rng(7).normal(0, 1, (3, 4))
    assert np.array_equal(a, backend.to_numpy(b)) and b.dtype == np.float32
    assert not np.array_equal(a, cpu.rng(8).normal(0, 1, (3, 4)))
    rng = cpu.rng(1)
    state = rng.state
    first = rng.permutation(10)
    rng.set_state(state)
    assert np.array_equal(first, rng.permutation(10))


def test_array_module_and_mixing():
    assert backend.array_module(np.zeros(2), np.ones(3)) is np

    class FakeCupyArray:
        __module__ = "cupy._core.core"

    with pytest.raises(backend.MixedArrayError, match="mixed"):
        sys.modules.setdefault("cupy", types.ModuleType("cupy"))
        try:
            backend.array_module(np.zeros(2), FakeCupyArray())
        finally:
            if not hasattr(sys.modules["cupy"], "ndarray"):
                del sys.modules["cupy"]
    with pytest.raises(backend.MixedArrayError, match="CuPy array"):
        backend.select("cpu").asarray(FakeCupyArray())


def test_dlpack_interop_without_copy():
    be = backend.select("cpu")
    source = np.arange(6, dtype=np.float32)
    view = be.from_dlpack(source)
    source[0] = 42
    assert view[0] == 42


def test_memory_info_and_synchronize():
    be = backend.select("cpu")
    be.synchronize()
    info = be.memory_info()
    assert set(info) == {"total", "free", "used"} and info["total"] > 0


def test_import_gpunn_is_light():
    code = ("import sys, time; t = time.perf_counter(); import gpunn, gpunn.backend; "
            "dt = time.perf_counter() - t; "
            "print(dt, 'numba' in sys.modules, 'cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[1:] == ["False", "False"], "import gpunn imported numba or cupy"
    assert float(out[0]) < 0.5


def test_kernel_packages_install_under_gpunn_only():
    import importlib.util

    assert importlib.util.find_spec("gpunn.kernels") is not None
    assert importlib.util.find_spec("gpunn.cli") is not None
    code = "import importlib.util as u; print(u.find_spec('kernels'), u.find_spec('cli'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    assert out.split() == ["None", "None"]
