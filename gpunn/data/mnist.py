"""MNIST and Fashion-MNIST: where they are found, how they are read, and :func:`fetch`.

Two file formats:

* the book's ``mnist.pkl.gz`` (MNIST only): 50,000 training, 10,000 validation and 10,000
  test images, read by :mod:`gpunn.data.safe_pickle` as uint8 with scale 1/256 (exact);
* IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally ``.gz``): 60,000 training and 10,000 test images,
  uint8 with scale 1/255. The **last 10,000 training images become the validation split**, so
  the splits are 50,000 / 10,000 / 10,000 as in the book.

Where a dataset is looked for, first match wins:

1. ``data_dir`` (``--data-dir``): ``data_dir/<name>/``, then ``data_dir`` itself (a path to
   ``mnist.pkl.gz`` works too);
2. ``$GPUNN_DATA/<name>/``;
3. the cache, ``$XDG_CACHE_HOME/gpunn/<name>/`` (default ``~/.cache/gpunn/<name>/``);
4. Fashion-MNIST only: ``/usr/share/datasets/fashion-mnist/`` (Debian's
   ``dataset-fashion-mnist``);
5. MNIST only, when ``download=True``: :func:`fetch` downloads it into the cache (or data_dir).

In each folder the book's ``mnist.pkl.gz`` is preferred to IDX files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpunn.data import download as _dl
from gpunn.data.dataset import PIXELS, Dataset, Split
from gpunn.errors import DataError

__all__ = ["DATASETS", "DatasetInfo", "describe", "fetch", "load_dataset", "load_mnist",
           "locate"]

DATASETS = ("mnist", "fashion-mnist")
CLASSES = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
VALIDATION_SIZE = 10_000
IDX_SCALE = 1.0 / 255

#: sha256 -> what the file is, for ``gpunn data info``.
KNOWN_SHA256 = {
    _dl.BOOK_SHA256: "the book's mnist.pkl.gz",
    **{sha: f"MNIST {name}" for name, (sha, _) in _dl.MNIST_IDX.items()},
    "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7":
        "Fashion-MNIST train images (Debian)",
    "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056":
        "Fashion-MNIST train labels (Debian)",
    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa":
        "Fashion-MNIST test images (Debian)",
    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05":
        "Fashion-MNIST test labels (Debian)",
}


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; gpunn knows {', '.join(DATASETS)}")
    return name


def places(name: str, data_dir=None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (see the module docstring)."""
    found = []
    if data_dir is not None:
        found += [Path(data_dir) / name, Path(data_dir)]
    if os.environ.get("GPUNN_DATA"):
        found.append(Path(os.environ["GPUNN_DATA"]) / name)
    found.append(_dl.cache_dir() / name)
    return found + SYSTEM_DIRS.get(name, [])


def _idx_paths(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder`` (each plain or .gz), or None if one is missing."""
    paths = []
    for stem in IDX_FILES:
        candidates = [folder / stem, folder / (stem + ".gz")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        paths.append(path)
    return paths


def _source_in(folder: Path, name: str) -> Path | None:
    if name == "mnist" and folder.is_file() and folder.name.endswith((".pkl.gz", ".pkl")):
        return folder
    if name == "mnist" and (folder / _dl.BOOK_FILE).is_file():
        return folder / _dl.BOOK_FILE
    if folder.is_dir() and _idx_paths(folder):
        return folder
    return None


def locate(name: str, data_dir=None) -> Path | None:
    """Where dataset ``name`` is (the book's file or a folder of IDX files), or None."""
    _check_name(name)
    for folder in places(name, data_dir):
        source = _source_in(folder, name)
        if source is not None:
            return source
    return None


def _no_folder(data_dir) -> str:
    """Why ``data_dir`` cannot be used: naming $GPUNN_DATA when that is where it came from
    (the commands take --data-dir from it), else the --data-dir option."""
    env = os.environ.get("GPUNN_DATA")
    if env and Path(env) == Path(data_dir):
        return (f"data folder {data_dir} does not exist; it is the value of the environment "
                f"variable GPUNN_DATA: set GPUNN_DATA to an existing folder, or unset it to "
                f"use the cache {_dl.cache_dir()}")
    return (f"data folder {data_dir} does not exist; give an existing folder (--data-dir DIR), "
            f"or none to use the cache {_dl.cache_dir()}")


def _missing(name: str, data_dir=None) -> str:
    searched = ", ".join(str(p) for p in places(name, data_dir))
    if name == "fashion-mnist":
        how = ("install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put "
               "its four IDX files in a folder and pass --data-dir DIR")
    else:
        how = "run `gpunn data fetch mnist`, or pass --data-dir DIR holding mnist.pkl.gz"
    env = os.environ.get("GPUNN_DATA")
    if env and not Path(env).is_dir():
        how += f" (note: GPUNN_DATA={env} is not an existing folder)"
    return f"{name} not found (searched {searched}); {how}"


def fetch(name: str = "mnist", data_dir=None, progress: bool = True, mirrors=None,
          report=None) -> Path:
    """Make sure dataset ``name`` is on disk and return where (what :func:`locate` returns).

    For MNIST with ``data_dir`` only that folder is searched, and a download goes there;
    without it, the usual places are searched and a download goes to the cache (``mirrors``
    replaces the IDX mirror list; ``progress`` and ``report`` are as in
    :func:`gpunn.data.download.download_mnist`). Fashion-MNIST is not downloaded: when
    :func:`locate` does not find it, :class:`DataError` says how to install it.
    """
    _check_name(name)
    if name != "mnist":
        source = locate(name, data_dir)
        if source is None:
            raise DataError(_missing(name, data_dir))
        return source
    if data_dir is not None:
        source = _source_in(Path(data_dir) / name, name) or _source_in(Path(data_dir), name)
    else:
        source = locate(name)
    if source is not None:
        return source
    dest = (Path(data_dir) if data_dir is not None else _dl.cache_dir()) / name
    return _dl.download_mnist(dest, mirrors=mirrors, progress=progress, report=report)


def load_dataset(name: str = "mnist", data_dir=None, download: bool = True,
                 progress: bool = False) -> Dataset:
    """Load ``"mnist"`` or ``"fashion-mnist"`` from the first place it is found.

    MNIST is downloaded when missing and ``download`` is true (``progress`` shows a bar and
    says on stderr where the files came from and how big they are).
    Raises :class:`DataError` when it cannot be found or a file is bad.
    """
    _check_name(name)
    if data_dir is not None and not Path(data_dir).exists():
        raise DataError(_no_folder(data_dir))
    source = locate(name, data_dir)
    if source is None:
        if not (download and name == "mnist"):
            raise DataError(_missing(name, data_dir))
        source = fetch(name, data_dir, progress=progress)
    return _load(name, source)


def load_mnist(path_or_dir=None, download: bool = True, progress: bool = False) -> Dataset:
    """MNIST from the book's ``mnist.pkl.gz``, a folder of IDX files, or (None) the usual places."""
    if path_or_dir is None:
        return load_dataset("mnist", download=download, progress=progress)
    path = Path(path_or_dir)
    if path.is_file():
        return _load("mnist", path)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass the book's mnist.pkl.gz or a folder of "
                        "MNIST IDX files")
    source = _source_in(path / "mnist", "mnist") or _source_in(path, "mnist")
    if source is None:
        raise DataError(f"{path} holds neither mnist.pkl.gz nor the four IDX files "
                        f"({', '.join(IDX_FILES)}, optionally .gz)")
    return _load("mnist", source)


def _load(name: str, source: Path) -> Dataset:
    splits = _read_book(source) if source.is_file() else _read_idx_folder(source)
    return Dataset(name, str(source), *splits, classes=CLASSES[name])


def _make_split(path, what: str, images: np.ndarray, labels: np.ndarray, scale: float) -> Split:
    """A Split after checking shapes, counts and label range; DataError names ``path``."""
    if images.ndim == 3:
        images = images.reshape(len(images), -1)
    if images.ndim != 2 or images.shape[1] != PIXELS:
        raise DataError(f"{path}: {what} images should be 28x28 ({PIXELS} pixels) each; "
                        f"found shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{path}: {what} labels should be one number per image; "
                        f"found shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} {what} images but {len(labels)} labels")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {what} labels should be integers; found {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: {what} labels should be in 0..9; "
                        f"found {labels.min()}..{labels.max()}")
    return Split(images, labels.astype(np.int64), scale)


def _read_book(path: Path) -> tuple[Split, Split, Split]:
    from gpunn.data.safe_pickle import load_array_pickle

    data = load_array_pickle(path)
    if not (isinstance(data, tuple | list) and len(data) == 3 and all(
            isinstance(pair, tuple | list) and len(pair) == 2
            and all(isinstance(item, tuple) for item in pair) for pair in data)):
        raise DataError(f"{path}: expected the book's layout, three (images, labels) pairs "
                        "(training, validation, test)")
    names = ("training", "validation", "test")
    return tuple(_make_split(path, what, images, labels, scale)
                 for what, ((images, scale), (labels, _)) in zip(names, data, strict=True))


def _read_idx_folder(folder: Path) -> tuple[Split, Split, Split]:
    from gpunn.data.idx import read_idx

    paths = _idx_paths(folder)
    if paths is None:
        raise DataError(f"{folder}: the four IDX files ({', '.join(IDX_FILES)}) are not all "
                        "there")
    train_images, train_labels, test_images, test_labels = (read_idx(p) for p in paths)
    for images_path, images, labels_path, labels in ((paths[0], train_images, paths[1],
                                                      train_labels),
                                                     (paths[2], test_images, paths[3],
                                                      test_labels)):
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{images_path}: images should have shape (N, 28, 28); "
                            f"found {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{labels_path}: {labels.shape[0] if labels.ndim else '?'} labels "
                            f"for the {len(images)} images of {images_path.name}")
    if len(train_images) <= VALIDATION_SIZE:
        raise DataError(f"{paths[0]}: {len(train_images)} training images; more than "
                        f"{VALIDATION_SIZE} are needed to hold out the validation split")
    cut = len(train_images) - VALIDATION_SIZE  # the last 10,000 become validation
    return (_make_split(paths[1], "training", train_images[:cut], train_labels[:cut], IDX_SCALE),
            _make_split(paths[1], "validation", train_images[cut:], train_labels[cut:],
                        IDX_SCALE),
            _make_split(paths[3], "test", test_images, test_labels, IDX_SCALE))


@dataclass
class DatasetInfo:
    """What :func:`describe` reports for one dataset (``source`` None when not found)."""

    name: str
    source: Path | None
    format: str | None
    files: list[tuple[Path, int, str]] = field(default_factory=list)  # path, bytes, sha status
    searched: list[Path] = field(default_factory=list)
    hint: str = ""


def describe(data_dir=None, checksums: bool = True) -> list[DatasetInfo]:
    """For each dataset: where it is found (or not), its files, sizes and SHA-256 status.

    The status of a file is the name of a known file its sha256 matches, or ``unknown``.
    """
    infos = []
    for name in DATASETS:
        source = locate(name, data_dir)
        info = DatasetInfo(name, source, None, searched=places(name, data_dir))
        if source is None:
            info.hint = _missing(name, data_dir).split("; ", 1)[1]
        else:
            info.format = "book pickle" if source.is_file() else "IDX"
            for path in [source] if source.is_file() else _idx_paths(source):
                status = "not checked"
                if checksums:
                    status = KNOWN_SHA256.get(_dl.sha256_of(path), "unknown")
                info.files.append((path, path.stat().st_size, status))
        infos.append(info)
    return infos
