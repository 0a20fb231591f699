"""Read the book's ``mnist.pkl.gz`` safely and in little memory.

The book's file is a Python 2 pickle (protocol 2) of three ``(images, labels)`` tuples. Each
NumPy array in it is ``numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')`` followed by a
BUILD whose state is ``(1, shape, dtype, is_fortran, <raw bytes>)``; for the training images
the raw bytes are one 156,800,000-byte string. ``pickle.load`` would hold that string, the
float32 array made from it and gzip's buffers at once (about 1 GB of RSS), and it would run
whatever callable a hostile file names.

:class:`SafeArrayUnpickler` does neither. It admits three globals, ``_reconstruct``,
``ndarray`` and ``dtype``, and maps them to harmless stand-ins; any other global raises
:class:`~gpunn.errors.DataError`. It reads an array's raw bytes in chunks (4 MiB) and stores
float pixels that are exact multiples of 1/256 (the book's are) as uint8, so the float32 payload
never exists whole. A file whose floats are not exactly quantised is kept as float32.

What it leaves out: object arrays, protocol-5 out-of-band buffers, and any pickle that is not
made of plain numeric NumPy arrays in tuples and lists.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from gpunn.errors import DataError

__all__ = ["SafeArrayUnpickler", "load_array_pickle"]

#: The step of the book's pixel values: every one is k/256 for an integer k in 0..255.
BOOK_SCALE = 1.0 / 256

_RECONSTRUCT = {  # numpy.core in the book's Python 2 file; numpy._core in pickles of NumPy 2
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class _NdarrayMarker:
    """Stands for ``numpy.ndarray`` in the pickle; calling it creates nothing."""


class _PickledArray:
    """What ``_reconstruct`` returns here: an empty slot that BUILD fills.

    After BUILD, ``array`` holds the data (uint8 when the floats were exact multiples of
    ``scale``, else the stored dtype or float32) and ``scale`` says what one unit is worth.
    """

    def __init__(self):
        self.array = None
        self.scale = 1.0

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError(f"array state should be a 5-tuple, found {state!r:.80}")
        _, shape, dtype, fortran, data = state
        if isinstance(data, _Streamed):
            self.array, self.scale = data.array, data.scale
        else:  # a small array whose bytes came through the ordinary opcodes
            if isinstance(data, str):
                data = data.encode("latin1")  # Python 2 str, decoded as latin1 by the loader
            if not isinstance(data, bytes | bytearray):
                raise pickle.UnpicklingError(f"array data should be bytes, found {type(data)}")
            self.array, self.scale = _convert(_check_layout(shape, dtype, len(data)),
                                              [bytes(data)])
        order = "F" if fortran else "C"
        self.array = self.array.reshape(shape, order=order)


class _Streamed:
    """An array's bytes, already read and converted by the streaming opcode handler."""

    def __init__(self, array, scale):
        self.array, self.scale = array, scale


def _safe_dtype(obj, align=0, copy=1):
    """``numpy.dtype`` for numeric types only (no object arrays, which pickle code)."""
    dtype = np.dtype(obj)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"dtype {dtype} is not a plain numeric type")
    return dtype


def _reconstruct(cls, shape, typecode):
    if cls is not _NdarrayMarker:
        raise pickle.UnpicklingError(f"_reconstruct called with {cls!r}, expected ndarray")
    return _PickledArray()


def _check_layout(shape, dtype, nbytes):
    """The number of elements, after checking that shape, dtype and byte count agree."""
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise pickle.UnpicklingError(f"array shape should be a tuple of sizes, found {shape!r}")
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError(f"array dtype should be a numpy dtype, found {dtype!r}")
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize != nbytes:
        raise pickle.UnpicklingError(
            f"array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} bytes; "
            f"the file holds {nbytes}"
        )
    return dtype, count


def _convert(layout, chunks):
    """Turn an array's raw byte chunks into ``(flat array, scale)``.

    Floats go to uint8 while every value is exactly k/256 (k = 0..255); at the first value that
    is not, what was converted so far is widened to float32 and the rest follows as float32.
    Integers are kept in their own dtype.
    """
    dtype, count = layout
    if dtype.kind != "f":
        out = np.empty(count, dtype=dtype.newbyteorder("="))
        done = 0
        for chunk in chunks:
            part = np.frombuffer(chunk, dtype=dtype)
            out[done:done + part.size] = part
            done += part.size
        return out, 1.0
    out, scale, done = np.empty(count, dtype=np.uint8), BOOK_SCALE, 0
    for chunk in chunks:
        part = np.frombuffer(chunk, dtype=dtype).astype(np.float32, copy=False)
        if out.dtype == np.uint8:
            with np.errstate(invalid="ignore", over="ignore"):
                k = part * np.float32(256)
                q = k.astype(np.uint8)
            if np.array_equal(q, k):  # exact, and inside 0..255 (NaN and overflow fail here)
                out[done:done + part.size] = q
                done += part.size
                continue
            widened = np.empty(count, dtype=np.float32)
            np.multiply(out[:done], np.float32(BOOK_SCALE), out=widened[:done])
            out, scale = widened, 1.0
        out[done:done + part.size] = part
        done += part.size
    return out, scale


class SafeArrayUnpickler(pickle._Unpickler):
    """A pure-Python unpickler that admits only numeric NumPy arrays, read in chunks.

    Subclasses the pure-Python ``pickle._Unpickler`` because the C unpickler does not let
    one replace how BINSTRING/BINBYTES payloads are read.
    """

    chunk_bytes = 4 << 20  # a multiple of 8 (every itemsize), so chunks split between elements

    def __init__(self, file):
        super().__init__(file, encoding="latin1")

    def find_class(self, module, name):
        if (module, name) in _RECONSTRUCT:
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _NdarrayMarker
        if (module, name) == ("numpy", "dtype"):
            return _safe_dtype
        raise DataError(
            f"refuses to load the global {module}.{name}: a data pickle may hold only NumPy "
            "arrays, and this one names other code that unpickling would run"
        )

    def _load_payload(self, nbytes, decode):
        """Read a string payload: streamed into an array when it is an array's data."""
        stack = self.stack  # items since the MARK of the state tuple (1, shape, dtype, fortran)
        if len(stack) == 4 and isinstance(stack[2], np.dtype) and isinstance(stack[1], tuple):
            layout = _check_layout(stack[1], stack[2], nbytes)
            self.append(_Streamed(*_convert(layout, self._chunks(nbytes))))
            return
        if nbytes > self.chunk_bytes:
            raise pickle.UnpicklingError(f"a {nbytes}-byte string that is not array data")
        data = self.read(nbytes)
        if len(data) != nbytes:
            raise EOFError
        self.append(decode(data))

    def _chunks(self, nbytes):
        left = nbytes
        while left:
            want = min(left, self.chunk_bytes)
            chunk = self.read(want)
            if len(chunk) != want:
                raise EOFError
            left -= want
            yield chunk

    def _load_short_binstring(self):
        self._load_payload(self.read(1)[0], self._decode_string)

    def _load_short_binbytes(self):
        self._load_payload(self.read(1)[0], bytes)

    def _load_binstring(self):
        (nbytes,) = struct.unpack("<i", self.read(4))
        if nbytes < 0:
            raise pickle.UnpicklingError("BINSTRING pickle has negative byte count")
        self._load_payload(nbytes, self._decode_string)

    def _load_binbytes(self):
        (nbytes,) = struct.unpack("<I", self.read(4))
        self._load_payload(nbytes, bytes)

    def _load_binbytes8(self):
        (nbytes,) = struct.unpack("<Q", self.read(8))
        self._load_payload(nbytes, bytes)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.SHORT_BINSTRING[0]] = _load_short_binstring
    dispatch[pickle.SHORT_BINBYTES[0]] = _load_short_binbytes
    dispatch[pickle.BINSTRING[0]] = _load_binstring
    dispatch[pickle.BINBYTES[0]] = _load_binbytes
    dispatch[pickle.BINBYTES8[0]] = _load_binbytes8


def _unwrap(obj):
    """Replace every filled array slot by ``(array, scale)``; tuples and lists keep their shape."""
    if isinstance(obj, _PickledArray):
        if obj.array is None:
            raise pickle.UnpicklingError("an array was created but never given its data")
        return obj.array, obj.scale
    if isinstance(obj, tuple | list):
        return type(obj)(_unwrap(item) for item in obj)
    return obj


def load_array_pickle(path):
    """Load a (gzipped or plain) pickle of NumPy arrays without running code from it.

    Returns the pickled structure with every array replaced by ``(array, scale)``: ``array`` is
    uint8 with ``scale = 1/256`` where the floats were exactly k/256, else the stored numbers
    with ``scale = 1.0``. Raises :class:`DataError` naming ``path`` for anything else.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            file = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            return _unwrap(SafeArrayUnpickler(file).load())
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    except EOFError as exc:
        raise DataError(f"{path}: the file ends early (truncated download?); "
                        "delete it and fetch it again") from exc
    except (pickle.UnpicklingError, struct.error, zlib.error, gzip.BadGzipFile, ValueError,
            TypeError, KeyError, IndexError, AttributeError, MemoryError) as exc:
        raise DataError(f"{path}: not a pickle of NumPy arrays gpunn can read ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
