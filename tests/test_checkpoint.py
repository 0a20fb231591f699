"""gpunn.checkpoint: the file format, keep-K, atomic writes under SIGKILL and failed writes."""

from __future__ import annotations

import errno
import json
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
import os
import sys
import time
import gpunn
from gpunn.checkpoint import save_checkpoint

# Hold every write between fsync and rename, so that most kills land there.
_replace = os.replace
def slow_replace(src, dst):
    time.sleep(0.03)
    _replace(src, dst)
os.replace = slow_replace

net = gpunn.Network([6, 4, 3], seed=1, backend="cpu")
epoch = 0
while True:
    epoch += 1
    net.weights[0][...] = epoch
    save_checkpoint(sys.argv[1], net, {"epoch": epoch}, keep=2)
    print(epoch, flush=True)
"""


def test_sigkill_during_checkpoint_writes_always_leaves_a_loadable_one(tmp_path):
    # The writer holds every write between fsync and rename, so most kills land with a part
    # file written and not yet renamed; the rest land elsewhere in the loop.
    rng = np.random.default_rng(0)
    left_parts = 0
    for trial, delay in enumerate(rng.uniform(0.0, 0.12, 6)):
        directory = tmp_path / f"ck{trial}"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)],
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


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _garble])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path, damage):
    net = small_net()
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, net, {"epoch": epoch})
    first, second, third = list_checkpoints(tmp_path)
    damage(third)
    _, state = load_checkpoint(tmp_path, backend="cpu")
    assert state["epoch"] == 2 and state["checkpoint_path"] == str(second)
    assert [s["path"] for s in state["skipped"]] == [str(third)]
    assert str(third) in state["skipped"][0]["reason"]
    damage(second)
    _, state = load_checkpoint(tmp_path, backend="cpu")
    assert state["epoch"] == 1 and state["checkpoint_path"] == str(first)
    assert [s["path"] for s in state["skipped"]] == [str(third), str(second)]
    json.dumps(state["skipped"])  # a command may write it into a results file


def test_an_intact_checkpoint_skips_nothing_and_a_named_file_is_never_skipped(tmp_path):
    net = small_net()
    save_checkpoint(tmp_path, net, {"epoch": 1})
    newest = save_checkpoint(tmp_path, net, {"epoch": 2})
    assert load_checkpoint(tmp_path, backend="cpu")[1]["skipped"] == []
    _truncate(newest)
    with pytest.raises(CheckpointError, match=f"{newest} is not a gpunn checkpoint"):
        load_checkpoint(newest, backend="cpu")


def test_all_checkpoints_damaged_is_an_error_naming_each(tmp_path):
    net = small_net()
    paths = [save_checkpoint(tmp_path, net, {"epoch": e}) for e in (1, 2)]
    _truncate(paths[0])
    _garble(paths[1])
    with pytest.raises(CheckpointError, match="every checkpoint in .* is damaged") as info:
        load_checkpoint(tmp_path, backend="cpu")
    assert all(str(p) in str(info.value) for p in paths)
