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


class FakeCUBLASError(RuntimeError):
    pass


class FakeArray(np.ndarray):
    """A device array whose matmul fails as CuPy's does without libcublas."""

    blas_fails = False

    def __matmul__(self, other):
        if self.blas_fails:
            raise ImportError("libcublas.so.12: cannot open shared object file: No such file "
                              "or directory")
        return (np.asarray(self) @ np.asarray(other)).view(type(self))

    def get(self):
        return np.array(self)


def fake_cupy(available=True, alloc_fails=False, devices=1, blas_fails=False,
              compile_fails=False, current=0):
    """A stand-in for CuPy installed on a machine without a (working) driver, or without
    cuBLAS (``blas_fails``), or without NVRTC or the CUDA headers (``compile_fails``)."""
    cupy = types.ModuleType("cupy")
    cupy.is_available = lambda: available
    cupy.used = []  # the devices made current with Device(i).use()
    cupy.current = current
    array_type = type("FakeArray", (FakeArray,), {"blas_fails": blas_fails})

    def device_count():
        if not available:  # what CuPy's runtime says on a machine without a GPU
            raise FakeCUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return devices

    def asarray(a, dtype=None):  # a copy to the device: the driver's first work
        if alloc_fails:
            raise FakeCUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is "
                                       "insufficient for CUDA runtime version")
        return np.array(a, dtype=dtype).view(array_type)

    class RawKernel:
        def __init__(self, code, name, options=()):
            if compile_fails:
                raise RuntimeError("Failed to find CUDA headers (cuda_fp16.h); install them "
                                   "with `pip install cupy-cuda12x[ctk]`")
            self.name = name

        def __call__(self, grid, block, args):
            args[0][:block[0]] += 1

    cupy.asarray = asarray
    cupy.float32 = np.float32
    cupy.RawKernel = RawKernel
    runtime = types.SimpleNamespace(getDeviceCount=device_count,
                                    getDevice=lambda: cupy.current,
                                    getDeviceProperties=lambda i: {"name": b"Fake GPU"})

    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def use(self):
            cupy.used.append(self.index)
            cupy.current = self.index

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
        "install gpunn[cuda12] or gpunn[cuda13] (CuPy with the CUDA libraries, "
        "cupy-cuda12x[ctk] / cupy-cuda13x[ctk]) on a machine with an NVIDIA GPU, or use "
        "select('cpu')")
    assert info.value.for_option("--device") == (
        "--device cuda was asked for but CuPy could not start (CuPy is not installed); "
        "install gpunn[cuda12] or gpunn[cuda13] (CuPy with the CUDA libraries, "
        "cupy-cuda12x[ctk] / cupy-cuda13x[ctk]) on a machine with an NVIDIA GPU, or use "
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


@pytest.mark.parametrize("kwargs,check,cause", [
    ({"blas_fails": True}, "cuBLAS", "libcublas.so.12: cannot open shared object file"),
    ({"compile_fails": True}, "NVRTC", "Failed to find CUDA headers"),
    ({"alloc_fails": True}, "device", "cudaErrorInsufficientDriver"),
])
def test_probe_tries_cublas_and_nvrtc_before_choosing_cupy(monkeypatch, kwargs, check, cause):
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake_cupy(**kwargs))
    monkeypatch.delenv("GPUNN_DEVICE", raising=False)
    be = backend.select("auto")
    assert be.name == "numpy" and cause in be.reason
    rows = dict(be.checks)
    assert rows[check] == "failed" and rows["import"] == "ok"
    after = backend.CHECKS[backend.CHECKS.index(check) + 1:]
    assert all(rows[c] == "not tried" for c in after)
    with pytest.raises(backend.BackendUnavailable, match=cause) as info:
        backend.select("cuda")
    assert info.value.check == check
    if check != "device":
        assert "cupy-cuda12x[ctk]" in info.value.for_option() and f"{check} failed" in str(
            info.value)


def test_auto_keeps_the_current_device_and_cuda_n_makes_it_current(monkeypatch):
    fake = fake_cupy(devices=2, current=1)
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake)
    monkeypatch.delenv("GPUNN_DEVICE", raising=False)
    be = backend.select("auto")
    assert be.device == "cuda:1" and fake.used == [], "auto moved off the current GPU"
    assert dict(be.checks) == dict.fromkeys(backend.CHECKS, "ok")
    assert backend.select("cuda").device == "cuda:1" and fake.used == []
    assert backend.select("cuda:0").device == "cuda:0" and fake.used == [0]


@pytest.mark.parametrize("error,expected", [
    (ModuleNotFoundError("No module named 'cupy'", name="cupy"), "CuPy is not installed"),
    (ModuleNotFoundError("No module named 'cupy_backends'", name="cupy_backends"),
     "CuPy failed to import: ModuleNotFoundError: No module named 'cupy_backends'"),
    (ImportError("=====\nFailed to import CuPy.\n\nIf you installed CuPy via wheels ...\n\n"
                 "Original error:\n  ImportError: libnvrtc.so.12: cannot open shared object "
                 "file: No such file or directory\n====="),
     "CuPy failed to import: ImportError: libnvrtc.so.12: cannot open shared object file"),
])
def test_import_failure_is_not_installed_only_when_cupy_is_missing(monkeypatch, error,
                                                                   expected):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy":
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(backend.BackendUnavailable) as info:
        backend._import_cupy()
    assert expected in info.value.cause and "\n" not in info.value.cause
    assert info.value.check == "import"
    if expected == "CuPy is not installed":
        assert info.value.hint == backend.INSTALL_HINT
    else:
        assert "not installed" not in str(info.value) and "[ctk]" in info.value.hint


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


def test_device_random_is_the_host_draw_on_the_cpu_and_a_device_draw_on_cupy():
    cpu = select_backend("cpu")
    a, b = cpu.rng(5), cpu.rng(5)
    assert np.array_equal(a.device_random((3, 4)), b.random((3, 4)))  # bit-identical on the CPU
    drawn = []

    class RandomState:  # CuPy's, seeded per call: records what it was asked for
        def __init__(self, seed, method):
            drawn.append((seed, method))
            self.gen = np.random.Generator(np.random.Philox(seed))

        def random_sample(self, size, dtype):
            return self.gen.random(size, dtype=dtype)

    fake = types.SimpleNamespace(
        random=types.SimpleNamespace(RandomState=RandomState),
        cuda=types.SimpleNamespace(curand=types.SimpleNamespace(
            CURAND_RNG_PSEUDO_PHILOX4_32_10=104)))
    gpu = backend.Backend(name="cupy", xp=fake, device="cuda:0")
    rng = gpu.rng(5)
    state = rng.state
    mask = rng.device_random((1000, 30), dtype=np.float32)
    assert mask.dtype == np.float32 and mask.shape == (1000, 30) and 0 <= mask.min()
    assert drawn[0][1] == 104 and rng.state != state
    host = cpu.rng(5)
    host.generator.integers(2**63)  # the host spent one draw: the seed, not 30,000 numbers
    assert rng.state == host.state
    rng.set_state(state)  # exact resume: the seed comes from the saved host state
    assert np.array_equal(rng.device_random((1000, 30)), mask)


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


# -- CPU threads ----------------------------------------------------------------------------------
@pytest.fixture
def restore_threads():
    import numba

    before = numba.get_num_threads()
    yield
    backend.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 2])
def test_set_num_threads_sets_blas_and_numba_together(restore_threads, n):
    import numba
    from threadpoolctl import threadpool_info

    assert backend.set_num_threads(n) == n == backend.num_threads()
    assert numba.get_num_threads() == n
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert blas and set(blas) == {n}


def test_threads_come_from_the_environment(restore_threads, monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", "1")
    assert backend.set_num_threads() == 1
    monkeypatch.delenv("GPUNN_NUM_THREADS")
    assert backend.set_num_threads() == backend.cpu_count()


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_bad_thread_setting_says_what_came_and_what_to_do(restore_threads, monkeypatch, value):
    monkeypatch.setenv("GPUNN_NUM_THREADS", value)
    with pytest.raises(ValueError, match=rf"GPUNN_NUM_THREADS must be a whole number >= 1; it is "
                                         rf"'{value}'.*unset it"):
        backend.set_num_threads()
    with pytest.raises(ValueError, match=r"threads must be a whole number >= 1; received 0"):
        backend.set_num_threads(0)


def test_more_threads_than_numbas_pool_are_capped_there(restore_threads, caplog):
    import numba

    pool = numba.config.NUMBA_NUM_THREADS
    with caplog.at_level("WARNING", logger="gpunn.backend"):
        assert backend.set_num_threads(pool + 1) == pool + 1
    assert numba.get_num_threads() == pool
    assert "its kernels use" in caplog.text
