"""benchmarks/gpu_check.{sh,py} on a machine without a GPU: the refusal, the arguments, and
the parity sweep's comparisons, run with the CUDA-on-CPU stand-in as the "GPU"."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
cuda_on_cpu = _load("cuda_on_cpu", ROOT / "tests" / "kernels" / "cuda_on_cpu.py")


def _run_script(*args, **env):
    # CUDA_VISIBLE_DEVICES="" hides every GPU from CuPy, so this refuses on any machine
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_script_refuses_in_one_line_without_a_gpu():
    done = _run_script()
    assert done.returncode == 3, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: needs an NVIDIA GPU"), lines
    assert "run it on a GPU machine" in lines[0] and not done.stdout


@pytest.mark.parametrize("args, words", [
    (["--bogus"], "unknown argument '--bogus'; usage: bash benchmarks/gpu_check.sh"),
    (["--data-dir"], "--data-dir needs a directory"),
    (["--data-dir", "/no/such/dir"], "/no/such/dir does not exist"),
])
def test_script_refuses_bad_arguments_before_looking_for_a_gpu(args, words):
    done = _run_script(*args)
    assert done.returncode == 2 and words in done.stderr, done
    assert len(done.stderr.strip().splitlines()) == 1


def test_script_names_an_interpreter_without_gpunn():
    done = _run_script(PYTHON="/bin/false")
    assert done.returncode == 4 and "set PYTHON to the interpreter" in done.stderr, done


def test_script_help_lists_every_step():
    done = _run_script("--help")
    assert done.returncode == 0
    for words in ("pytest -m gpu", "parity", "fused", "train --device cuda", "bench_convnet",
                  "alexnet at 224"):
        assert words in done.stdout, words


def test_require_gpu_exits_3_with_one_line(capsys):
    from gpunn.backend import BackendUnavailable

    def no_gpu(device):
        raise BackendUnavailable("CUDA driver not found", device)

    with pytest.raises(SystemExit) as exit_info:
        gpu_check.require_gpu(no_gpu)
    assert exit_info.value.code == gpu_check.NO_GPU == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(CUDA driver not found)" in err


def test_compare_judges_values_and_shapes():
    a = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert gpu_check.compare("same", a, a.copy(), 1e-4, 1e-4)[-1] == "ok"
    off = a.copy()
    off[1, 2] += 0.01
    row = gpu_check.compare("off", a, off, 1e-4, 1e-4)
    assert row[-1] == "MISMATCH" and row[1] == "0.01", row
    row = gpu_check.compare("shape", a, a.T, 1e-4, 1e-4)
    assert row[-1] == "MISMATCH" and "cpu=(3, 4) | gpu=(4, 3)" in row[1]
    nan = a.copy()
    nan[0, 0] = np.nan
    assert gpu_check.compare("nan", a, nan, 1e-4, 1e-4)[-1] == "MISMATCH"
    assert gpu_check.accuracy_row("acc", 0.9512, 0.9490)[-1] == "ok"
    assert gpu_check.accuracy_row("acc", 0.9512, 0.9300)[-1] == "MISMATCH"


@pytest.fixture
def stand_in_gpu(monkeypatch):
    """Kernel lookups for the sweep: (cpu, gpu), the gpu side the real *_cupy modules on the
    CUDA-on-CPU stand-in."""
    from gpunn.kernels import lookup, registry

    cuda_on_cpu.install(monkeypatch)
    monkeypatch.setattr(registry, "_LOADED", {})  # nothing of the stand-in outlives the test
    return (lambda op: lookup(op, "numpy")), (lambda op: lookup(op, "cupy"))


def test_kernel_parity_passes_the_cuda_kernels_on_the_stand_in(stand_in_gpu):
    rows = gpu_check.kernel_parity(*stand_in_gpu, np.asarray, np.asarray)
    ops = {row[0].split()[0] for row in rows}
    assert ops == {"conv2d", "conv_pool", "max_pool2d", "softmax_cross_entropy", "dense_sgd"}, ops
    assert not gpu_check.failed(rows), rows


def test_kernel_parity_catches_a_wrong_gpu_kernel(stand_in_gpu):
    cpu, gpu = stand_in_gpu

    class Off:  # a GPU max_pool2d whose output is off by a little
        def __init__(self, kernel):
            self.kernel = kernel

        def forward(self, x, *args):
            out, cache = self.kernel.forward(x, *args)
            return out + 1e-3, cache

        def backward(self, dout, cache):
            return self.kernel.backward(dout, cache)

    rows = gpu_check.kernel_parity(
        cpu, lambda op: Off(gpu(op)) if op == "max_pool2d" else gpu(op), np.asarray, np.asarray)
    assert [row[0] for row in gpu_check.failed(rows)] == ["max_pool2d out"], rows


def test_epoch_parity_and_fused_timing_on_the_cpu():
    r = np.random.default_rng(0)
    X, y = r.random((300, 784), dtype=np.float32), r.integers(0, 10, 300)
    rows = gpu_check.epoch_parity((X, y), (X, y), "cpu")
    assert rows[0][0] == "one epoch: accuracy" and not gpu_check.failed(rows), rows
    step, seconds = gpu_check.fused_epoch((X, y), "cpu", repeat=1)
    assert step == "fused dense" and seconds > 0
    body, ok = gpu_check.fused_body(("fused dense", 0.05), ("fused dense", 0.08), "cuda:0")
    assert ok and "met" in body and "0.62x" in body
    body, ok = gpu_check.fused_body(("layer by layer", 0.05), ("fused dense", 0.08), "cuda:0")
    assert not ok and "NOT met" in body


def test_summary_body():
    body, ok = gpu_check.summary_body(["pytest -m gpu|ok|41", "parity|failed|12"])
    assert not ok and "| parity | failed | 12 |" in body
    assert gpu_check.summary_body(["a|ok|1"])[1]
    with pytest.raises(SystemExit, match=re.escape("expects 'step|status|seconds'")):
        gpu_check.summary_body(["no bars"])


BOOK_MNIST = ROOT.parent / "shared" / "data" / "mnist.pkl.gz"


@pytest.mark.skipif(not BOOK_MNIST.exists(), reason="needs the book's mnist.pkl.gz in shared/")
def test_train_run_reads_back_the_cli_metrics():
    result = gpu_check.train_run("cpu", BOOK_MNIST, epochs=1)
    assert result["device"] == "cpu" and len(result["epochs"]) == 1
    assert 0.8 < result["test_accuracy"] <= 1 and result["wall_seconds"] >= result["seconds"]
