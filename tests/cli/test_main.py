"""cli.main's shared plumbing: the writability check for output paths, host out-of-memory
as one line and exit 4, --device wording, and the notes for skipped checkpoints."""

from __future__ import annotations

import os

import click
import numpy as np
import pytest
from click.testing import CliRunner

from gpunn import backend
from gpunn.cli.main import (
    GpunnGroup,
    UserError,
    check_writable,
    select_backend,
    skipped_checkpoint_notes,
)


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


# -- check_writable ---------------------------------------------------------------------------
def test_writable_file_and_directory_paths_pass_and_leave_nothing(tmp_path):
    check_writable(tmp_path / "m.npz", "--save")
    (tmp_path / "old.npz").write_bytes(b"x")
    check_writable(tmp_path / "old.npz", "--save")  # overwriting is the caller's decision
    check_writable(tmp_path, "--checkpoint-dir", directory=True)
    check_writable(tmp_path / "new" / "deeper", "--checkpoint-dir", directory=True)
    assert listing(tmp_path) == ["old.npz"]  # no probe file, no directory created


@pytest.mark.parametrize("path,directory,message", [
    ("file/m.npz", False, "--out {tmp}/file/m.npz: {tmp}/file is a file, not a directory; "
                          "choose a path in a directory"),
    ("file/a/m.npz", False, "--out {tmp}/file/a/m.npz: {tmp}/file is a file, not a directory; "
                            "choose a path in a directory"),
    ("missing/m.npz", False, "--out {tmp}/missing/m.npz: directory {tmp}/missing does not "
                             "exist; create it (mkdir -p {tmp}/missing) or choose another path"),
    ("sub", False, "--out {tmp}/sub is a directory; give a file name (e.g. {tmp}/sub/out)"),
    ("file", True, "--out {tmp}/file is a file, not a directory; give a directory path"),
    ("file/ck", True, "--out {tmp}/file/ck cannot be created: {tmp}/file is a file, not a "
                      "directory; choose a path in a directory"),
])
def test_unwritable_paths_say_which_option_path_and_why(tmp_path, path, directory, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError) as info:
        check_writable(tmp_path / path, "--out", directory=directory)
    assert str(info.value) == message.format(tmp=tmp_path)
    assert "\n" not in str(info.value)
    assert listing(tmp_path) == ["file", "sub"]


def test_a_directory_that_takes_no_files_is_refused_even_for_root():
    # /proc refuses new files whatever the permission bits say, so this holds for root too
    with pytest.raises(UserError, match=r"^--save /proc/m\.npz: cannot write in /proc \("):
        check_writable("/proc/m.npz", "--save")
    with pytest.raises(UserError, match=r"^--checkpoint-dir /proc/ck: cannot create /proc/ck "
                                        r"in /proc \("):
        check_writable("/proc/ck", "--checkpoint-dir", directory=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only directory")
def test_a_read_only_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot write in .*Permission denied"):
            check_writable(locked / "m.npz", "--save")
        with pytest.raises(UserError, match="cannot write in .*Permission denied"):
            check_writable(locked, "--checkpoint-dir", directory=True)
    finally:
        locked.chmod(0o700)


def test_a_read_only_file_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "m.npz"
    target.write_bytes(b"x")
    # os.access answers True for root whatever the mode: stand in for a non-root user
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != str(target))
    with pytest.raises(UserError, match="--save .*m.npz: the file exists and is read-only"):
        check_writable(target, "--save")


# -- host out of memory -----------------------------------------------------------------------
def _group_raising(exc_factory, batch_size=None):
    @click.group(cls=GpunnGroup)
    def group():
        pass

    @group.command()
    def go():
        if batch_size is not None:
            click.get_current_context().meta["gpunn.batch_size"] = batch_size
        raise exc_factory()

    return group


def test_numpy_out_of_memory_is_one_line_exit_4_naming_size_and_batch(monkeypatch):
    monkeypatch.setattr(backend, "host_memory_available", lambda: 3 * 2**30)

    def huge():
        return np.empty((2**50,), np.float64)  # 8 PiB: NumPy's _ArrayMemoryError

    r = CliRunner().invoke(_group_raising(huge, batch_size=100_000), ["go"])
    assert r.exit_code == 4, r.output
    assert r.output == ("gpunn: error: the computer ran out of memory allocating "
                        "8,589,934,592.0 MiB (3,072.0 MiB available) with --batch-size 100000; "
                        "try a smaller --batch-size (e.g. 50000)\n")


def test_a_plain_memory_error_without_batch_size(monkeypatch):
    monkeypatch.setattr(backend, "host_memory_available", lambda: None)
    r = CliRunner().invoke(_group_raising(MemoryError), ["go"])
    assert r.exit_code == 4
    assert r.output == ("gpunn: error: the computer ran out of memory allocating memory; try "
                        "a smaller --batch-size or a smaller network\n")


# -- --device -------------------------------------------------------------------------------
BROKEN_CUPY = """
try:
    raise ImportError("libnvrtc.so.12: cannot open shared object file: No such file or directory")
except ImportError as exc:
    raise ImportError(
        "\\n" + "=" * 64 + "\\nFailed to import CuPy.\\n\\nIf you installed CuPy via wheels "
        "(cupy-cudaXXX or cupy-rocm-X-X), make sure that the package matches with the version "
        "of CUDA or ROCm installed.\\n\\nOriginal error:\\n  ImportError: libnvrtc.so.12: "
        "cannot open shared object file: No such file or directory\\n" + "=" * 64) from exc
"""


def test_info_shows_each_cuda_check_and_the_first_that_failed(monkeypatch):
    import types

    from gpunn.cli.main import cli

    class NoCublas(np.ndarray):
        def __matmul__(self, other):
            raise ImportError("libcublas.so.12: cannot open shared object file")

        def get(self):
            return np.array(self)

    class Device:
        def __init__(self, index):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0)
    cupy = types.SimpleNamespace(
        float32=np.float32, cuda=types.SimpleNamespace(runtime=runtime, Device=Device),
        asarray=lambda a: np.array(a).view(NoCublas))
    monkeypatch.setattr(backend, "_import_cupy", lambda: cupy)
    monkeypatch.delenv("GPUNN_DEVICE", raising=False)
    r = CliRunner().invoke(cli, ["info"])
    assert r.exit_code == 0, r.output
    assert ("CUDA checks  import ok, device ok, cuBLAS failed, NVRTC not tried"
            in r.output), r.output
    assert "cuBLAS failed: ImportError: libcublas.so.12" in r.output
    r = CliRunner().invoke(cli, ["info", "--device", "cuda"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "(cuBLAS failed: ImportError: libcublas.so.12" in r.output


def test_info_with_a_cupy_that_fails_to_load_its_libraries(tmp_path):
    import subprocess
    import sys

    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(BROKEN_CUPY)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "GPUNN_DEVICE": ""}
    command = [sys.executable, "-m", "gpunn.cli.main", "info"]
    r = subprocess.run(command + ["--device", "cuda"], capture_output=True, text=True, env=env)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and r.stdout == "", r.stderr
    assert "libnvrtc.so.12: cannot open shared object file" in lines[0]
    assert "not installed" not in lines[0] and "cupy-cuda12x[ctk]" in lines[0]
    r = subprocess.run(command, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "CUDA checks  import failed, device not tried" in r.stdout
    cupy_row = next(line for line in r.stdout.splitlines() if line.startswith("CuPy"))
    assert "libnvrtc.so.12" in cupy_row and "not installed" not in cupy_row, r.stdout


def test_select_backend_speaks_of_the_option(monkeypatch):
    def refuse():
        raise backend.BackendUnavailable("CuPy is not installed", hint=backend.INSTALL_HINT)

    monkeypatch.setattr(backend, "_import_cupy", refuse)
    with pytest.raises(UserError) as info:
        select_backend("cuda")
    assert str(info.value).startswith("--device cuda was asked for but CuPy could not start "
                                      "(CuPy is not installed); install gpunn[cuda12]")
    assert str(info.value).endswith("or use --device cpu")
    with pytest.raises(UserError, match=r"^--device must be auto, cpu, cuda or cuda:N"):
        select_backend("tpu")


# -- skipped checkpoints ------------------------------------------------------------------------
def test_notes_for_skipped_checkpoints():
    state = {"checkpoint_path": "ck/ckpt-000001.npz",
             "skipped": [{"path": "ck/ckpt-000002.npz",
                          "reason": "ck/ckpt-000002.npz is not a gpunn checkpoint: truncated"}]}
    assert skipped_checkpoint_notes(state) == [
        "gpunn: skipped damaged checkpoint ck/ckpt-000002.npz (is not a gpunn checkpoint: "
        "truncated); resuming from ck/ckpt-000001.npz"]
    assert skipped_checkpoint_notes({"checkpoint_path": "x", "skipped": []}) == []


def test_check_host_memory_refuses_early_with_exit_4(monkeypatch):
    monkeypatch.setattr(backend, "host_memory_available", lambda: 8 * 2**30)

    @click.group(cls=GpunnGroup)
    def group():
        pass

    @group.command()
    def go():
        from gpunn.cli.main import check_host_memory

        click.get_current_context().meta["gpunn.batch_size"] = 1000
        check_host_memory(4 * 2**30, "the synthetic run")  # fits: nothing happens
        check_host_memory(32 * 2**30, "the synthetic run")
        click.echo("not reached")

    r = CliRunner().invoke(group, ["go"])
    assert r.exit_code == 4
    assert r.output == ("gpunn: error: the synthetic run needs about 32.0 GiB of memory and "
                        "this machine has 8.0 GiB available with --batch-size 1000; try a "
                        "smaller --batch-size (e.g. 125)\n")


def test_cupys_out_of_memory_is_reported_as_the_gpus_not_the_hosts():
    # CuPy's OutOfMemoryError subclasses MemoryError: it must still read as the GPU's
    OutOfMemoryError = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})
    r = CliRunner().invoke(_group_raising(
        lambda: OutOfMemoryError("Out of memory allocating 2,097,152 bytes"), batch_size=8), ["go"])
    assert r.exit_code == 4
    assert r.output.startswith("gpunn: error: the GPU ran out of memory allocating 2.0 MiB")


def test_threads_reach_blas_and_numba_and_info_shows_them(monkeypatch, tmp_path):
    import numba

    from gpunn.cli.main import cli

    before = numba.get_num_threads()
    try:
        r = CliRunner().invoke(cli, ["train", "--threads", "1", "--epochs", "1", "--train-size",
                                     "50", "--sizes", "784,10", "--data-dir", str(tmp_path)])
        assert numba.get_num_threads() == 1, r.output  # found MNIST or not, threads were set
        monkeypatch.setenv("GPUNN_NUM_THREADS", "1")
        r = CliRunner().invoke(cli, ["info"])
        assert r.exit_code == 0 and "CPU threads  1 of" in r.output, r.output
        monkeypatch.setenv("GPUNN_NUM_THREADS", "many")
        r = CliRunner().invoke(cli, ["train", "--epochs", "1"])
        assert r.exit_code == 2 and "--threads" in r.output and "'many'" in r.output, r.output
    finally:
        backend.set_num_threads(before)
