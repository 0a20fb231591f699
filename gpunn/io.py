"""Saving and loading networks without pickle.

A model file is one ``.npz`` archive: the parameters as plain arrays (``w0, b0, w1, ...``)
and a UTF-8 JSON document (``meta.json``, stored as a uint8 array) with the format version,
the architecture and the training settings. It is read with ``allow_pickle=False``, so a
model file cannot run code, and it is written atomically (a ``.part`` file, then a rename),
so an interrupted save never leaves half a file. Arrays are saved from the host, so a model
trained on a GPU loads on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from gpunn.errors import ConfigError, ModelFileError

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "gpunn-network"
FORMAT_VERSION = 1


def save(net, path, training: dict | None = None) -> Path:
    """Write ``net`` to ``path`` (``.npz`` is appended if missing); returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": net.config(),
        "training": training or {},
        "trained_on": net.backend.device,
    }
    arrays = {}
    for i, layer in enumerate(net.layers):
        for name in ("w", "b"):
            if getattr(layer, name, None) is not None:
                arrays[f"{name}{i}"] = net.backend.to_numpy(getattr(layer, name))
    arrays["meta.json"] = np.frombuffer(json.dumps(meta, indent=1).encode(), dtype=np.uint8)
    part = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise ModelFileError(f"could not write model file {path}: {exc.strerror or exc}; "
                             f"check the directory exists, is writable and has space") from exc
    return path


def read_meta(path) -> tuple[dict, dict]:
    """(meta, arrays) of a model file, checked for format and version."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; train one with "
                             f"`gpunn train --save {path}`")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"{path} is not a gpunn model file (not a readable .npz: "
                             f"{exc})") from exc
    if "meta.json" not in arrays:
        raise ModelFileError(f"{path} is an .npz but not a gpunn model file (no meta.json)")
    try:
        meta = json.loads(arrays.pop("meta.json").tobytes().decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: its meta.json is corrupt ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a gpunn network file (format "
                             f"{meta.get('format') if isinstance(meta, dict) else '?'!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} has format version {version}; this gpunn reads version "
                             f"{FORMAT_VERSION}; upgrade gpunn or re-train the model")
    return meta, arrays


def load(path, backend="auto"):
    """The network saved at ``path``, on ``backend`` (a Backend or device string)."""
    from gpunn.layers import from_config
    from gpunn.network import Network

    meta, arrays = read_meta(path)
    arch = meta.get("architecture") or {}
    try:
        layers = [from_config(c) for c in arch["layers"]]
        net = Network(layers, cost=arch["cost"], init=arch.get("init", "default"), seed=0,
                      backend=backend, input_shape=arch["input_shape"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ModelFileError(f"{path}: its architecture record is invalid ({exc})") from exc
    net.seed = arch.get("seed")
    net.sizes = arch.get("sizes")
    for i, layer in enumerate(net.layers):
        for name, param in (("w", getattr(layer, "w", None)), ("b", getattr(layer, "b", None))):
            if param is None:
                continue
            a = arrays.get(f"{name}{i}")
            if a is None or a.shape != param.shape:
                got = None if a is None else a.shape
                raise ModelFileError(
                    f"{path}: parameter {name}{i} should have shape {tuple(param.shape)} for "
                    f"layer {layer!r}; the file has {got} — the file does not match its "
                    f"architecture (corrupt or edited)"
                )
            setattr(layer, name, net.backend.asarray(a, dtype=net.dtype))
    net.training = meta.get("training", {})
    return net
