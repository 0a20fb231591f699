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


# -- Numba's on-disk cache ------------------------------------------------------------------
READ_ONLY_INSTALL = """
import os, sys, pathlib
import numpy as np
from gpunn.kernels import registry
# the installed kernels' folder made unusable (a path under a regular file: refused even
# for root), as in a read-only system or container install
blocker = pathlib.Path(sys.argv[1]) / "not-a-folder"
blocker.write_text("")
registry._KERNELS_DIR = blocker
print(registry.first_compile_likely(["gather_rows"]))
impl = registry.lookup("gather_rows", "numba")
rows = impl.forward(np.arange(12, dtype=np.uint8).reshape(4, 3), np.array([2, 0]), 1.0 / 255)
assert rows.shape == (2, 3), rows.shape
print(os.environ["NUMBA_CACHE_DIR"])
print(registry.first_compile_likely(["gather_rows"]))
"""


def test_a_read_only_install_caches_compiled_kernels_in_gpunns_cache(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-c", READ_ONLY_INSTALL, str(tmp_path)], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    before, cache, after = out.stdout.split()
    assert cache == str(tmp_path / "cache" / "gpunn" / "numba")
    assert list((tmp_path / "cache" / "gpunn" / "numba").rglob("gather_numba.*.nbi"))
    assert (before, after) == ("True", "False")  # compiled once, then found on disk


def test_the_users_numba_cache_dir_is_kept(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_NUMBA_CACHE", {})
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert registry.prepare_numba_cache() == tmp_path / "mine"
    assert registry.first_compile_likely(["conv2d"])  # nothing compiled there yet
    (tmp_path / "mine" / "sub").mkdir(parents=True)
    (tmp_path / "mine" / "sub" / "conv_numba._im2col-63.py311.nbi").write_bytes(b"")
    assert not registry.first_compile_likely(["conv2d"])
    assert registry.first_compile_likely(["conv2d", "max_pool2d"])


def test_a_writable_install_keeps_numbas_default(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_NUMBA_CACHE", {})
    monkeypatch.setattr(registry, "_KERNELS_DIR", tmp_path / "kernels")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert registry.prepare_numba_cache() == tmp_path / "kernels" / "__pycache__"
    assert "NUMBA_CACHE_DIR" not in __import__("os").environ
