"""The kernel registry: every op on every backend, lazy imports, helpful lookup errors."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from gpunn.kernels import KernelNotFound, available, lookup, register, registry

OPS = ("conv2d", "max_pool2d", "softmax_cross_entropy")


def test_every_op_has_every_backend():
    table = available()
    for op in OPS:
        assert table[op] == ["cupy", "numba", "numpy"], f"{op}: {table.get(op)}"


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kernel_backend", ["numpy", "numba"])
def test_cpu_implementations_load_with_forward_and_backward(op, kernel_backend):
    impl = lookup(op, kernel_backend)
    assert impl.backend == kernel_backend
    assert callable(impl.forward) and callable(impl.backward)


def test_backend_asks_for_numba_on_the_cpu(backend):
    assert backend.kernel("conv2d").backend == backend.kernel_backend


def test_missing_pair_lists_what_exists():
    with pytest.raises(KernelNotFound, match=r"no kernel 'lstm'.*registered: conv2d/cupy"):
        lookup("lstm", "numba")


def test_fallback_and_bad_backend(monkeypatch):
    monkeypatch.setattr(registry, "_TABLE", dict(registry._TABLE))
    monkeypatch.setattr(registry, "_LOADED", {})
    register("only_numpy", "numpy", "gpunn.kernels.conv:conv2d")
    assert lookup("only_numpy", "cupy", fallback="numpy").backend == "numpy"
    with pytest.raises(ValueError, match="kernel backend must be one of"):
        register("x", "opencl", "m:a")


def test_import_compiles_and_imports_nothing_heavy():
    code = (
        "import sys, gpunn, gpunn.kernels\n"
        "heavy = sorted(m for m in ('numba', 'cupy', 'torch') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cuda_sources_live_in_kernels_only():
    library = pathlib.Path(__file__).resolve().parents[2] / "gpunn"
    offenders = [p.name for p in library.rglob("*.py") if "__global__" in p.read_text()]
    assert not offenders, f"CUDA source in gpunn/ (belongs in kernels/): {offenders}"
