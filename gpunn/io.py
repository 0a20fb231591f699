"""Saving and loading networks without pickle.

A model file is one ``.npz`` archive: the parameters as plain arrays (``w0, b0, w1, ...``)
and a UTF-8 JSON document (``meta.json``, stored as a uint8 array) with the format version,
the architecture and the training settings. It is read with ``allow_pickle=False``, so a
model file cannot run code, and it is written atomically (a hidden ``.part`` file in the
same directory, fsynced, then a rename and an fsync of the directory), so an interrupted
save never leaves half a file. The pieces (``write_npz_atomic``, ``read_npz``,
``build_network``) are shared with :mod:`gpunn.checkpoint`. Arrays are saved from the host,
so a model trained on a GPU loads on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from gpunn.errors import ModelFileError

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "gpunn-network"
FORMAT_VERSION = 1


def save(net, path, training: dict | None = None) -> Path:
    """Write ``net`` to ``path`` (``.npz`` is appended if missing); returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **network_meta(net),
            "training": training or {}}
    try:
        write_npz_atomic(path, network_arrays(net), meta)
    except OSError as exc:
        raise ModelFileError(f"could not write model file {path}: {exc.strerror or exc}; "
                             f"check the directory exists, is writable and has space") from exc
    return path


# -- the pieces, shared with gpunn.checkpoint ----------------------------------------------
def network_meta(net) -> dict:
    """What rebuilds ``net``: its architecture, dtype and the device it was trained on."""
    return {"architecture": net.config(), "dtype": net.dtype.name,
            "trained_on": net.backend.device}


def network_arrays(net) -> dict:
    """The parameters as host arrays named ``w0, b0, w1, ...`` (by layer index)."""
    arrays = {}
    for i, layer in enumerate(net.layers):
        for name in ("w", "b"):
            if getattr(layer, name, None) is not None:
                arrays[f"{name}{i}"] = net.backend.to_numpy(getattr(layer, name))
    return arrays


def write_atomic(path, write) -> Path:
    """Write ``path`` all or nothing: ``write(f)`` fills a binary file that becomes ``path``.

    The data goes to ``.<name>.part`` in the same directory, is fsynced, renamed over
    ``path`` and the directory fsynced, so a crash at any moment leaves either the old file
    or the new one. Raises OSError (after removing the part file) when the write fails.
    """
    path = Path(path)
    part = path.with_name(f".{path.name}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def write_npz_atomic(path: Path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` and ``meta`` (as ``meta.json``) to the .npz ``path`` all or nothing."""
    arrays = dict(arrays)
    arrays["meta.json"] = np.frombuffer(json.dumps(meta, indent=1, default=_json_default)
                                        .encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays))


def write_json_atomic(path, payload) -> Path:
    """Write ``payload`` as indented JSON to ``path`` all or nothing (NumPy scalars allowed)."""
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    return write_atomic(path, lambda f: f.write(text.encode()))


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the OS allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(obj):
    if isinstance(obj, np.generic):  # NumPy scalars in histories and configs
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# Everything a damaged or hostile .npz can make np.load and the zip reader raise.
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, OverflowError,
               MemoryError, RuntimeError, struct.error, zlib.error, zipfile.BadZipFile)


def read_npz(path, what: str = "gpunn model file", error=ModelFileError) -> tuple[dict, dict]:
    """(meta, arrays) of an archive written by :func:`write_npz_atomic`, unchecked.

    Any unreadable file raises ``error`` naming ``path`` and ``what`` it should have been.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} does not exist or is not a file")
    try:
        kind = _foreign_kind(path)
    except _UNREADABLE as exc:
        raise error(f"{path} is not a {what} (not a readable .npz: {exc})") from exc
    if kind:
        # Never suggest allow_pickle: a pickle can run any code when it is loaded.
        raise error(f"{path} is not a {what}: it is {kind}; gpunn reads only the .npz "
                    f"archives it writes, which hold plain arrays, never pickles")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except _UNREADABLE as exc:
        raise error(f"{path} is not a {what} (not a readable .npz: {exc})") from exc
    if "meta.json" not in arrays:
        raise error(f"{path} is an .npz but not a {what} (no meta.json)")
    try:
        meta = json.loads(arrays.pop("meta.json").tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{path}: its meta.json is corrupt ({exc})") from exc
    if not isinstance(meta, dict):
        raise error(f"{path}: its meta.json is corrupt (not a JSON object)")
    return meta, arrays


def _foreign_kind(path: Path) -> str | None:
    """What ``path`` is when it cannot be a gpunn archive ("a Python pickle", ...), else None.

    Reads only the first bytes and the array headers: nothing is unpickled.
    """
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:1] == b"\x80":
        return "a Python pickle"
    if head == b"\x93NUMPY":
        return "a single .npy array"
    if not zipfile.is_zipfile(path):
        return "not an .npz archive (a truncated file, or another kind)"
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                if read_header(f)[2].hasobject:
                    return (f"an .npz holding pickled Python objects "
                            f"({name.removesuffix('.npy')})")
    return None


def check_format(path, meta: dict, fmt: str, version: int, what: str = "gpunn network file",
                 error=ModelFileError) -> None:
    """Raise ``error`` unless ``meta`` names format ``fmt`` at ``version``."""
    if fmt == FORMAT and meta.get("format") == "gpunn-checkpoint":
        raise error(f"{path} is a gpunn checkpoint, not a model file; `gpunn export {path} "
                    f"-o model.npz` writes its network as one")
    if meta.get("format") != fmt:
        raise error(f"{path} is not a {what} (format {meta.get('format')!r}, expected "
                    f"{fmt!r})")
    found = meta.get("format_version")
    if found != version:
        raise error(f"{path} has format version {found}; this gpunn reads version {version}; "
                    f"upgrade gpunn or re-train the model")


def read_meta(path) -> tuple[dict, dict]:
    """(meta, arrays) of a model file, checked for format and version."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; train one with "
                             f"`gpunn train --save {path}`")
    meta, arrays = read_npz(path)
    check_format(path, meta, FORMAT, FORMAT_VERSION)
    return meta, arrays


def load(path, backend="auto"):
    """The network saved at ``path``, on ``backend`` (a Backend or device string).

    ``path`` may also be a checkpoint file (``ckpt-NNNNNN.npz``, :mod:`gpunn.checkpoint`):
    its network is loaded and ``net.training`` is the configuration the run recorded.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; train one with "
                             f"`gpunn train --save {path}`")
    meta, arrays = read_npz(path)
    if meta.get("format") == "gpunn-checkpoint":
        from gpunn.checkpoint import load_checkpoint

        net, state = load_checkpoint(path, backend)
        config = state.get("config")
        net.training = config if isinstance(config, dict) else {}
        return net
    check_format(path, meta, FORMAT, FORMAT_VERSION)
    net = build_network(path, meta, arrays, backend)
    net.training = meta.get("training", {})
    return net


def build_network(path, meta: dict, arrays: dict, backend="auto", error=ModelFileError):
    """The network that ``meta["architecture"]`` describes, with the parameters in
    ``arrays``; ``error`` (naming ``path``) when they do not fit together."""
    from gpunn.layers import from_config
    from gpunn.network import Network

    arch = meta.get("architecture")
    try:
        layers = [from_config(c) for c in arch["layers"]]
        net = Network(layers, cost=arch["cost"], init=arch.get("init", "default"), seed=0,
                      backend=backend, input_shape=arch["input_shape"],
                      dtype=np.dtype(meta.get("dtype", "float32")))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            MemoryError) as exc:  # ConfigError is a ValueError
        raise error(f"{path}: its architecture record is invalid ({exc})") from exc
    net.seed = arch.get("seed")
    net.sizes = arch.get("sizes")
    for i, layer in enumerate(net.layers):
        for name, param in (("w", getattr(layer, "w", None)), ("b", getattr(layer, "b", None))):
            if param is None:
                continue
            a = arrays.get(f"{name}{i}")
            if a is None or a.shape != param.shape or a.dtype.kind not in "fiu":
                got = None if a is None else f"{a.shape} {a.dtype}"
                raise error(
                    f"{path}: parameter {name}{i} should have shape {tuple(param.shape)} for "
                    f"layer {layer!r}; the file has {got} — the file does not match its "
                    f"architecture (corrupt or edited)"
                )
            setattr(layer, name, net.backend.asarray(a, dtype=net.dtype))
    return net
