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


@pytest.mark.parametrize("write,kind", [
    (lambda p: np.savez(p, w0=np.array([{"code": 1}], dtype=object)),
     r"an \.npz holding pickled Python objects \(w0\)"),
    (lambda p: p.write_bytes(__import__("pickle").dumps({"w0": 1})), "a Python pickle"),
    (lambda p: np.save(open(p, "wb"), np.zeros(3)), r"a single \.npy array"),
    (lambda p: p.write_bytes(b"not an archive at all"), r"not an \.npz archive"),
])
def test_foreign_files_are_named_and_never_unpickled(tmp_path, write, kind):
    path = tmp_path / "model.npz"
    write(path)
    with pytest.raises(ModelFileError, match=f"model.npz is not a gpunn model file: it is {kind}"
                       ) as info:
        gpunn.load(path, backend="cpu")
    assert "allow_pickle" not in str(info.value) and "trust" not in str(info.value)


def test_a_checkpoint_file_loads_as_its_network(tmp_path):
    from gpunn.checkpoint import save_checkpoint

    net = gpunn.Network([6, 4, 3], seed=2, backend="cpu")
    path = save_checkpoint(tmp_path, net, {"epoch": 1, "config": {"eta": 0.5}})
    back = gpunn.load(path, backend="cpu")
    assert back.config() == net.config() and back.training == {"eta": 0.5}
    for a, b in zip(net.weights + net.biases, back.weights + back.biases):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_read_as_a_model_file_points_to_export(tmp_path):
    from gpunn.checkpoint import save_checkpoint
    from gpunn.io import read_meta

    path = save_checkpoint(tmp_path, gpunn.Network([4, 3], backend="cpu"), {"epoch": 1})
    with pytest.raises(ModelFileError, match=f"{path} is a gpunn checkpoint, not a model file; "
                                             f"`gpunn export {path} -o model.npz`"):
        read_meta(path)
