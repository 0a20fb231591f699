"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU, chosen once.

This is the only module of the library that imports CuPy, and it does so lazily, inside
:func:`select`. Everything else receives a :class:`Backend` and uses ``backend.xp``.
Other projects may import this module alone to run their own arrays on CPU or GPU::

    from gpunn import backend
    be = backend.select("auto")          # CuPy when a GPU works, else NumPy
    x = be.asarray([[1, 2], [3, 4]])     # float32 on the chosen device
    y = be.xp.tanh(x) @ x.T
    print(be.name, be.device, be.to_numpy(y))

Arrays cross to and from other libraries (PyTorch, JAX, ...) through DLPack, without a copy
where both sides share a device::

    t = torch.arange(4.0)
    a = be.from_dlpack(t)                # a NumPy or CuPy array viewing t's memory
    t2 = torch.from_dlpack(a)            # and back

How many CPU threads BLAS and the Numba kernels use is one setting, for both at once::

    backend.set_num_threads(2)           # or $GPUNN_NUM_THREADS; default: every core

What it leaves out: multi-GPU placement beyond choosing ``cuda:N``, and mixed precision.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpunn.errors import GpunnError

__all__ = [
    "Backend",
    "BackendUnavailable",
    "MixedArrayError",
    "HostRNG",
    "array_module",
    "host_memory_available",
    "num_threads",
    "select",
    "set_num_threads",
]

log = logging.getLogger(__name__)
_LOGGED: set[str] = set()

ENV_VAR = "GPUNN_DEVICE"
THREADS_VAR = "GPUNN_NUM_THREADS"
# The extras install CuPy with the CUDA libraries and headers it needs beyond the driver
# (cupy-cuda12x[ctk]: NVRTC, cuBLAS, the runtime headers CuPy 14 compiles RawModules with).
INSTALL_HINT = ("install gpunn[cuda12] or gpunn[cuda13] (CuPy with the CUDA libraries, "
                "cupy-cuda12x[ctk] / cupy-cuda13x[ctk]) on a machine with an NVIDIA GPU")
DRIVER_HINT = ("CuPy is installed but this machine offers it no usable NVIDIA GPU: check the "
               "driver and the device (nvidia-smi)")
LIBRARY_HINT = ("CuPy is installed but cannot load the CUDA libraries or headers it needs: "
                "reinstall it as gpunn[cuda12] or gpunn[cuda13] (cupy-cuda12x[ctk] / "
                "cupy-cuda13x[ctk])")
# What select() tries, in order, before it chooses CuPy; ``gpunn info`` shows each.
CHECKS = ("import", "device", "cuBLAS", "NVRTC")
_HINTS = {"import": LIBRARY_HINT, "device": DRIVER_HINT, "cuBLAS": LIBRARY_HINT,
          "NVRTC": LIBRARY_HINT}


class BackendUnavailable(GpunnError, RuntimeError):
    """The device that was asked for cannot be used; the message names the cause and the fix.

    ``device`` is the device asked for ("cuda:0"), ``cause`` what CuPy reported, ``hint``
    what to do about it and ``check`` which of :data:`CHECKS` failed ("import", "device",
    "cuBLAS", "NVRTC"); :meth:`for_option` words the message for a command-line option.
    """

    def __init__(self, cause: str, device: str | None = None, hint: str = "",
                 check: str | None = None):
        self.cause, self.device, self.hint, self.check = cause, device, hint, check
        super().__init__(self._words(f"select({device!r})", "select('cpu')")
                         if device else cause)

    def for_option(self, option: str = "--device") -> str:
        """The message as ``option DEVICE was asked for ...`` (the CLI's words)."""
        return self._words(f"{option} {self.device}", f"{option} cpu") if self.device else str(self)

    def _words(self, asked: str, cpu: str) -> str:
        hint = f"{self.hint}, or use {cpu}" if self.hint else f"use {cpu}"
        return f"{asked} was asked for but CuPy could not start ({self.cause}); {hint}"


class MixedArrayError(GpunnError, TypeError):
    """NumPy and CuPy arrays were mixed in one call."""


class HostRNG:
    """A random generator that draws on the host and copies to the backend's device.

    Drawing on the host makes the same seed give the same numbers on CPU and GPU, so a
    network initialised with ``seed=1`` starts from identical weights on both. Its state can
    be saved and restored (``state`` / ``set_state``) for exact resume.
    """

    def __init__(self, backend: Backend, seed: int | None):
        self._backend = backend
        self.generator = np.random.Generator(np.random.PCG64(seed))

    @property
    def xp(self):
        """The array module of the backend the draws are copied to."""
        return self._backend.xp

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=np.float32):
        return self._backend.asarray(self.generator.normal(loc, scale, size), dtype=dtype)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float32):
        return self._backend.asarray(self.generator.uniform(low, high, size), dtype=dtype)

    def random(self, size=None, dtype=np.float32):
        return self._backend.asarray(self.generator.random(size), dtype=dtype)

    def device_random(self, size, dtype=np.float32):
        """Uniform [0, 1) draws made on the device (dropout masks): no host draw, no copy.

        On the CPU the host is the device: exactly :meth:`random`'s numbers, so runs and
        resumes stay bit-identical. On CuPy, a Philox generator seeded by one draw of this
        host generator makes them: a resume is exact there too (the seed comes from the
        saved state), but the GPU's masks are not the CPU's for the same seed.
        """
        if self._backend.name != "cupy":
            return self.random(size, dtype)
        cupy = self._backend.xp
        seed = int(self.generator.integers(2**63))
        philox = cupy.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10  # cheap to seed per call
        return cupy.random.RandomState(seed, method=philox).random_sample(size, dtype=dtype)

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of ``range(n)`` (indices stay on the host for slicing data)."""
        return self.generator.permutation(n)

    def integers(self, low, high=None, size=None) -> np.ndarray:
        return self.generator.integers(low, high, size)

    @property
    def state(self) -> dict:
        return self.generator.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.generator.bit_generator.state = state


@dataclass
class Backend:
    """An array module and the device it runs on.

    Attributes: ``name`` ("numpy" or "cupy"), ``xp`` (the module), ``device`` ("cpu" or
    "cuda:N"), ``reason`` (why this backend was chosen, for ``gpunn info`` and logs),
    ``checks`` (each of :data:`CHECKS` tried on the way with "ok", "failed" or "not tried";
    empty when CuPy was not tried).
    """

    name: str
    xp: Any
    device: str
    reason: str = ""
    checks: tuple = ()
    _kernels: dict = field(default_factory=dict, repr=False)

    # -- transfers -------------------------------------------------------------------------
    def asarray(self, a, dtype=np.float32):
        """``a`` as an array of this backend, float32 unless ``dtype`` says otherwise.

        ``dtype=None`` keeps the input's dtype.
        """
        if self.name == "numpy":
            _refuse_foreign(a, "asarray")
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """A NumPy copy (or view, on the CPU) of ``a``."""
        if isinstance(a, np.ndarray) or np.isscalar(a):
            return np.asarray(a)
        get = getattr(a, "get", None)
        if get is not None:
            return get()
        return np.asarray(a)

    def from_dlpack(self, obj):
        """An array of this backend viewing ``obj`` (anything with ``__dlpack__``)."""
        return self.xp.from_dlpack(obj)

    # -- device ----------------------------------------------------------------------------
    def rng(self, seed: int | None = None) -> HostRNG:
        return HostRNG(self, seed)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU); call before reading a clock."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()

    def memory_info(self) -> dict:
        """Device memory in bytes: ``total``, ``free`` and ``used`` by gpunn's pool.

        On the CPU, ``total``/``free`` are the machine's RAM and ``used`` this process's RSS.
        """
        if self.name == "cupy":
            free, total = self.xp.cuda.runtime.memGetInfo()
            pool = self.xp.get_default_memory_pool()
            return {"total": int(total), "free": int(free), "used": int(pool.used_bytes())}
        return _host_memory()

    def free_memory(self) -> None:
        """Return cached device blocks to the driver (CuPy's pool); a no-op on the CPU."""
        if self.name == "cupy":
            self.xp.get_default_memory_pool().free_all_blocks()

    # -- kernels ---------------------------------------------------------------------------
    @property
    def kernel_backend(self) -> str:
        """The kernel implementation this backend asks the registry for first."""
        return "cupy" if self.name == "cupy" else "numba"

    def label_flag(self):
        """Where this backend's kernels record a label outside ``[0, K)``: a device flag on
        CuPy (its kernels do not wait for the GPU to say so; the training loop reads the flag
        once a chunk), None on the CPU, whose kernels raise at once."""
        if self.kernel_backend != "cupy":
            return None
        from gpunn.kernels import checks

        return checks.label_flag(self.xp)

    def kernel(self, op: str, reference: bool = False):
        """The implementation of kernel ``op`` for this backend (see ``gpunn.kernels``).

        ``reference=True`` gives the NumPy reference, which runs on any backend through
        ``xp``: the fallback when a fast kernel cannot take a configuration.
        """
        key = (op, reference)
        impl = self._kernels.get(key)
        if impl is None:
            from gpunn.kernels import registry

            kind = "numpy" if reference else self.kernel_backend
            impl = registry.lookup(op, kind, fallback="numpy")
            self._kernels[key] = impl
        return impl

    def first_compile_likely(self, ops=None) -> bool:
        """True when the CPU kernels of ``ops`` (names such as "conv2d", "dense_sgd"; default
        all) have never been compiled here, so their first call takes seconds to a minute:
        a command then says "compiling kernels (first run only)". False on CuPy."""
        if self.kernel_backend != "numba":
            return False
        from gpunn.kernels import registry

        return registry.first_compile_likely(ops)

    def __str__(self) -> str:
        return f"{self.name} ({self.device})"


# ---------------------------------------------------------------------------------------------
def select(device: str | None = "auto") -> Backend:
    """Choose the backend for ``device``: "auto", "cpu", "cuda" or "cuda:N".

    ``None`` or "auto" read ``$GPUNN_DEVICE`` first. "auto" gives CuPy only when it imports,
    reports a device, and a small allocation, a matmul (cuBLAS) and a compiled RawKernel
    (NVRTC and the CUDA headers) work on it; otherwise NumPy, with the reason in
    ``backend.reason``. "cuda"/"cuda:N" raise :class:`BackendUnavailable` when that fails.
    "auto" and "cuda" take CuPy's current device (``cupy.cuda.Device(1).use()`` stays in
    force); "cuda:N" makes GPU N current.
    """
    spec = (device or "auto").strip().lower()
    if spec == "auto":
        spec = (os.environ.get(ENV_VAR) or "auto").strip().lower()
    if spec == "cpu":
        return _numpy_backend("asked for --device cpu")
    if spec == "auto":
        try:
            return _cupy_backend(None)
        except BackendUnavailable as exc:
            reason = f"NumPy on the CPU: {exc.args[0]}"
            if reason not in _LOGGED:  # once per reason, not on every select()
                _LOGGED.add(reason)
                log.info("gpunn backend: %s", reason)
            return _numpy_backend(reason, _check_rows(exc.check) if exc.check else ())
    if spec == "cuda" or spec.startswith("cuda:"):
        index = None
        if spec.startswith("cuda:"):
            text = spec[5:]
            if not text.isdigit():
                raise ValueError(
                    f"device must be auto, cpu, cuda or cuda:N with N a GPU number; "
                    f"received {device!r}"
                )
            index = int(text)
        try:
            return _cupy_backend(index)
        except BackendUnavailable as exc:
            raise BackendUnavailable(exc.cause, spec, exc.hint, exc.check) from exc
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N; received {device!r}")


def _numpy_backend(reason: str, checks: tuple = ()) -> Backend:
    return Backend(name="numpy", xp=np, device="cpu", reason=reason, checks=checks)


def _check_rows(failed: str | None = None) -> tuple:
    """((check, "ok" | "failed" | "not tried"), ...) for :data:`CHECKS`; None: all passed."""
    at = len(CHECKS) if failed is None else CHECKS.index(failed)
    return tuple((c, "ok" if i < at else "failed" if i == at else "not tried")
                 for i, c in enumerate(CHECKS))


def _import_cupy():
    """Import CuPy, or raise BackendUnavailable naming why. Separate so tests can replace it.

    "not installed" only when the module ``cupy`` itself is missing; any other failure (a
    CUDA library that does not load, a wheel for another CUDA) passes CuPy's own diagnosis
    through, on one line.
    """
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name == "cupy":
            raise BackendUnavailable("CuPy is not installed", hint=INSTALL_HINT,
                                     check="import") from exc
        raise BackendUnavailable(f"CuPy failed to import: {_diagnosis(exc)}",
                                 hint=LIBRARY_HINT, check="import") from exc
    except Exception as exc:  # a broken CuPy install raises all sorts at import
        raise BackendUnavailable(f"CuPy failed to import: {_diagnosis(exc)}",
                                 hint=LIBRARY_HINT, check="import") from exc
    return cupy


def _diagnosis(exc: BaseException) -> str:
    """One line saying why: CuPy's "Original error" (its ImportError wraps the loader's
    message in a banner of advice), else the exception's own first line."""
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        return _first_line(cause)
    lines = [line.strip() for line in str(exc).splitlines()]
    if "Original error:" in lines:
        rest = [line for line in lines[lines.index("Original error:") + 1:]
                if line and set(line) != {"="}]
        if rest:
            return rest[0]
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and set(line.strip()) != {"="}]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cupy_backend(index: int | None) -> Backend:
    """CuPy on GPU ``index`` (None: CuPy's current device), once every check has passed."""
    cupy = _import_cupy()
    check = "device"
    try:
        # Not cupy.is_available(): it hides the driver's reason (no driver, no device, a
        # driver too old), which is what the user needs to read.
        count = cupy.cuda.runtime.getDeviceCount()
        if count == 0:
            raise BackendUnavailable("CuPy found no CUDA device", hint=DRIVER_HINT, check=check)
        if index is None:
            index = int(cupy.cuda.runtime.getDevice())
        if index >= count:
            raise BackendUnavailable(f"GPU {index} does not exist; this machine has {count}",
                                     hint=f"choose cuda:0 to cuda:{count - 1}", check=check)
        with cupy.cuda.Device(index):
            # With CuPy installed but no driver, import succeeds and the first allocation
            # raises CUDARuntimeError; without libcublas the first matmul does, and without
            # NVRTC or the CUDA headers the first kernel compile: make each happen here, not
            # in the first layer. Each step needs one more piece and none before NVRTC's
            # compiles a kernel (CuPy compiles even arange and sum), so the failure names
            # the piece that is missing. The driver: a copy there and back.
            probe = cupy.asarray(np.arange(4, dtype=np.float32).reshape(2, 2))
            probe.get()
            check = "cuBLAS"
            (probe @ probe).get()
            check = "NVRTC"
            from gpunn.kernels.cuda_sources import PROBE

            cupy.RawKernel(PROBE, "gpunn_probe")((1,), (4,), (probe,))
            probe.get()
        check = "device"
        if int(cupy.cuda.runtime.getDevice()) != index:
            cupy.cuda.Device(index).use()
        props = cupy.cuda.runtime.getDeviceProperties(index)
        gpu = props.get("name", b"GPU")
        gpu = gpu.decode() if isinstance(gpu, bytes) else str(gpu)
    except BackendUnavailable:
        raise
    except Exception as exc:  # CUDARuntimeError, CUDADriverError, ... carry the driver's words
        cause = _first_line(exc) if check == "device" else f"{check} failed: {_first_line(exc)}"
        raise BackendUnavailable(cause, hint=_HINTS[check], check=check) from exc
    return Backend(name="cupy", xp=cupy, device=f"cuda:{index}", reason=f"CuPy on {gpu}",
                   checks=_check_rows())


def _refuse_foreign(a, where: str) -> None:
    if type(a).__module__.startswith("cupy"):
        raise MixedArrayError(
            f"{where} on the NumPy backend received a CuPy array; move it to the host with "
            f"backend.to_numpy(a) or select the cupy backend"
        )


def array_module(*arrays):
    """NumPy or CuPy, whichever holds ``arrays`` (like ``cupy.get_array_module``).

    Works without CuPy installed. Raises :class:`MixedArrayError` when both kinds are given.
    """
    kinds = set()
    module = np
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy

            kinds.add("cupy")
            module = cupy
        elif isinstance(a, (np.ndarray, np.generic)):
            kinds.add("numpy")
    if len(kinds) > 1:
        raise MixedArrayError(
            "NumPy and CuPy arrays were mixed in one call; move them to one device first "
            "(backend.asarray(...) or backend.to_numpy(...))"
        )
    return module


def check_same_module(xp, *arrays, where: str = "gpunn") -> None:
    """Raise MixedArrayError when an array does not belong to ``xp`` (NumPy vs CuPy)."""
    want = "cupy" if xp.__name__.startswith("cupy") else "numpy"
    for a in arrays:
        mod = type(a).__module__
        got = "cupy" if mod.startswith("cupy") else "numpy" if isinstance(a, np.ndarray) else None
        if got is not None and got != want:
            raise MixedArrayError(
                f"{where} runs on {want} but received a {got} array; move it with "
                f"backend.asarray(...) / backend.to_numpy(...) first"
            )


def host_memory_available() -> int | None:
    """Bytes of host memory a new allocation can get without swapping (MemAvailable in
    /proc/meminfo), or None where the system does not say (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _host_memory() -> dict:
    total = free = 0
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        total, free = info.get("MemTotal", 0), info.get("MemAvailable", 0)
    except OSError:
        pass
    used = 0
    try:
        import resource

        used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        pass
    return {"total": total, "free": free, "used": used}


# -- CPU threads -----------------------------------------------------------------------------
_THREADS: dict[str, int] = {}  # "n" -> the count set_num_threads last applied



def cpu_count() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def num_threads() -> int:
    """The thread count :func:`set_num_threads` applied, else what it would apply."""
    return _THREADS.get("n") or _threads_wanted(None)


def _threads_wanted(n) -> int:
    if n is None:
        value = os.environ.get(THREADS_VAR, "").strip()
        if not value:
            return cpu_count()
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"${THREADS_VAR} must be a whole number >= 1; it is {value!r}: "
                             f"set it to a thread count such as 2, or unset it to use every "
                             f"core")
        n = int(value)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"threads must be a whole number >= 1; received {n!r}")
    return int(n)


def set_num_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads in BLAS (through threadpoolctl) and in the Numba kernels.

    ``None`` reads ``$GPUNN_NUM_THREADS``, else takes every core. Numba cannot start more
    threads than its pool (``$NUMBA_NUM_THREADS``, default every core), so a larger ``n`` is
    capped there; the count applied is returned. Call it before training, from the thread
    that trains (Numba's setting is per calling thread); it imports Numba and threadpoolctl.
    """
    n = _threads_wanted(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")  # stays in force: not used as a context
    from gpunn.kernels.registry import prepare_numba_threads

    prepare_numba_threads()  # before Numba starts its threads
    import numba

    applied = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(applied)
    if applied < n:
        message = (f"Numba's thread pool has {applied} threads ($NUMBA_NUM_THREADS); its "
                   f"kernels use {applied}, BLAS uses {n}")
        if message not in _LOGGED:
            _LOGGED.add(message)
            log.warning(message)
    if n > 1:
        _warn_if_blas_spins()
    _THREADS["n"] = n
    return n


def _warn_if_blas_spins() -> None:
    """Warn once when OpenBLAS was loaded before gpunn could ask its threads to sleep."""
    import gpunn

    if gpunn._BLAS_SPINS:
        message = ("NumPy was imported before gpunn, so OpenBLAS's idle threads spin and can "
                   "stall the CPU kernels' threads: import gpunn before NumPy, or set "
                   "OPENBLAS_THREAD_TIMEOUT=4 in the environment")
        if message not in _LOGGED:
            _LOGGED.add(message)
            log.warning(message)
