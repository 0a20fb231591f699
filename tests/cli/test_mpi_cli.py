"""`mpiexec -n 2 gpunn train`: one report, rank 0's files, the weights of one process, a
failing rank ending the job, Ctrl-C's checkpoint resumed at another rank count.

Each test starts its own ``mpiexec`` and one-process runs as subprocesses (a clean
environment, so they are not taken for ranks of the job pytest runs in: an in-process run
would wait for the other ranks) and runs on rank 0 only: the other ranks skip it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.mpi
TRAIN = ["train", "--sizes", "784,20,10", "--batch-size", "10", "--seed", "2"]
LAUNCHER_VARS = ("PMI_", "PMIX_", "HYDRA_", "HYDI_", "MPI_LOCAL", "OMPI_", "MPIR_", "I_MPI_")


@pytest.fixture(autouse=True)
def rank_zero(comm):
    if comm.rank != 0:
        pytest.skip("starts its own mpiexec: rank 0 only")
    if shutil.which("mpiexec") is None:
        pytest.fail("the mpi tests need mpiexec: pip install -e '.[mpi]'")


def mpiexec(n, *args, timeout=120, popen=False):
    """Run ``args`` on ``n`` ranks (n = 0: one process, no mpiexec), outside this job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    env["OPENBLAS_NUM_THREADS"] = "1"
    command = (["mpiexec", "-n", str(n)] if n else []) + [*map(str, args)]
    if popen:
        return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    return subprocess.run(command, env=env, text=True, capture_output=True, timeout=timeout)


def gpunn(*args):
    return [sys.executable, "-m", "gpunn.cli.main", *map(str, args)]


def weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta.json"}


def largest_difference(a, b) -> float:
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_two_ranks_print_once_write_once_and_train_as_one_process(data_dir, tmp_path):
    r = mpiexec(2, *gpunn(*TRAIN, "--epochs", 2, "--data-dir", data_dir,
                          "--save", tmp_path / "two.npz", "--metrics-json", tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("test accuracy") == 1 and r.stdout.count("epoch   2/2") == 1, r.stdout
    assert "x 2 ranks (MPI)" in r.stdout
    assert json.loads((tmp_path / "m.json").read_text())["ranks"] == 2
    one = mpiexec(0, *gpunn(*TRAIN, "--epochs", 2, "--data-dir", data_dir,
                            "--save", tmp_path / "one.npz"))
    assert one.returncode == 0, one.stderr
    assert largest_difference(tmp_path / "two.npz", tmp_path / "one.npz") < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "one.npz", "two.npz"]


def test_an_error_on_one_rank_ends_every_rank_with_one_line(data_dir, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(f"""
        from gpunn.distributed import world
        from gpunn.train import DistributedStep
        from gpunn.cli.main import main

        def fail(self, *args):
            raise RuntimeError("rank 1 failed on purpose")

        if world().rank == 1:
            DistributedStep.run = fail
        main({[str(a) for a in TRAIN] + ["--epochs", "50", "--data-dir", str(data_dir)]!r})
    """))
    r = mpiexec(2, sys.executable, script, timeout=60)
    assert r.returncode != 0
    assert r.stderr.count("RuntimeError: rank 1 failed on purpose") == 1, r.stderr
    assert "epoch  50/50" not in r.stdout


def test_bad_input_on_every_rank_is_one_line_exit_2(tmp_path):
    r = mpiexec(2, *gpunn("train", "--sizes", "784,10,3"), timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("gpunn: error: --sizes must end with 10") == 1, r.stderr


def test_ctrl_c_checkpoints_and_resumes_at_another_rank_count(data_dir, tmp_path):
    ck = tmp_path / "ck"
    proc = mpiexec(2, *gpunn(*TRAIN, "--epochs", 1000, "--data-dir", data_dir,
                             "--checkpoint-dir", ck, "--checkpoint-every", 7), popen=True)
    for line in proc.stdout:
        if line.startswith("epoch"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.count("resume with: gpunn train --resume") == 1, err
    state = json.loads(np.load(sorted(ck.glob("ckpt-*.npz"))[-1])["meta.json"].tobytes())
    epochs = state["state"]["epoch"] + 2
    common = [*TRAIN, "--data-dir", data_dir, "--epochs", epochs]
    resumed_at_1 = mpiexec(0, *gpunn(*common, "--resume", ck, "--checkpoint-dir",
                                     tmp_path / "ck1", "--save", tmp_path / "resumed1.npz"))
    assert resumed_at_1.returncode == 0, resumed_at_1.stderr
    r = mpiexec(2, *gpunn(*common, "--resume", ck, "--save", tmp_path / "resumed2.npz"))
    assert r.returncode == 0, r.stderr
    straight = mpiexec(0, *gpunn(*common, "--save", tmp_path / "straight.npz"))
    assert straight.returncode == 0, straight.stderr
    assert largest_difference(tmp_path / "resumed1.npz", tmp_path / "straight.npz") < 1e-5
    assert largest_difference(tmp_path / "resumed2.npz", tmp_path / "straight.npz") < 1e-5


def test_info_shows_the_ranks_once_and_that_mpi_works():
    r = mpiexec(2, *gpunn("info"), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ranks") == 1 and "2 (this is rank 0" in r.stdout, r.stdout
    assert "MPI          yes (MPICH" in r.stdout or "MPI          yes" in r.stdout


def test_commands_that_do_not_run_data_parallel_refuse_in_one_line():
    r = mpiexec(2, *gpunn("ensemble", "--help"), timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("`gpunn ensemble` does not run data parallel yet") == 1, r.stderr
