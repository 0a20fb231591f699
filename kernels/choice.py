"""Measured choices between equivalent kernel variants, kept on disk like Numba's compiled code.

Some ops have two ways to run that give the same result within rounding, and which is
faster depends on the shape and the machine (conv2d's two im2col layouts: see
:mod:`gpunn.kernels.conv_numba`). :func:`choose` times the candidates in turn for a key (the
shapes, the dtype, the thread count), keeps the fastest's name in memory and in
``choices.json`` beside Numba's cache (:func:`gpunn.kernels.registry.prepare_numba_cache`),
and answers later calls, in this process or the next, without timing anything. The file is
keyed by CPU model too; delete it to measure afresh. Never called from a timed test.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from gpunn.kernels.registry import prepare_numba_cache

_MEMORY: dict[str, str] = {}
FILE_NAME = "choices.json"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), else the platform's."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _path() -> Path:
    return prepare_numba_cache() / FILE_NAME


def _read() -> dict:
    try:
        with open(_path()) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or damaged: measure again


def _write(key: str, name: str) -> None:
    data = _read()
    data[key] = name
    path = _path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".choices-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=0, sort_keys=True)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one
    except OSError:
        pass  # an unwritable cache only costs a measurement in the next process


MARGIN = 0.10  # another candidate must beat the first (the default) by this fraction


def choose(key: str, candidates: dict, repeat: int = 3) -> str:
    """The name of the fastest of ``candidates`` (name -> a function of no arguments) for
    ``key``. Each runs once to warm up (compiles), then the candidates take turns, ``repeat``
    rounds, and each keeps its fastest time: a burst of load from another process then slows
    every candidate alike rather than the one that happened to be running. The first
    candidate is the default; another is chosen only when it is at least :data:`MARGIN`
    faster, so that noise does not fix a slower variant on disk for good."""
    full = f"{cpu_model()} | {key}"
    name = _MEMORY.get(full)
    if name is None:
        name = _read().get(full)
    if name not in candidates:
        for run in candidates.values():
            run()
        best = dict.fromkeys(candidates, float("inf"))
        order = list(candidates)
        for i in range(repeat):
            for candidate in (order if i % 2 == 0 else order[::-1]):
                best[candidate] = min(best[candidate], _timed(candidates[candidate]))
        name = order[0]
        for candidate in order[1:]:
            if best[candidate] < (1 - MARGIN) * best[name]:
                name = candidate
        _write(full, name)
    _MEMORY[full] = name
    return name


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start
