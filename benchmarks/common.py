"""Shared plumbing of the benchmark scripts: the machine's description, medians, RESULTS.md.

Benchmarks are scripts (``python benchmarks/bench_X.py``), never collected by pytest. Each
writes its own section of ``benchmarks/RESULTS.md`` between markers, leaving the others.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """One line naming the CPU, cores, Python, NumPy/Numba/torch versions and BLAS threads."""
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [
        cpu,
        f"{os.cpu_count()} cores",
        f"Python {platform.python_version()}",
        f"NumPy {np.__version__}",
    ]
    for name in ("numba", "torch", "cupy"):
        try:
            module = __import__(name)
            parts.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    threads = os.environ.get("OMP_NUM_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS")
    parts.append(f"BLAS threads {threads or 'default'}")
    return ", ".join(parts)


def median_time(fn, repeat: int = 7, warmup: int = 1, sync=None) -> float:
    """Median wall seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_section(name: str, body: str) -> None:
    """Replace (or append) section ``name`` of RESULTS.md with ``body``, dated."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = (
        f"<!-- BEGIN {name} -->\n## {name}\n\n_Measured {stamp} on: {machine()}_\n\n"
        f"{body.rstrip()}\n<!-- END {name} -->\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->\n",
                         re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    RESULTS.write_text(text)


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def torch_epoch_seconds(model, opt, loss_fn, X, Y, mb: int, n: int | None = None) -> float:
    """Seconds of one PyTorch SGD pass over ``n`` (default all) shuffled rows of ``X``, ``Y``
    in mini-batches of ``mb``: the same work gpunn's epochs do, synchronised on CUDA."""
    import torch

    n = len(X) if n is None else n
    perm = torch.randperm(len(X), device=X.device)[:n]
    start = time.perf_counter()
    for k in range(0, n, mb):
        idx = perm[k:k + mb]
        loss = loss_fn(model(X[idx]), Y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if X.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
