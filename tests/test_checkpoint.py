"""gpunn.checkpoint: the file format, keep-K, atomic writes under SIGKILL and failed writes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import gpunn
from gpunn import io as gpunn_io
from gpunn.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from gpunn.errors import CheckpointError


def small_net(seed=1):
    return gpunn.Network([6, 4, 3], seed=seed, backend="cpu")


def test_round_trip_of_network_arrays_and_json_state(tmp_path):
    net = small_net()
    net.init_velocities()
    state = {"epoch": 3, "eta": 0.25, "order": np.arange(5)[::-1], "rng": net.rng.state,
             "velocities": net.velocities, "nested": {"a": [1, None, "x", np.float32(0.5)]}}
    path = save_checkpoint(tmp_path, net, state)
    assert path.name == "ckpt-000001.npz" and latest_checkpoint(tmp_path) == path
    loaded, got = load_checkpoint(tmp_path, backend="cpu")
    for a, b in zip(net.weights + net.biases, loaded.weights + loaded.biases):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got["order"], [4, 3, 2, 1, 0])
    assert got["rng"] == net.rng.state and got["nested"] == {"a": [1, None, "x", 0.5]}
    assert [len(v) for v in got["velocities"]] == [2, 2]
    assert got["checkpoint_path"] == str(path)


def test_keeps_the_newest_k(tmp_path):
    net = small_net()
    for epoch in range(1, 6):
        save_checkpoint(tmp_path, net, {"epoch": epoch}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000004.npz",
                                                            "ckpt-000005.npz"]
    assert load_checkpoint(tmp_path)[1]["epoch"] == 5


def test_a_model_file_or_other_version_is_refused_by_name(tmp_path):
    model = gpunn.save(small_net(), tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match="m.npz is not a gpunn checkpoint"):
        load_checkpoint(model)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    meta, arrays = gpunn_io.read_npz(save_checkpoint(tmp_path / "ck", small_net(), {}))
    meta["format_version"] = 99
    gpunn_io.write_npz_atomic(tmp_path / "ck" / "ckpt-000009.npz", arrays, meta)
    with pytest.raises(CheckpointError, match="format version 99; this gpunn reads version 1"):
        load_checkpoint(tmp_path / "ck")


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    net = small_net()
    first = save_checkpoint(tmp_path, net, {"epoch": 1})

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gpunn_io.os, "replace", no_space)
    with pytest.raises(CheckpointError, match=f"No space left.*{first} is intact"):
        save_checkpoint(tmp_path, net, {"epoch": 2})
    monkeypatch.undo()
    assert list_checkpoints(tmp_path) == [first]
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no part file left
    assert load_checkpoint(tmp_path)[1]["epoch"] == 1


def test_a_directory_under_a_regular_file_is_a_checkpoint_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="could not write checkpoint.*no earlier"):
        save_checkpoint(tmp_path / "file" / "ck", small_net(), {})


WRITER = """
import sys
import gpunn
from gpunn.checkpoint import save_checkpoint
net = gpunn.Network([6, 4, 3], seed=1, backend="cpu")
epoch = 0
while True:
    epoch += 1
    net.weights[0][...] = epoch
    save_checkpoint(sys.argv[1], net, {"epoch": epoch}, keep=2)
    print(epoch, flush=True)
"""


def test_sigkill_during_checkpoint_writes_always_leaves_a_loadable_one(tmp_path):
    # GPUNN_TEST_WRITE_DELAY holds every write between fsync and rename, so most kills land
    # with a part file written and not yet renamed; the rest land elsewhere in the loop.
    env = dict(os.environ, GPUNN_TEST_WRITE_DELAY="0.03")
    rng = np.random.default_rng(0)
    left_parts = 0
    for trial, delay in enumerate(rng.uniform(0.0, 0.12, 6)):
        directory = tmp_path / f"ck{trial}"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)], env=env,
                                stdout=subprocess.PIPE, text=True)
        first = int(proc.stdout.readline())
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        printed = [first] + [int(line) for line in proc.stdout.read().split()]
        proc.wait()
        left_parts += any(p.name.endswith(".part") for p in directory.iterdir())
        net, state = load_checkpoint(directory, backend="cpu")
        assert state["epoch"] >= printed[-1]  # the last completed save, or one after it
        assert np.all(net.weights[0] == state["epoch"])
        # a later save cleans up after the killed one
        save_checkpoint(directory, net, {"epoch": 0}, keep=2)
        assert not any(p.name.endswith(".part") for p in directory.iterdir())
    assert left_parts >= 1
