"""Compile CUDA C with NVRTC through ctypes: checking GPU kernels on a machine without a GPU.

CuPy compiles ``RawKernel`` sources with NVRTC at first use, on the GPU machine. This module
calls the same library directly (no CuPy, no driver, no GPU needed), so a test can fail with
the compiler's log when a kernel source would not compile for an architecture::

    ptx = nvrtc.compile(source, arch="compute_90")      # NvrtcError with the log on failure

The library comes from the ``nvidia-cuda-nvrtc-cu12`` wheel (``pip install gpunn[dev]``), else
from ``$CUDA_HOME`` or the linker's search path. It leaves out linking and loading modules.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os

# The options gpunn's ``*_cupy`` modules give RawModule: C++17.
CUPY_OPTIONS = ("-std=c++17",)
# What CuPy adds to every compile besides ``-arch`` and its include paths (cupy.cuda.compiler,
# 13.x and 14.x): flush-to-zero. Denormal results become 0 and denormal operands read as 0, so
# ``max(p, 1e-45f)`` compiles to ``max.ftz.f32`` and no longer clamps: clamp at
# ``finfo(dtype).tiny`` (the smallest normal) or work in log space instead.
CUPY_ADDS = ("-ftz=true",)
# The options NVRTC sees when CuPy compiles a gpunn kernel: what the tests compile with.
CUPY_COMPILE = CUPY_OPTIONS + CUPY_ADDS


class NvrtcError(RuntimeError):
    """NVRTC could not be loaded, or a source failed to compile (the message holds the log)."""


def _candidates() -> list[str]:
    paths = []
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        paths += sorted(glob.glob(os.path.join(root, "cuda_nvrtc", "lib", "libnvrtc.so*")))
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            paths += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        paths.append(found)
    # libnvrtc.alt.so is a variant build; the plain name is what CuPy loads.
    return [p for p in paths if ".alt." not in os.path.basename(p)]


_LIB = None


def library() -> ctypes.CDLL:
    """The loaded NVRTC library; :class:`NvrtcError` naming where it looked if none loads."""
    global _LIB
    if _LIB is None:
        tried = _candidates()
        for path in tried:
            try:
                _LIB = ctypes.CDLL(path)
                break
            except OSError:
                continue
        else:
            raise NvrtcError(
                "libnvrtc was not found (looked in the nvidia-cuda-nvrtc-cu12 wheel, $CUDA_HOME, "
                f"/usr/local/cuda and the linker path; tried {tried or 'nothing'}); "
                "install it with: pip install nvidia-cuda-nvrtc-cu12"
            )
        _LIB.nvrtcGetErrorString.restype = ctypes.c_char_p
    return _LIB


def version() -> tuple[int, int]:
    """NVRTC's (major, minor) version."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(library().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def _check(result: int, call: str) -> None:
    if result != 0:
        message = library().nvrtcGetErrorString(result).decode()
        raise NvrtcError(f"{call} failed: {message}")


def compile(source: str, arch: str = "compute_90", options=CUPY_COMPILE, name="kernel.cu") -> bytes:
    """PTX (``compute_XX``) or CUBIN (``sm_XX``) of ``source``; NvrtcError with the log if not."""
    lib = library()
    program = ctypes.c_void_p()
    _check(
        lib.nvrtcCreateProgram(
            ctypes.byref(program), source.encode(), name.encode(), 0, None, None
        ),
        "nvrtcCreateProgram",
    )
    try:
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in options)]
        argv = (ctypes.c_char_p * len(opts))(*opts)
        result = lib.nvrtcCompileProgram(program, len(opts), argv)
        size = ctypes.c_size_t()
        _check(lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        log = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
        if result != 0:
            message = lib.nvrtcGetErrorString(result).decode()
            raise NvrtcError(
                f"NVRTC could not compile {name} for {arch} with options {list(options)} "
                f"({message}):\n{log.value.decode(errors='replace')}"
            )
        cubin = arch.startswith("sm_")
        if cubin:
            get_size, get = lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN
        else:
            get_size, get = lib.nvrtcGetPTXSize, lib.nvrtcGetPTX
        _check(get_size(program, ctypes.byref(size)), "nvrtcGet size")
        code = ctypes.create_string_buffer(size.value)
        _check(get(program, code), "nvrtcGet code")
        return code.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))
