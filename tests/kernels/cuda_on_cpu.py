"""Running gpunn's CUDA kernels on the CPU, for tests on machines without a GPU.

A stand-in ``cupy`` module: arrays are NumPy arrays, ``cupy.matmul`` is NumPy's, and
``cupy.RawModule`` compiles the CUDA C source with the host C++ compiler behind a small shim
(``__global__`` and ``__shared__`` erased, ``threadIdx``/``blockIdx`` per host thread,
``__syncthreads`` a barrier). Launches run every block of the grid, one after another; a
kernel that synchronises runs its block's threads as real threads meeting at the barrier, the
others run them one by one. The ``*_cupy`` modules of gpunn.kernels then run unchanged —
their Python glue and their CUDA index arithmetic — against the NumPy references.

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
using std::exp; using std::log; using std::min; using std::max;
struct gpunn_dim3 { unsigned x, y, z; };
static thread_local gpunn_dim3 threadIdx, blockIdx;
static gpunn_dim3 blockDim, gridDim;
static std::barrier<>* gpunn_barrier = nullptr;
static inline void __syncthreads() { gpunn_barrier->arrive_and_wait(); }
#define __global__
#define __shared__ static

template <typename F>
static void gpunn_launch(unsigned grid, unsigned block, bool sync, F body) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
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
            threads.emplace_back([=] { blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0}; body(); });
        for (auto& th : threads) th.join();
    }
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

    def __init__(self, code: str, options=()):
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
        text = SHIM + code + "\n" + "\n".join(launchers) + "\n"
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


def fake_cupy() -> types.ModuleType:
    """A ``cupy`` module good enough for gpunn.kernels' ``*_cupy`` modules, on NumPy."""
    cp = types.ModuleType("cupy")
    for name in ("empty", "empty_like", "zeros", "zeros_like", "ascontiguousarray", "matmul",
                 "dtype", "int32", "int64", "float32", "float64", "asarray", "arange"):
        setattr(cp, name, getattr(np, name))
    cp.RawModule = RawModule
    cp.ndarray = np.ndarray
    return cp


def install(monkeypatch) -> None:
    """Make ``import cupy`` give the stand-in and re-import the CuPy kernel modules with it."""
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    for mod in [m for m in sys.modules if m.startswith("gpunn.kernels.") and
                (m.endswith("_cupy") or m.endswith("cupy_module"))]:
        monkeypatch.delitem(sys.modules, mod)
