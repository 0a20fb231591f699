"""Fuzzing the loaders of untrusted files: IDX, the book's pickle, model files and checkpoints.

Random bytes, truncations and bit flips of small valid files may only ever raise gpunn's own
errors (GpunnError subclasses, which the CLI turns into one line and exit 2).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpunn
from gpunn.checkpoint import load_checkpoint, save_checkpoint
from gpunn.data.idx import read_idx
from gpunn.data.safe_pickle import load_array_pickle
from gpunn.errors import GpunnError


def _idx(gz: bool) -> bytes:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = b"\x00\x00\x08\x03" + struct.pack(">3I", *data.shape) + data.tobytes()
    return gzip.compress(raw) if gz else raw


def _pickle(gz: bool) -> bytes:
    splits = tuple((np.full((2, 4), k / 256, np.float32), np.arange(2)) for k in range(3))
    raw = pickle.dumps(splits, protocol=4)
    return gzip.compress(raw) if gz else raw


def _npz(kind: str, tmp) -> bytes:
    net = gpunn.Network([4, 3, 2], seed=1, backend="cpu")
    if kind == "model":
        return gpunn.save(net, tmp / "m.npz").read_bytes()
    return save_checkpoint(tmp / "ck", net, {"order": np.arange(3), "epoch": 1}).read_bytes()


LOADERS = {
    "idx": (read_idx, lambda tmp: _idx(False)),
    "idx.gz": (read_idx, lambda tmp: _idx(True)),
    "pickle": (load_array_pickle, lambda tmp: _pickle(False)),
    "pickle.gz": (load_array_pickle, lambda tmp: _pickle(True)),
    "model": (lambda p: gpunn.load(p, backend="cpu"), lambda tmp: _npz("model", tmp)),
    "checkpoint": (lambda p: load_checkpoint(p, backend="cpu"),
                   lambda tmp: _npz("checkpoint", tmp)),
}


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("valid")
    return {name: make(tmp) for name, (_, make) in LOADERS.items()}


def only_gpunn_errors(load, data: bytes, path) -> None:
    path.write_bytes(data)
    try:
        load(path)
    except GpunnError:
        pass


def test_the_valid_files_load(valid, tmp_path):
    for name, (load, _) in LOADERS.items():
        (tmp_path / name).write_bytes(valid[name])
        load(tmp_path / name)


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", list(LOADERS))
@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(name, data, tmp_path):
    only_gpunn_errors(LOADERS[name][0], data, tmp_path / "f")


@pytest.mark.parametrize("name", list(LOADERS))
@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True))
def test_truncations(name, cut, valid, tmp_path):
    data = valid[name]
    only_gpunn_errors(LOADERS[name][0], data[:int(cut * len(data))], tmp_path / "f")


@pytest.mark.parametrize("name", list(LOADERS))
@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                      min_size=1, max_size=4))
def test_bit_flips(name, flips, valid, tmp_path):
    data = bytearray(valid[name])
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    only_gpunn_errors(LOADERS[name][0], bytes(data), tmp_path / "f")


def test_a_pickle_naming_other_code_is_refused(tmp_path):
    payload = io.BytesIO()
    pickle.dump(print, payload, protocol=2)
    with pytest.raises(GpunnError, match=r"refuses to load the global .*print"):
        only_gpunn_errors(load_array_pickle, payload.getvalue(), tmp_path / "f")
        load_array_pickle(tmp_path / "f")
