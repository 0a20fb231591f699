"""Data-parallel training on this machine, and a model of alexnet on 1-8 GPUs with NCCL.

    python benchmarks/bench_data_parallel.py            # needs gpunn[mpi] (mpiexec)

Measures, for the chapter-6 net (ch6-relu) and alexnet-small on synthetic images, one
process with 2 threads (and with 1) beside ``mpiexec -n 2`` with 1 thread a rank: seconds per epoch,
and per step the all-reduce's time and bytes (one buffer of every gradient). Then models
alexnet (KSH 2012, 1,000 classes, global mini-batch 128) on 1, 2, 4 and 8 GPUs: bytes per
step, a ring all-reduce's time at an interconnect's bandwidth, and an *estimated* compute
time per step, and the scaling efficiency they predict. Writes its section of RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gpunn  # noqa: F401  (before NumPy: it asks OpenBLAS's idle threads to sleep)

# isort: split
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

NETS = {  # name: (images, mini-batch size, eta)
    "ch6-relu": (2000, 10, 0.03),
    "alexnet-small": (256, 64, 0.01),
}


class TimedComm:
    """A communicator that times its all-reduces and counts their bytes."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.rank, comm.size
        self.seconds, self.bytes, self.calls = 0.0, 0, 0

    def all_reduce(self, a):
        start = time.perf_counter()
        out = self.comm.all_reduce(a)
        if a.size > 100:  # a gradient buffer, not the loop's small sums
            self.seconds += time.perf_counter() - start
            self.bytes += a.nbytes
            self.calls += 1
        return out

    def __getattr__(self, name):
        return getattr(self.comm, name)


def build(name: str):
    from gpunn import book, models

    if name == "ch6-relu":
        return book.build(book.get("ch6-relu"), seed=1, backend="cpu")
    return models.build("alexnet-small", classes=10, seed=1, backend="cpu")


def worker(name: str) -> None:
    """One timed epoch of ``name`` (after a warm-up step); rank 0 prints a JSON line."""
    from gpunn.distributed import world
    from gpunn.optim import SGD
    from gpunn.train import fit

    n, mbs, eta = NETS[name]
    net = build(name)
    rng = np.random.default_rng(0)
    X = rng.random((n, int(np.prod(net.input_shape))), dtype=np.float32)
    y = rng.integers(0, net.n_out, n)
    comm = TimedComm(world())
    fit(net, (X[:mbs], y[:mbs]), 1, mbs, SGD(eta), comm=comm)  # compiles the kernels
    comm.seconds, comm.bytes, comm.calls = 0.0, 0, 0
    start = time.perf_counter()
    fit(net, (X, y), 1, mbs, SGD(eta), comm=comm)
    seconds = time.perf_counter() - start
    if comm.rank == 0:
        print(json.dumps({"seconds": seconds, "images": n, "mbs": mbs, "steps": comm.calls,
                          "reduce_seconds": comm.seconds, "bytes": comm.bytes,
                          "params": net.num_params}))


def run(name: str, ranks: int, threads: str) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads,
           "OMP_NUM_THREADS": threads}
    command = [sys.executable, __file__, "--worker", name]
    if ranks > 1:
        command = ["mpiexec", "-n", str(ranks), *command]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- the model of alexnet on GPUs -------------------------------------------------------------
GLOBAL_BATCH = 128  # KSH's mini-batch, kept global as --batch-size is
FLOPS_PER_IMAGE = 3 * 2 * 0.72e9  # forward ~0.72 G multiply-adds; backward ~2x forward
SUSTAINED = 15e12  # float32 FLOP/s a GPU sustains on convolutions: an assumption (A100-class)
LINKS = {"NVLink (300 GB/s bus bandwidth)": 300e9, "PCIe 4.0 x16 (20 GB/s)": 20e9}
LATENCY = 10e-6  # per ring step


def alexnet_model() -> str:
    from common import table

    from gpunn import models

    params = sum(r["weights"] + r["biases"] for r in models.summary("alexnet", classes=1000))
    nbytes = 4 * params
    rows = []
    for link, bandwidth in LINKS.items():
        compute1 = GLOBAL_BATCH * FLOPS_PER_IMAGE / SUSTAINED
        for n in (1, 2, 4, 8):
            compute = compute1 / n
            ring = 0.0 if n == 1 else (2 * (n - 1) / n * nbytes / bandwidth
                                       + 2 * (n - 1) * LATENCY)
            step = compute + ring  # no overlap of the all-reduce with backpropagation
            rows.append([link, n, f"{nbytes / 2**20:,.0f}", f"{ring * 1e3:.2f}",
                         f"{compute * 1e3:.1f}", f"{step * 1e3:.1f}",
                         f"{compute1 / (n * step):.0%}"])
    return (f"alexnet (1,000 classes): {params:,} parameters, so {nbytes / 2**20:,.0f} MiB "
            f"of float32 gradients all-reduced once a step. Ring all-reduce: 2(N-1)/N x bytes "
            f"/ bus bandwidth + 2(N-1) x {LATENCY * 1e6:.0f} us. Compute per step is an "
            f"**estimate**: {GLOBAL_BATCH} images x {FLOPS_PER_IMAGE / 1e9:.2f} GFLOP "
            f"(forward + backward) / N GPUs at an assumed {SUSTAINED / 1e12:.0f} TFLOP/s "
            f"sustained each; the all-reduce is not overlapped with backpropagation. "
            f"Efficiency = one GPU's step / (N x the step on N).\n\n"
            + table(["interconnect", "GPUs", "MiB/step", "all-reduce ms (model)",
                     "compute ms (estimate)", "step ms", "scaling efficiency"], rows))


def main() -> None:
    from common import table, write_section

    load_before = os.getloadavg()[0]
    rows = []
    for name in NETS:
        for ranks, threads in ((1, "2"), (1, "1"), (2, "1")):
            r = run(name, ranks, threads)
            steps = max(r["steps"], 1)
            rows.append([name, f"1 process, {threads} thread{'s' * (threads != '1')}"
                         if ranks == 1 else "mpiexec -n 2, 1 thread each",
                         f"{r['seconds']:.2f}",
                         f"{r['images'] / r['seconds']:,.0f}",
                         f"{r['reduce_seconds'] / steps * 1e3:.2f}" if ranks > 1 else "—",
                         f"{r['bytes'] / steps / 2**20:.2f}" if ranks > 1 else "—"])
            print(rows[-1], flush=True)
    n_ch6, n_alex = NETS["ch6-relu"][0], NETS["alexnet-small"][0]
    body = (f"`python benchmarks/bench_data_parallel.py`: one epoch on synthetic images "
            f"(ch6-relu: {n_ch6:,} images of 1x28x28, mini-batch {NETS['ch6-relu'][1]}; "
            f"alexnet-small, 10 classes: {n_alex} images of 3x64x64, mini-batch "
            f"{NETS['alexnet-small'][1]}), after a warm-up step. The all-reduce is of one "
            f"buffer of every layer's gradient, each step; its time is the host's wall "
            f"time in MPI_Allreduce (2 ranks on one machine: shared memory), which includes "
            f"waiting for the slower rank. Load average (1 min, other processes included): "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; on this 2-core "
            f"machine a load above ~1 slows the 2-thread process most (its BLAS and Numba "
            f"threads wait for each other), so compare the rows only at a low load.\n\n"
            + table(["network", "run", "s/epoch", "images/s", "all-reduce ms/step",
                     "all-reduce MiB/step"], rows)
            + "\n\n### Model: alexnet on 1, 2, 4 and 8 GPUs with NCCL\n\n" + alexnet_model())
    write_section("Data parallel (cpu, MPI)", body)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2])
    else:
        main()
