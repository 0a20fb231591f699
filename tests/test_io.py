"""Saving and loading networks: round trips, refusals, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpunn
from gpunn.errors import ModelFileError
from gpunn.io import FORMAT_VERSION


def test_round_trip_keeps_architecture_and_weights(tmp_path, backend):
    net = gpunn.Network([12, 7, 3], cost="log-likelihood", activation="tanh", seed=5,
                        backend=backend, dropout=0.25)
    path = gpunn.save(net, tmp_path / "net", training={"eta": 0.1})
    assert path.name == "net.npz" and not list(tmp_path.glob("*.part"))
    back = gpunn.load(path, backend="cpu")  # a GPU-trained model loads on the CPU
    assert back.config() == net.config()
    assert back.training == {"eta": 0.1}
    for a, b in zip(net.weights + net.biases, back.weights + back.biases):
        assert np.array_equal(backend.to_numpy(a), b)
    X = np.random.default_rng(0).random((4, 12)).astype(np.float32)
    assert np.array_equal(backend.to_numpy(net.feedforward(backend.asarray(X))),
                          back.feedforward(X))


def test_model_files_hold_no_pickles(tmp_path):
    path = gpunn.save(gpunn.Network([4, 3], backend="cpu"), tmp_path / "n.npz")
    with np.load(path, allow_pickle=False) as z:  # raises if any member needs pickle
        meta = json.loads(z["meta.json"].tobytes())
    assert meta["format"] == "gpunn-network" and meta["format_version"] == FORMAT_VERSION


def _rewrite(path, **changes):
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(arrays["meta.json"].tobytes())
    for key, value in changes.items():
        if key.startswith("meta_"):
            meta[key[5:]] = value
        else:
            arrays[key] = value
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("change,match", [
    ({"meta_format_version": 99}, "format version 99"),
    ({"meta_format": "other"}, "not a gpunn network file"),
    ({"w1": np.zeros((2, 2), np.float32)}, r"w1 should have shape \(3, 5\)"),
    ({"meta_architecture": {"sizes": [4, 5, 3], "cost": "hinge"}}, "architecture record"),
])
def test_mismatched_files_are_refused(tmp_path, change, match):
    path = gpunn.save(gpunn.Network([4, 5, 3], backend="cpu"), tmp_path / "n.npz")
    _rewrite(path, **change)
    with pytest.raises(ModelFileError, match=match):
        gpunn.load(path, backend="cpu")


def test_missing_and_corrupt_files_are_refused(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        gpunn.load(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelFileError, match="not a gpunn model file"):
        gpunn.load(bad)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w0=np.zeros(3))
    with pytest.raises(ModelFileError, match="no meta.json"):
        gpunn.load(plain)


def test_unwritable_destination_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")  # refused even for root
    with pytest.raises(ModelFileError, match="could not write"):
        gpunn.save(gpunn.Network([4, 3], backend="cpu"), blocker / "n.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    net = gpunn.Network([4, 3], backend="cpu", seed=1)
    path = gpunn.save(net, tmp_path / "n.npz")
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(ModelFileError, match="No space left"):
        gpunn.save(gpunn.Network([4, 3], backend="cpu", seed=2), path)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.part"))
