"""`gpunn train` under SIGINT/SIGTERM, divergence, a full disk and GPU out of memory: each
gives its exit status and one line, and an interrupted run resumes exactly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from gpunn.cli.main import cli

TRAIN = ["train", "--sizes", "784,20,10", "--batch-size", "10", "--seed", "2", "-q"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def interrupted(sig, data_dir, *extra):
    """Start a long `gpunn train`, send ``sig`` once the first epoch is done."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpunn.cli.main", *TRAIN[:-1], "--epochs", "1000",
         "--data-dir", str(data_dir), *map(str, extra)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch"):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err.strip().splitlines()


def weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta.json"}


def test_sigint_writes_a_checkpoint_that_resumes_exactly(data_dir, tmp_path):
    ck = tmp_path / "ck"
    code, err = interrupted(signal.SIGINT, data_dir, "--checkpoint-dir", ck,
                            "--checkpoint-every", 7)
    assert code == 130, err
    assert f"resume with: gpunn train --resume {ck}" in err[-1], err
    state = json.loads(np.load(sorted(ck.glob("ckpt-*.npz"))[-1])["meta.json"].tobytes())
    epochs = state["state"]["epoch"] + 2
    r = run(*TRAIN, "--data-dir", data_dir, "--resume", ck, "--epochs", epochs,
            "--save", tmp_path / "resumed.npz", "--metrics-json", tmp_path / "resumed.json")
    assert r.exit_code == 0, r.output
    r = run(*TRAIN, "--data-dir", data_dir, "--epochs", epochs,
            "--save", tmp_path / "straight.npz", "--metrics-json", tmp_path / "straight.json")
    assert r.exit_code == 0, r.output
    a, b = weights(tmp_path / "resumed.npz"), weights(tmp_path / "straight.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    untimed = [[{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")}
                for e in json.loads((tmp_path / f"{name}.json").read_text())["epochs"]]
               for name in ("resumed", "straight")]
    assert untimed[0] == untimed[1]


def test_sigterm_exits_143_and_without_a_checkpoint_dir_says_so(data_dir):
    code, err = interrupted(signal.SIGTERM, data_dir)
    assert code == 143, err
    assert err[-1].startswith("gpunn: SIGTERM: stopped")  # one line after the banner
    assert "no --checkpoint-dir was given, so there is nothing to resume" in err[-1]


def test_resume_with_another_architecture_names_both(data_dir, tmp_path):
    ck = tmp_path / "ck"
    assert run(*TRAIN, "--data-dir", data_dir, "--epochs", 1, "--checkpoint-dir", ck
               ).exit_code == 0
    r = run(*TRAIN, "--data-dir", data_dir, "--resume", ck, "--sizes", "784,30,10")
    assert r.exit_code == 2
    assert "--sizes 784,30,10 differs from the run in" in r.output
    assert "(--sizes 784,20,10)" in r.output


def test_divergence_exits_3_naming_epoch_batch_eta_and_the_last_checkpoint(data_dir, tmp_path):
    ck = tmp_path / "ck"
    assert run(*TRAIN, "--data-dir", data_dir, "--epochs", 1, "--checkpoint-dir", ck
               ).exit_code == 0
    r = run(*TRAIN, "--data-dir", data_dir, "--resume", ck, "--epochs", 3, "--eta", 1e40)
    assert r.exit_code == 3, r.output
    line = r.output.strip()
    assert "\n" not in line and "training diverged in epoch 2, mini-batch 1 at eta 1e+40" in line
    assert f"the last good checkpoint is {ck / 'ckpt-000001.npz'}" in line
    r = run(*TRAIN, "--data-dir", data_dir, "--epochs", 1, "--eta", 1e40,
            "--on-nan", "halve-eta")
    assert r.exit_code == 0, r.output


def test_a_checkpoint_dir_that_cannot_be_written_is_one_line_exit_2(data_dir, tmp_path):
    (tmp_path / "file").write_text("")
    r = run(*TRAIN, "--data-dir", data_dir, "--epochs", 1, "--checkpoint-dir",
            tmp_path / "file" / "ck", "--save", tmp_path / "net.npz")
    assert r.exit_code == 2, r.output
    line = r.output.strip()  # refused before training, not after it
    assert "\n" not in line and line.startswith("gpunn: error: --checkpoint-dir"), r.output
    assert "epoch" not in line and not (tmp_path / "net.npz").exists()


@pytest.mark.parametrize("option", ["--save", "--metrics-json", "--plot"])
def test_an_output_that_cannot_be_written_is_refused_before_training(option, data_dir,
                                                                      tmp_path):
    r = run(*TRAIN, "--data-dir", data_dir, "--epochs", 1, option,
            tmp_path / "missing" / "out.x")
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and line.startswith(f"gpunn: error: {option}"), r.output
    assert "does not exist" in line and not (tmp_path / "missing").exists()


def test_gpu_out_of_memory_is_one_line_exit_4(data_dir, monkeypatch):
    OutOfMemoryError = type("OutOfMemoryError", (MemoryError,),
                            {"__module__": "cupy.cuda.memory"})

    def sgd(self, *args, **kwargs):
        exc = OutOfMemoryError("Out of memory allocating 2,097,152 bytes "
                               "(allocated so far: 0 bytes).")
        raise exc

    monkeypatch.setattr("gpunn.network.Network.sgd", sgd)
    r = run(*TRAIN, "--data-dir", data_dir, "--epochs", 1, "--batch-size", 64)
    assert r.exit_code == 4, r.output
    line = r.output.strip()
    assert "\n" not in line and "out of memory allocating 2.0 MiB" in line
    assert "MiB free" in line and "with --batch-size 64; try a smaller --batch-size" in line


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "0"], "0 is not in the range x>=1"),
    (["train", "--checkpoint-every", "-1"], "-1 is not in the range x>=0"),
    (["train", "--keep", "0"], "0 is not in the range x>=1"),
    (["train", "--on-nan", "ignore"], "'ignore' is not one of 'stop', 'skip-batch'"),
    (["train", "--momentum", "1"], "1.0 is not in the range 0<=x<1"),
    (["train", "--resume"], "--resume needs a checkpoint"),
    (["reproduce", "ch1", "--seeds", "0"], "0 is not in the range x>=1"),
    (["evaluate", "missing.npz"], "model file missing.npz does not exist"),
    (["data", "fetch", "cifar"], "'cifar' is not one of 'mnist', 'fashion-mnist'"),
])
def test_bad_options_are_one_line_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # restored after the test, unlike os.chdir
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and message in r.output, r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("eta", ["3.0", "0.5"])
def test_an_overfitting_run_is_silent_with_warnings_as_errors(eta, data_dir):
    """Chapter 3's overfitting picture, small: a long cross-entropy run on few images, with
    every Python warning an error; it completes (exit 0) and stderr stays empty."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "gpunn.cli.main", "train", "--sizes", "784,30,10",
         "--cost", "cross-entropy", "--train-size", "100", "--epochs", "150", "--eta", eta,
         "--data-dir", str(data_dir), "--monitor-training"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert "test accuracy" in proc.stdout


def test_a_diverging_run_is_one_line_even_with_warnings_as_errors(data_dir):
    """Real divergence: exit 3 and the guard's one line; NumPy's overflow warnings on the
    way to NaN neither print nor (as errors) turn it into a traceback."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "gpunn.cli.main", *TRAIN, "--epochs", "2",
         "--eta", "1e40", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunn: error: training diverged"), lines
