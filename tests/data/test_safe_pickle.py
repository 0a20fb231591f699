"""The restricted, streaming unpickler for the book's mnist.pkl.gz."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings

import numpy as np
import pytest

from gpunn.data import safe_pickle
from gpunn.data.safe_pickle import BOOK_SCALE, load_array_pickle
from gpunn.errors import DataError


@pytest.fixture(params=[4096, 40], ids=["4KiB-chunks", "40B-chunks"])
def chunked(request, monkeypatch):
    """Run with tiny chunks too, so arrays cross many chunk boundaries."""
    monkeypatch.setattr(safe_pickle.SafeArrayUnpickler, "chunk_bytes", request.param)


@pytest.mark.parametrize("style", ["py2", 3, 4])
def test_book_layout_loads_as_exact_uint8(tmp_path, helpers, chunked, style):
    splits = helpers.book_splits()
    path = helpers.write_book(tmp_path / "mnist.pkl.gz", splits, style=style)
    loaded = load_array_pickle(path)
    assert len(loaded) == 3
    for ((images, scale), (labels, _)), (x, y) in zip(loaded, splits, strict=True):
        assert images.dtype == np.uint8 and scale == BOOK_SCALE and images.shape == x.shape
        np.testing.assert_array_equal(images * np.float32(scale), x)  # bit-exact
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, y)


def test_py2_helper_matches_what_pickle_itself_reads(helpers):
    """The test's Python-2 layout is a real pickle: the stdlib reads the same arrays."""
    splits = helpers.book_splits(sizes=(3, 2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core is numpy._core now
        ref = pickle.loads(helpers.py2_pickle(splits), encoding="latin1")
    for (rx, ry), (x, y) in zip(ref, splits, strict=True):
        np.testing.assert_array_equal(rx, x)
        np.testing.assert_array_equal(ry, y)


@pytest.mark.parametrize("where", [0, 500, -1], ids=["first", "middle", "last"])
def test_floats_not_on_the_256_grid_stay_float32(tmp_path, helpers, chunked, where):
    splits = helpers.book_splits()
    x = splits[0][0].reshape(-1)
    x[where] = 0.3  # not k/256: from here on (and back to the start) the split is float32
    path = helpers.write_book(tmp_path / "mnist.pkl.gz", splits)
    (images, scale), _ = load_array_pickle(path)[0]
    assert images.dtype == np.float32 and scale == 1.0
    np.testing.assert_array_equal(images, splits[0][0])
    (other, other_scale), _ = load_array_pickle(path)[1]
    assert other.dtype == np.uint8 and other_scale == BOOK_SCALE


def test_values_out_of_range_or_nan_are_not_quantised(tmp_path, helpers):
    splits = helpers.book_splits()
    splits[0][0][0, :3] = [1.0, -1 / 256, np.nan]
    (images, scale), _ = load_array_pickle(helpers.write_book(tmp_path / "m.pkl.gz", splits))[0]
    assert images.dtype == np.float32 and scale == 1.0
    np.testing.assert_array_equal(images, splits[0][0])


class RunsCode:
    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = RunsCode()
    evil.marker = marker
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(evil, protocol=2)))
    with pytest.raises(DataError, match=r"evil\.pkl\.gz.*refuses to load the global .*system"):
        load_array_pickle(path)
    assert not marker.exists()


def test_refuses_object_arrays(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    with pytest.raises(DataError, match="objects.pkl"):
        load_array_pickle(path)


def test_truncated_gzip_says_so(tmp_path, helpers):
    good = helpers.write_book(tmp_path / "good.pkl.gz").read_bytes()
    path = tmp_path / "cut.pkl.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.pkl\.gz: the file ends early"):
        load_array_pickle(path)


def test_truncated_payload_says_so(tmp_path, helpers, chunked):
    raw = helpers.py2_pickle(helpers.book_splits())
    path = tmp_path / "cut.pkl"
    path.write_bytes(raw[:5000])
    with pytest.raises(DataError, match="ends early"):
        load_array_pickle(path)


def test_garbage_and_missing_files(tmp_path):
    path = tmp_path / "noise.pkl.gz"
    path.write_bytes(b"\x1f\x8b this is not gzip")
    with pytest.raises(DataError, match="noise.pkl.gz"):
        load_array_pickle(path)
    with pytest.raises(DataError, match="absent.pkl.gz: cannot read"):
        load_array_pickle(tmp_path / "absent.pkl.gz")


def test_byte_count_must_match_shape(tmp_path, helpers):
    raw = helpers.py2_pickle(helpers.book_splits(sizes=(2, 1, 1)))
    # The first array's shape is (2, 784); make it claim (3, 784).
    shape_2, shape_3 = (b"(J" + struct.pack("<i", n) + b"J\x10\x03\x00\x00t" for n in (2, 3))
    broken = raw.replace(shape_2, shape_3, 1)
    assert broken != raw
    path = tmp_path / "bad.pkl"
    path.write_bytes(broken)
    with pytest.raises(DataError, match=r"bad\.pkl: .*needs 9408 bytes; the file holds 6272"):
        load_array_pickle(path)
