"""The op x backend table of kernels, imported lazily.

An entry maps ``(op, backend)`` to ``"module:attribute"``; the attribute is an object with
``forward(...)`` and ``backward(...)`` (see each op's module for its signature). Backends:
``numpy`` (the reference), ``numba`` (CPU), ``cupy`` (GPU).
"""

from __future__ import annotations

import importlib

BACKENDS = ("numpy", "numba", "cupy")

_TABLE: dict[tuple[str, str], str] = {}
_LOADED: dict[tuple[str, str], object] = {}


class KernelNotFound(LookupError):
    """No implementation is registered for an (op, backend) pair."""


def register(op: str, backend: str, target: str) -> None:
    """Register ``target`` ("module:attribute") as the ``backend`` implementation of ``op``."""
    if backend not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS}; received {backend!r}")
    _TABLE[(op, backend)] = target
    _LOADED.pop((op, backend), None)


def available() -> dict[str, list[str]]:
    """``{op: [backends...]}`` for every registered kernel."""
    out: dict[str, list[str]] = {}
    for op, backend in sorted(_TABLE):
        out.setdefault(op, []).append(backend)
    return out


def lookup(op: str, backend: str, fallback: str | None = None):
    """The implementation of ``op`` for ``backend``, else for ``fallback`` if given."""
    for key in ((op, backend), (op, fallback)):
        if key in _LOADED:
            return _LOADED[key]
        target = _TABLE.get(key)
        if target is not None:
            module, attr = target.split(":")
            impl = getattr(importlib.import_module(module), attr)
            _LOADED[key] = impl
            return impl
    have = ", ".join(f"{o}/{b}" for o, b in sorted(_TABLE)) or "none"
    raise KernelNotFound(
        f"no kernel {op!r} for backend {backend!r}"
        + (f" (nor {fallback!r})" if fallback else "")
        + f"; registered: {have}"
    )
