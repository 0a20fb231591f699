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

    def device_count():
        if not available:  # what CuPy's runtime says on a machine without a GPU
            raise FakeCUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return devices

    def arange(*args, **kwargs):
        if alloc_fails:
            raise FakeCUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is "
                                       "insufficient for CUDA runtime version")
        return np.arange(*args, **kwargs)

    cupy.arange = arange
    cupy.float32 = np.float32
    runtime = types.SimpleNamespace(getDeviceCount=device_count,
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
        raise backend.BackendUnavailable("CuPy is not installed", hint=backend.INSTALL_HINT)

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
    assert str(info.value) == (
        "select('cuda') was asked for but CuPy could not start (CuPy is not installed); "
        "install gpunn[cuda12] (or gpunn[cuda13]) on a machine with an NVIDIA GPU, or use "
        "select('cpu')")
    assert info.value.for_option("--device") == (
        "--device cuda was asked for but CuPy could not start (CuPy is not installed); "
        "install gpunn[cuda12] (or gpunn[cuda13]) on a machine with an NVIDIA GPU, or use "
        "--device cpu")


@pytest.mark.parametrize("kwargs,cause", [
    ({"alloc_fails": True}, "cudaErrorInsufficientDriver: CUDA driver version is insufficient"),
    ({"available": False}, "cudaErrorNoDevice: no CUDA-capable device is detected"),
    ({"devices": 0}, "CuPy found no CUDA device"),
])
def test_cupy_present_but_no_driver_names_the_cause_not_an_install(monkeypatch, kwargs, cause):
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake_cupy(**kwargs))
    monkeypatch.delenv("GPUNN_DEVICE", raising=False)
    be = backend.select("auto")
    assert be.name == "numpy" and cause in be.reason
    with pytest.raises(backend.BackendUnavailable, match=cause) as info:
        backend.select("cuda:0")
    message = info.value.for_option("--device")
    assert message.startswith("--device cuda:0 was asked for but CuPy could not start (")
    assert "nvidia-smi" in message and "--device cpu" in message
    assert "install gpunn" not in message and "gpunn[cuda" not in message


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


def test_host_memory_available_reads_memavailable(monkeypatch, tmp_path):
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    real_open = open
    monkeypatch.setattr("builtins.open",
                        lambda f, *a, **k: real_open(fake if f == "/proc/meminfo" else f, *a, **k))
    assert backend.host_memory_available() == 8000000 * 1024
    fake.unlink()
    assert backend.host_memory_available() is None


def test_import_gpunn_is_light():
    # What is imported, not how long it takes: a wall-clock bound flakes on a busy machine.
    code = ("import sys; import gpunn, gpunn.backend; "
            "print(*(m in sys.modules for m in ('numba', 'cupy', 'matplotlib', 'click')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False"] * 4, f"import gpunn imported numba, cupy, matplotlib or click: {out}"


def test_kernel_packages_install_under_gpunn_only():
    import importlib.util

    assert importlib.util.find_spec("gpunn.kernels") is not None
    assert importlib.util.find_spec("gpunn.cli") is not None
    code = "import importlib.util as u; print(u.find_spec('kernels'), u.find_spec('cli'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    assert out.split() == ["None", "None"]


def test_first_compile_likely_asks_the_registry_on_the_cpu_only(monkeypatch):
    from gpunn.kernels import registry

    asked = []
    monkeypatch.setattr(registry, "first_compile_likely",
                        lambda ops=None: asked.append(ops) or True)
    assert backend.select("cpu").first_compile_likely(["dense_sgd"]) is True
    assert asked == [["dense_sgd"]]
    gpu = backend.Backend(name="cupy", xp=None, device="cuda:0")
    assert gpu.first_compile_likely(["dense_sgd"]) is False and len(asked) == 1
