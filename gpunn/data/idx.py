"""Read IDX files, the format of the MNIST and Fashion-MNIST distributions.

An IDX file is two zero bytes, a type byte, a byte giving the number of dimensions, one
big-endian int32 per dimension, then the values in C order. MNIST and Fashion-MNIST use type
0x08 (unsigned byte) only, so that is all this reads: ``train-images-idx3-ubyte`` is
(60000, 28, 28) uint8 pixels, ``train-labels-idx1-ubyte`` is (60000,) uint8 labels. Files may be
gzipped (recognised by their first bytes, not their name).

What it leaves out: the signed, short, int, float and double IDX types.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from gpunn.errors import DataError

__all__ = ["read_idx"]

UBYTE = 0x08


def read_idx(path) -> np.ndarray:
    """The uint8 array stored in the IDX file at ``path`` (gzipped or not), in its own shape.

    Raises :class:`DataError` naming the file for a wrong magic number, a type other than
    unsigned byte, or a file shorter or longer than its header says.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw as file:
                return _read(file, path)
    except EOFError as exc:
        raise DataError(f"{path}: the file ends early (truncated download?); "
                        "delete it and fetch it again") from exc
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc


def _read(file, path: Path) -> np.ndarray:
    magic = file.read(4)
    if len(magic) != 4 or magic[:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file (magic number {magic.hex() or 'missing'}, "
                        "expected 0000 then a type byte and a dimension count)")
    if magic[2] != UBYTE:
        raise DataError(f"{path}: IDX type 0x{magic[2]:02x}; gpunn reads only unsigned bytes "
                        "(0x08), as MNIST and Fashion-MNIST use")
    ndim = magic[3]
    header = file.read(4 * ndim)
    if len(header) != 4 * ndim:
        raise EOFError
    shape = struct.unpack(f">{ndim}I", header)
    if not isinstance(file, gzip.GzipFile) and (  # a plain file: its size is known
            4 + 4 * ndim + int(np.prod(shape, dtype=np.int64)) > os.fstat(file.fileno()).st_size):
        raise DataError(f"{path}: the header says shape {shape} but the file is too short "
                        "for it; delete it and fetch it again")
    try:
        data = np.empty(shape, dtype=np.uint8)
    except (ValueError, MemoryError) as exc:  # a damaged header can claim terabytes
        raise DataError(f"{path}: the header claims shape {shape}, more than fits in memory; "
                        "the file is damaged or not IDX") from exc
    view, done = memoryview(data.reshape(-1)), 0
    while done < data.size:  # into the array in 1 MiB steps: gzip would copy a larger read
        got = file.readinto(view[done:done + (1 << 20)])
        if not got:
            raise DataError(f"{path}: the header says shape {shape} ({data.size} bytes of data) "
                            f"but the file ends after {done}; delete it and fetch it again")
        done += got
    if file.read(1):
        raise DataError(f"{path}: more data than the header's shape {shape} says; "
                        "the file is damaged or not IDX")
    return data
