"""The op x backend table of kernels, imported lazily.

An entry maps ``(op, backend)`` to ``"module:attribute"``; the attribute is an object with
``forward(...)`` and ``backward(...)`` (see each op's module for its signature). Backends:
``numpy`` (the reference), ``numba`` (CPU), ``cupy`` (GPU).

The Numba kernels are ``@njit(cache=True)``: compiled on first use (seconds to a minute) and
kept on disk. Numba writes beside the sources, in ``__pycache__``; where the installed
package is read-only, :func:`prepare_numba_cache` points ``NUMBA_CACHE_DIR`` at gpunn's cache
(``$XDG_CACHE_HOME/gpunn/numba``, else a folder in the temporary directory) before the first
Numba kernel module is imported, unless the user has set it. :func:`first_compile_likely`
tells a command whether to say that a compile is coming.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

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
            if key[1] == "numba":
                prepare_numba_cache()
                prepare_numba_threads()
            impl = getattr(importlib.import_module(module), attr)
            _LOADED[key] = impl
            return impl
    have = ", ".join(f"{o}/{b}" for o, b in sorted(_TABLE)) or "none"
    raise KernelNotFound(
        f"no kernel {op!r} for backend {backend!r}"
        + (f" (nor {fallback!r})" if fallback else "")
        + f"; registered: {have}"
    )


# -- Numba's on-disk cache ------------------------------------------------------------------------
_KERNELS_DIR = Path(__file__).resolve().parent
_NUMBA_CACHE: dict[str, Path | None] = {}  # "dir" -> where Numba caches, once decided


def prepare_numba_cache() -> Path:
    """The folder Numba keeps compiled kernels in, made writable if it was not; idempotent.

    ``$NUMBA_CACHE_DIR`` when the user set it; else ``__pycache__`` beside the kernels when
    that can be written; else the first writable of ``$XDG_CACHE_HOME/gpunn/numba`` (default
    ``~/.cache/gpunn/numba``) and ``<tmp>/gpunn-numba-<uid>``, which then becomes
    ``NUMBA_CACHE_DIR`` (so a read-only install, such as a system package or a container
    image, compiles once per user rather than failing or compiling every run).
    """
    if "dir" in _NUMBA_CACHE:
        return _NUMBA_CACHE["dir"]
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        found = Path(chosen)
    elif _writable(_KERNELS_DIR / "__pycache__"):
        found = _KERNELS_DIR / "__pycache__"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        # the same place as gpunn.data.cache_dir(); kernels import nothing from gpunn
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        candidates = [Path(xdg) / "gpunn" / "numba",
                      Path(tempfile.gettempdir()) / f"gpunn-numba-{uid}"]
        found = next((c for c in candidates if _writable(c)), candidates[0])
        os.environ["NUMBA_CACHE_DIR"] = str(found)
        config = sys.modules.get("numba.core.config")
        if config is not None:  # Numba already imported: it read the variable then
            config.CACHE_DIR = str(found)
    _NUMBA_CACHE["dir"] = found
    return found


def prepare_numba_threads() -> None:
    """Make Numba's OpenMP threads sleep, not spin, between parallel loops; before it starts them.

    The CPU kernels alternate Numba loops with BLAS products on the same cores. OpenMP's
    default is to keep its threads spinning after a loop, which leaves BLAS's threads no core:
    on 2 cores the chapter-6 net ran 20x slower on 2 threads than on 1. ``OMP_WAIT_POLICY=
    passive`` is read once, when Numba loads its OpenMP layer; a value the user set is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def run_loop(serial, parallel, *args) -> None:
    """Call a CPU kernel's ``prange`` driver when Numba may use several threads, else its
    serial driver (no parallel launch to pay for on one thread). Imports Numba."""
    import numba

    (parallel if numba.get_num_threads() > 1 else serial)(*args)


def first_compile_likely(ops=None) -> bool:
    """True when a Numba kernel of ``ops`` (default: every registered one) has nothing
    compiled on disk yet, so its first call will compile (seconds to a minute).

    A command asks this before training on the CPU, to say "compiling kernels (first run
    only)". It reads directory listings only: it imports neither Numba nor a kernel.
    """
    where = prepare_numba_cache()
    ops = sorted({op for op, _ in _TABLE}) if ops is None else list(ops)
    for op in ops:
        target = _TABLE.get((op, "numba"))
        if target is None:
            continue
        stem = target.split(":")[0].rsplit(".", 1)[-1]  # gpunn.kernels.conv_numba -> conv_numba
        # an op's loops may live in modules named after it (conv_numba_pixels, ...)
        if not where.is_dir() or next(where.rglob(f"{stem}*.nbi"), None) is None:
            return True
    return False


def _writable(directory: Path) -> bool:
    """Whether files can be created in ``directory`` (made if missing); leaves no file."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return False
    return True
