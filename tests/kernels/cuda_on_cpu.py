"""Running gpunn's CUDA kernels on the CPU, for tests on machines without a GPU.

A stand-in ``cupy`` module: arrays are NumPy arrays, ``cupy.matmul`` is NumPy's, and
``cupy.RawModule`` compiles the CUDA C source with the host C++ compiler behind a small shim
(``__global__``, ``__device__`` and ``__shared__`` erased, ``threadIdx``/``blockIdx`` per host
thread, ``__syncthreads`` a barrier). Launches run every block of the grid, one after another; a
kernel that synchronises runs its block's threads as real threads meeting at the barrier, the
others run them one by one. The ``*_cupy`` modules of gpunn.kernels then run unchanged —
their Python glue and their CUDA index arithmetic — against the NumPy references.

Kernels run as CuPy compiles them, with flush-to-zero (CuPy passes ``-ftz=true`` to NVRTC for
every kernel): each kernel thread sets the SSE flags FTZ and DAZ, so a denormal result becomes
0 and a denormal operand reads as 0, and a clamp such as ``max(p, 1e-45f)`` that vanishes on the
GPU vanishes here too. The flags flush doubles as well, where ``-ftz`` flushes floats only:
stricter than the GPU. ``RawModule(..., flush_denormals=False)`` runs IEEE denormals instead.

It emulates the CUDA execution model, not a GPU: no warps, no memory model beyond a barrier.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

SHIM = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <thread>
#include <vector>
#include <xmmintrin.h>
using std::exp; using std::log; using std::tanh; using std::min; using std::max;
struct gpunn_dim3 { unsigned x, y, z; };
static thread_local gpunn_dim3 threadIdx, blockIdx;
static gpunn_dim3 blockDim, gridDim;
static std::barrier<>* gpunn_barrier = nullptr;
static inline void __syncthreads() { gpunn_barrier->arrive_and_wait(); }
#define __global__
#define __device__
#define __shared__ static

// -ftz=true as CuPy compiles: FTZ (bit 15) flushes denormal results, DAZ (bit 6) reads
// denormal operands as zero. MXCSR is per thread; the caller's is restored after a launch.
static const unsigned gpunn_ftz_daz = GPUNN_FLUSH_DENORMALS ? 0x8040u : 0u;

template <typename F>
static void gpunn_launch(unsigned grid, unsigned block, bool sync, F body) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    const unsigned saved_csr = _mm_getcsr();
    _mm_setcsr(saved_csr | gpunn_ftz_daz);
    for (unsigned b = 0; b < grid; ++b) {
        if (!sync) {
            for (unsigned t = 0; t < block; ++t) {
                blockIdx = {b, 0, 0};
                threadIdx = {t, 0, 0};
                body();
            }
            continue;
        }
        std::barrier<> bar(block);
        gpunn_barrier = &bar;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([=] {
                _mm_setcsr(_mm_getcsr() | gpunn_ftz_daz);
                blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0}; body();
            });
        for (auto& th : threads) th.join();
    }
    _mm_setcsr(saved_csr);
}
"""

_KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)\s*\{', re.S)


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++")


def _params(text: str) -> list[tuple[str, str]]:
    out = []
    for p in (q.strip() for q in text.split(",")):
        name = re.findall(r"\w+", p)[-1]
        out.append((p[: p.rfind(name)].strip(), name))
    return out


def _body_uses_sync(code: str, start: int) -> bool:
    depth, i = 0, code.index("{", start)
    for j in range(i, len(code)):
        depth += {"{": 1, "}": -1}.get(code[j], 0)
        if depth == 0:
            return "__syncthreads" in code[i:j]
    return False


class _Function:
    # CuPy's RawKernel attribute: the largest block the compiled kernel launches with
    # (registers permitting); host threads have no such limit.
    max_threads_per_block = 1024

    def __init__(self, fn, params, real):
        self.fn, self.params, self.real = fn, params, real

    def __call__(self, grid, block, args):
        c_args = [ctypes.c_uint(grid[0]), ctypes.c_uint(block[0])]
        for (ctype, _), a in zip(self.params, args, strict=True):
            if "*" in ctype:
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous, ctype
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            elif "long long" in ctype:
                c_args.append(ctypes.c_longlong(int(a)))
            elif "int" in ctype:
                c_args.append(ctypes.c_int(int(a)))
            elif ctype.endswith("real"):
                c_args.append(self.real(float(a)))
            else:
                raise TypeError(f"no conversion for a parameter of type {ctype!r}")
        self.fn(*c_args)


class RawModule:
    """``cupy.RawModule(code=..., options=...)`` compiled for the host."""

    _cache: dict = {}

    def __init__(self, code: str, options=(), flush_denormals: bool = True):
        real = ctypes.c_double if "typedef double real" in code else ctypes.c_float
        kernels = [(m.group(1), _params(m.group(2)), _body_uses_sync(code, m.start()))
                   for m in _KERNEL.finditer(code)]
        launchers = []
        for name, params, sync in kernels:
            decl = ", ".join(f"{t} {n}" for t, n in params)
            call = ", ".join(n for _, n in params)
            launchers.append(
                f'extern "C" void launch_{name}(unsigned grid, unsigned block, {decl}) '
                f'{{ gpunn_launch(grid, block, {str(sync).lower()}, [=] {{ {name}({call}); }}); }}'
            )
        text = (f"#define GPUNN_FLUSH_DENORMALS {int(flush_denormals)}\n" + SHIM + code + "\n"
                + "\n".join(launchers) + "\n")
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        lib = self._cache.get(key)
        if lib is None:
            build = Path(tempfile.gettempdir()) / f"gpunn-cuda-on-cpu-{key}"
            so = build / "kernels.so"
            if not so.exists():
                build.mkdir(exist_ok=True)
                (build / "kernels.cpp").write_text(text)
                subprocess.run([compiler(), "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
                                "-o", str(so), str(build / "kernels.cpp")], check=True,
                               capture_output=True, text=True)
            lib = self._cache[key] = ctypes.CDLL(str(so))
        self._functions = {name: _Function(getattr(lib, f"launch_{name}"), params, real)
                           for name, params, _ in kernels}

    def get_function(self, name: str):
        return self._functions[name]


class DeviceArray(np.ndarray):
    """An array on the stand-in's "device": NumPy memory, but reading a value on the host
    (``get()``, ``int()``, ``float()``, ``bool()``, ``item()``) counts as a wait for the GPU in
    ``DeviceArray.syncs``, so a test can say that a step never waits. Indexing one element
    gives a NumPy scalar (CuPy gives a 0-d array): such reads are not counted."""

    syncs = 0

    def _sync(self):
        DeviceArray.syncs += 1
        return self.view(np.ndarray)

    def get(self):
        return self._sync().copy()

    def __int__(self):
        return int(self._sync())

    def __float__(self):
        return float(self._sync())

    def __bool__(self):
        return bool(self._sync())

    def item(self, *args):
        return self._sync().item(*args)


def _device(fn):
    def make(*args, **kwargs):
        return np.asarray(fn(*args, **kwargs)).view(DeviceArray)
    return make


def _refuse_host(fn):
    def on_device(a, *args, **kwargs):
        if not isinstance(a, DeviceArray):  # CuPy's words for a NumPy array
            raise TypeError(f"Unsupported type {type(a)}")
        return np.asarray(fn(a, *args, **kwargs)).view(DeviceArray)
    return on_device


def fake_cupy(strict: bool = False) -> types.ModuleType:
    """A ``cupy`` module good enough for gpunn.kernels' ``*_cupy`` modules, on NumPy.

    ``strict``: arrays are :class:`DeviceArray` (host reads are counted) and, as in CuPy,
    ``ascontiguousarray`` refuses a host (NumPy) array where ``asarray`` copies it over."""
    cp = types.ModuleType("cupy")
    for name in ("empty", "empty_like", "zeros", "zeros_like", "ascontiguousarray", "matmul",
                 "dtype", "int32", "int64", "float32", "float64", "asarray", "arange",
                 "maximum", "where", "stack", "clip"):
        setattr(cp, name, getattr(np, name))
    cp.asnumpy = lambda a: np.array(a.get() if isinstance(a, DeviceArray) else a)
    cp.RawModule = RawModule
    cp.ndarray = np.ndarray
    cp.cuda = types.SimpleNamespace(get_device_id=lambda: 0)
    if strict:
        for name in ("empty", "empty_like", "zeros", "zeros_like", "asarray", "arange"):
            setattr(cp, name, _device(getattr(np, name)))
        cp.ascontiguousarray = _refuse_host(np.ascontiguousarray)
        cp.ndarray = DeviceArray
    return cp


def install(monkeypatch, strict: bool = False) -> None:
    """Make ``import cupy`` give the stand-in and re-import the CuPy kernel modules with it."""
    from gpunn.kernels import registry

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(strict))
    gpu_modules = {target.split(":")[0] for (_, kind), target in registry._TABLE.items()
                   if kind == "cupy"} | {"gpunn.kernels.cupy_module"}
    gpu_modules |= {m for m in sys.modules if m.startswith("gpunn.kernels.") and
                    (m.endswith("_cupy") or m.endswith("cupy_module"))}
    for mod in gpu_modules:
        # set, then delete: the undo restores what was there, and forgets a module the test
        # imported against the stand-in, so that a later test on a real GPU imports CuPy's
        monkeypatch.setitem(sys.modules, mod, None)
        monkeypatch.delitem(sys.modules, mod)
