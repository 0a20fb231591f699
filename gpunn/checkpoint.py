"""Checkpoints: a network and the state to continue training it, one file per moment.

A checkpoint is an ``.npz`` archive like a model file (:mod:`gpunn.io`): the parameters
``w0, b0, ...``, the state's arrays ``state.0, state.1, ...`` and a JSON document
(``meta.json``) with the format version, the architecture and the state's plain values. It is
read with ``allow_pickle=False`` and written atomically (temporary file in the same directory,
fsync, rename, fsync of the directory), so a crash or a full disk at any moment leaves the
previous checkpoint intact.

The files of one run live in one directory as ``ckpt-000001.npz``, ``ckpt-000002.npz``, ...;
the highest number is the latest, and only the last ``keep`` are kept. The library decides
nothing about when to write: :meth:`gpunn.Network.sgd` hands its resumable state to an
``on_checkpoint`` callback, and the caller (``gpunn train``) writes it here::

    from gpunn.checkpoint import save_checkpoint, load_checkpoint, latest_checkpoint

    net.sgd(train, 30, 10, 3.0, on_checkpoint=lambda s: save_checkpoint("ck", net, s))
    net, state = load_checkpoint("ck")              # the latest checkpoint in ck/
    net.sgd(train, 30, 10, 3.0, resume=state)       # continues exactly where it stopped

``state`` is any dict of JSON values (str, int, float, bool, None, lists, dicts) and arrays
(NumPy or CuPy, at any depth); arrays come back as NumPy arrays on the host. What it leaves
out: the training data and anything not put in ``state``.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np

from gpunn.errors import CheckpointError, ConfigError
from gpunn.io import (
    build_network,
    check_format,
    network_arrays,
    network_meta,
    read_npz,
    write_npz_atomic,
)

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints",
           "FORMAT", "FORMAT_VERSION"]

FORMAT = "gpunn-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt-(\d{6,})\.npz")
_ARRAY = "__array__"  # {"__array__": "state.3"} in meta.json stands for arrays["state.3"]


def list_checkpoints(directory) -> list[Path]:
    """The checkpoints in ``directory``, oldest first (empty if there is none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory) -> Path | None:
    """The newest checkpoint in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_checkpoint(directory, net, state: dict, keep: int = 3) -> Path:
    """Write ``net`` and ``state`` as the next checkpoint in ``directory``; returns its path.

    Keeps the newest ``keep`` checkpoints (>= 1) and deletes older ones. Raises
    :class:`CheckpointError` when the file cannot be written; the previous checkpoint is
    then untouched and the message names it.
    """
    if not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"keep must be an integer >= 1; received {keep!r}")
    directory = Path(directory)
    existing = list_checkpoints(directory)
    number = int(_NAME.fullmatch(existing[-1].name).group(1)) + 1 if existing else 1
    path = directory / f"ckpt-{number:06d}.npz"
    arrays = network_arrays(net)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **network_meta(net),
            "state": _encode(state, arrays, net.backend.to_numpy)}
    try:
        write_npz_atomic(path, arrays, meta)
    except OSError as exc:
        kept = (f"the previous checkpoint {existing[-1]} is intact" if existing
                else "no earlier checkpoint exists")
        raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}; "
                              f"{kept}; free space or choose a writable --checkpoint-dir"
                              ) from exc
    for old in (existing + [path])[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()
    return path


def load_checkpoint(path_or_dir, backend="auto"):
    """``(net, state)`` from a checkpoint file, or from the latest good one in a directory.

    ``net`` is rebuilt on ``backend`` (a Backend or device string) from the architecture the
    file records; ``state`` is the dict given to :func:`save_checkpoint`, its arrays as NumPy,
    plus ``checkpoint_path`` (the file read) and ``skipped``: for a directory whose newest
    checkpoints are damaged (truncated, garbled), each one passed over for an older one, as
    ``{"path": str, "reason": str}``, newest first (empty when none was). A file named
    explicitly is never skipped, and neither is one of another format version (it is not
    damaged: it needs another gpunn). Raises :class:`CheckpointError` naming the file for
    anything missing or damaged, and every file when all in the directory are damaged.
    """
    path = Path(path_or_dir)
    if not path.is_dir():
        if not path.exists():
            raise CheckpointError(f"checkpoint {path} does not exist; give a ckpt-NNNNNN.npz "
                                  f"file or the directory that holds them")
        net, state = _read_checkpoint(path, backend)
        state["skipped"] = []
        return net, state
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"no checkpoint (ckpt-NNNNNN.npz) in {path}; train with "
                              f"`gpunn train --checkpoint-dir {path}` to write some")
    skipped = []
    for candidate in reversed(found):
        try:
            net, state = _read_checkpoint(candidate, backend)
        except _Damaged as exc:
            skipped.append({"path": str(candidate), "reason": str(exc)})
            continue
        state["skipped"] = skipped
        return net, state
    raise CheckpointError(f"every checkpoint in {path} is damaged: "
                          + "; ".join(s["reason"] for s in skipped)
                          + "; delete the directory and train from the start")


class _Damaged(CheckpointError):
    """A checkpoint file that cannot be read back (truncated, garbled, inconsistent)."""


def _read_checkpoint(path: Path, backend):
    meta, arrays = read_npz(path, "gpunn checkpoint", _Damaged)
    check_format(path, meta, FORMAT, FORMAT_VERSION, "gpunn checkpoint", CheckpointError)
    net = build_network(path, meta, arrays, backend, _Damaged)
    state = _decode(meta.get("state"), arrays, path)
    if not isinstance(state, dict):
        raise _Damaged(f"{path}: its state record is corrupt (not a JSON object)")
    state["checkpoint_path"] = str(path)
    return net, state


def _encode(obj, arrays: dict, to_numpy):
    """``obj`` as JSON values, its arrays moved into ``arrays`` as ``state.N``."""
    if isinstance(obj, dict):
        return {str(k): _encode(v, arrays, to_numpy) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays, to_numpy) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # a NumPy or CuPy array
        key = f"state.{sum(k.startswith('state.') for k in arrays)}"
        arrays[key] = np.asarray(to_numpy(obj))
        return {_ARRAY: key}
    raise ConfigError(f"a checkpoint's state holds JSON values and arrays; received "
                      f"{type(obj).__name__}")


def _decode(obj, arrays: dict, path):
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            try:
                return arrays[obj[_ARRAY]]
            except (KeyError, TypeError):
                raise _Damaged(f"{path}: array {obj[_ARRAY]!r} of its state is missing "
                                      f"(the file is corrupt)") from None
        return {k: _decode(v, arrays, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays, path) for v in obj]
    return obj
