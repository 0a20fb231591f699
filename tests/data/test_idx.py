"""Reading IDX files, gzipped or not, and every way one can be broken."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from gpunn.data.idx import read_idx
from gpunn.errors import DataError


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_roundtrip(tmp_path, helpers, gz):
    images, labels = helpers.random_digits(7)
    np.testing.assert_array_equal(read_idx(helpers.write_idx(tmp_path / "x", images, gz)), images)
    got = read_idx(helpers.write_idx(tmp_path / "y", labels, gz))
    assert got.dtype == np.uint8 and got.shape == (7,)
    np.testing.assert_array_equal(got, labels)


def test_wrong_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: not an IDX file \(magic"):
        read_idx(path)


def test_wrong_type_byte(tmp_path, helpers):
    path = helpers.write_idx(tmp_path / "floats", np.zeros((2, 3)), type_byte=0x0D)
    with pytest.raises(DataError, match=r"floats: IDX type 0x0d"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_short_file(tmp_path, helpers, gz):
    path = tmp_path / "short"
    data = b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100)
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match=r"short: the header says shape \(5, 28, 28\)"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "header"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="header: the file ends early"):
        read_idx(path)


def test_trailing_data(tmp_path, helpers):
    path = helpers.write_idx(tmp_path / "long", np.zeros(4))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="long: more data than the header"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path, helpers):
    images, _ = helpers.random_digits(50)
    path = helpers.write_idx(tmp_path / "cut.gz", images, gz=True)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="cut.gz: the file ends early"):
        read_idx(path)


def test_corrupt_gzip_stream(tmp_path, helpers):
    path = helpers.write_idx(tmp_path / "bad.gz", np.zeros(4000), gz=True)
    data = bytearray(path.read_bytes())
    data[12:20] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="bad.gz"):
        read_idx(path)
