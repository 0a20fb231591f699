"""The Python half of ``benchmarks/gpu_check.sh``: GPU against CPU, on a machine with a GPU.

    python benchmarks/gpu_check.py require     # exit 3 with one line when no GPU works
    python benchmarks/gpu_check.py parity      # every CuPy kernel and one epoch vs the CPU
    python benchmarks/gpu_check.py fused       # 784-30-10, mini-batch 10: s/epoch, fused step
    python benchmarks/gpu_check.py train       # `gpunn train --device cuda`, chapter 1
    python benchmarks/gpu_check.py summary 'step|status|seconds' ...

Each command but ``require`` writes its section of benchmarks/RESULTS.md and exits 1 when a
check fails. Parity compares each kernel of the ``cupy`` registry with its CPU kernel on the
same float32 inputs (the same tolerance as the tests, looser for dense_sgd's ten steps), then
one epoch of chapter 1's network from the same seed on both devices: same shuffle, same
initial weights, so the accuracies agree to rounding (the weights drift apart chaotically
over 5,000 steps, so their difference is shown, not judged).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import table, write_section  # noqa: E402

NO_GPU = 3  # exit status when no GPU works
FUSED_GOAL = 0.1  # s/epoch of 784-30-10 at mini-batch 10 on an H100 (issue 17)
EPOCH_POINTS = 1.0  # accuracy points the two devices' one-epoch runs may differ by
OP_TOLERANCE = (1e-4, 1e-4)  # (rtol, atol) for one call of a kernel in float32
DENSE_TOLERANCE = (1e-3, 1e-4)  # ten SGD steps at η = 3 compound the rounding


# -- the refusal --------------------------------------------------------------------------------
def require_gpu(select=None):
    """The CuPy backend, or SystemExit(NO_GPU) after one line on stderr naming why not."""
    from gpunn import backend

    try:
        return (select or backend.select)("cuda")
    except backend.BackendUnavailable as exc:
        print(f"gpu_check: needs an NVIDIA GPU with CuPy, and none works here ({exc.cause}); "
              f"run it on a GPU machine with gpunn[cuda12] installed", file=sys.stderr)
        raise SystemExit(NO_GPU) from exc


# -- comparisons -------------------------------------------------------------------------------
def compare(what: str, cpu, gpu, rtol: float, atol: float) -> list:
    """A table row ``[what, max |cpu − gpu|, allowed, "ok" | "MISMATCH"]`` (host arrays)."""
    c, g = np.asarray(cpu, np.float64), np.asarray(gpu, np.float64)
    allowed = f"rtol {rtol:g}, atol {atol:g}"
    if c.shape != g.shape:
        return [what, f"shape cpu={c.shape} | gpu={g.shape}", allowed, "MISMATCH"]
    close = np.isclose(g, c, rtol=rtol, atol=atol, equal_nan=True)
    worst = float(np.nanmax(np.abs(c - g))) if c.size else 0.0
    return [what, f"{worst:.3g}", allowed, "ok" if close.all() else "MISMATCH"]


def accuracy_row(what: str, cpu: float, gpu: float, points: float = EPOCH_POINTS) -> list:
    """A row judging two accuracies (fractions) against ``points`` percentage points."""
    gap = abs(cpu - gpu) * 100
    return [what, f"cpu {cpu:.2%} | gpu {gpu:.2%} (gap {gap:.2f} points)",
            f"≤ {points:g} points", "ok" if gap <= points else "MISMATCH"]


def failed(rows) -> list:
    return [r for r in rows if r[-1] == "MISMATCH"]


# -- the parity sweep ---------------------------------------------------------------------------
def kernel_parity(cpu_kernel, gpu_kernel, to_device, to_host, seed: int = 0) -> list:
    """Rows comparing every kernel with a GPU implementation, CPU against GPU.

    ``cpu_kernel(op)`` and ``gpu_kernel(op)`` give implementations; ``to_device`` and
    ``to_host`` move arrays (``cupy.asarray`` and ``cupy.asnumpy`` on a GPU).
    """
    r = np.random.default_rng(seed)
    rows, tol = [], OP_TOLERANCE

    def both(op, call):
        return call(cpu_kernel(op), lambda a: a), call(gpu_kernel(op), to_device)

    def normal(*shape, scale=1.0):
        return (r.standard_normal(shape) * scale).astype(np.float32)

    x, w, b = normal(4, 3, 16, 16), normal(8, 3, 5, 5, scale=0.2), normal(8)
    dout = normal(4, 8, 16, 16)

    def conv(k, dev):
        out, cache = k.forward(dev(x), dev(w), dev(b), 1, 2)
        return (out, *k.backward(dev(dout), cache))

    for name, c, g in zip(("out", "dx", "dw", "db"), *both("conv2d", conv)):
        rows.append(compare(f"conv2d {name}", c, to_host(g), *tol))

    xp_, dpool = normal(4, 8, 12, 12), normal(4, 8, 6, 6)

    def pool(k, dev):
        out, cache = k.forward(dev(xp_), 2)
        return out, k.backward(dev(dpool), cache)

    for name, c, g in zip(("out", "dx"), *both("max_pool2d", pool)):
        rows.append(compare(f"max_pool2d {name}", c, to_host(g), *tol))

    xc, wc, bc = normal(4, 3, 13, 13), normal(6, 3, 4, 4, scale=0.2), normal(6)
    for activation in ("sigmoid", "relu"):
        def conv_pool(k, dev, activation=activation):
            a, cache = k.forward(dev(xc), dev(wc), dev(bc), 2, activation)
            grad = dev(np.ones(tuple(a.shape), np.float32))
            return (a, *k.backward(grad, cache))

        for name, c, g in zip(("a", "dx", "dw", "db"), *both("conv_pool", conv_pool)):
            rows.append(compare(f"conv_pool {activation} {name}", c, to_host(g), *tol))

    logits, labels = normal(16, 10, scale=5.0), r.integers(0, 10, 16)

    def xent(k, dev):
        loss, probs = k.forward(dev(logits), dev(labels))
        return np.float32(float(loss)), probs, k.backward(probs, dev(labels), 2.0)

    for name, c, g in zip(("loss", "probs", "dlogits"), *both("softmax_cross_entropy", xent)):
        rows.append(compare(f"softmax_cross_entropy {name}", c, to_host(g), *tol))

    sizes, chunk = [784, 30, 10], 100
    X = r.random((chunk, sizes[0]), dtype=np.float32)
    Y = np.eye(sizes[-1], dtype=np.float32)[r.integers(0, sizes[-1], chunk)]
    start = [normal(n_out, n_in, scale=1 / np.sqrt(n_in)) for n_in, n_out in
             zip(sizes[:-1], sizes[1:])], [normal(n) for n in sizes[1:]]
    for activations, cost, (lmbda, l1, momentum) in (
            (["sigmoid", "sigmoid"], "quadratic", (0.0, 0.0, 0.0)),
            (["relu", "softmax"], "log-likelihood", (5.0, 1.0, 0.5))):
        def dense(k, dev, activations=activations, cost=cost, reg=(lmbda, l1, momentum)):
            ws, bs = [dev(a.copy()) for a in start[0]], [dev(a.copy()) for a in start[1]]
            vel = [dev(np.zeros_like(a)) for a in start[0]], [dev(np.zeros_like(a))
                                                              for a in start[1]]
            eta = 0.1 if cost == "log-likelihood" else 3.0
            k.run(k.prepare(ws, bs, activations, cost, *vel), dev(X), dev(Y), 10, eta,
                  reg[0], reg[1], 50_000, reg[2])
            return (*ws, *bs)

        names = [f"w[{i}]" for i in range(2)] + [f"b[{i}]" for i in range(2)]
        for name, c, g in zip(names, *both("dense_sgd", dense)):
            rows.append(compare(f"dense_sgd {'-'.join(activations)} {name}", c, to_host(g),
                                *DENSE_TOLERANCE))
    return rows


def epoch_parity(train, evaluation, gpu_device, cpu_device="cpu") -> list:
    """Rows for one epoch of chapter 1's network (784-30-10 sigmoid, quadratic, η = 3,
    mini-batches of 10) from the same seed on both devices."""
    import gpunn

    nets = {}
    for device in (cpu_device, gpu_device):
        net = gpunn.Network([784, 30, 10], seed=1, backend=device)
        net.sgd(train, 1, 10, 3.0)
        nets[device] = net
    cpu, gpu = nets[cpu_device], nets[gpu_device]
    rows = [accuracy_row("one epoch: accuracy", cpu.accuracy(evaluation),
                         gpu.accuracy(evaluation))]
    for i, (wc, wg) in enumerate(zip(cpu.weights, gpu.weights)):
        diff = float(np.max(np.abs(gpu.backend.to_numpy(wg) - cpu.backend.to_numpy(wc))))
        rows.append([f"one epoch: w[{i}]", f"{diff:.3g}", "shown, not judged", "—"])
    return rows


# -- timings ---------------------------------------------------------------------------------
def fused_epoch(train, device, repeat: int = 3) -> tuple[str, float]:
    """(the step the loop chose, median s/epoch) of 784-30-10 at mini-batch 10, η = 3."""
    import gpunn
    from gpunn.optim import SGD
    from gpunn.train import choose_step

    net = gpunn.Network([784, 30, 10], seed=1, backend=device)
    step = choose_step(net, SGD(3.0)).name
    net.sgd(train, 1, 10, 3.0)  # warm-up: compiles the kernels
    times = []
    for _ in range(repeat):
        net.backend.synchronize()
        t0 = time.perf_counter()
        net.sgd(train, 1, 10, 3.0)
        net.backend.synchronize()
        times.append(time.perf_counter() - t0)
    return step, statistics.median(times)


def fused_body(gpu: tuple[str, float], cpu: tuple[str, float], device: str) -> tuple[str, bool]:
    """The RESULTS.md section for :func:`fused_epoch` on both devices, and whether it passed
    (the fused step was chosen on the GPU and met the goal)."""
    (g_step, g), (c_step, c) = gpu, cpu
    ok = g_step == "fused dense" and g <= FUSED_GOAL
    rows = [[device, g_step, f"{g:.3f}", f"≤ {FUSED_GOAL} (H100): {'met' if ok else 'NOT met'}"],
            ["cpu", c_step, f"{c:.3f}", ""]]
    body = ("784-30-10 sigmoid, quadratic cost, η = 3.0, mini-batches of 10, 50,000 MNIST "
            "images; medians after a warm-up epoch, synchronised. `--device auto` keeps its "
            f"choice until the GPU row beats the CPU row (GPU / CPU: {g / c:.2f}x).\n\n")
    return body + table(["device", "step", "s/epoch", "goal"], rows), ok


def train_run(device: str, data_dir, epochs: int = 30) -> dict:
    """``gpunn train --device DEVICE`` (chapter 1) as a user runs it: its metrics JSON and
    the wall seconds of the whole command."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.json"
        cmd = [sys.executable, "-m", "gpunn.cli.main", "train", "--device", device,
               "--epochs", str(epochs), "-q", "--metrics-json", str(metrics)]
        if data_dir:
            cmd += ["--data-dir", str(data_dir)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        result = json.loads(metrics.read_text())
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def summary_body(lines: list[str]) -> tuple[str, bool]:
    """The check's own section from ``step|status|seconds`` lines, and whether all passed."""
    rows = [line.split("|", 2) for line in lines]
    for row in rows:
        if len(row) != 3:
            raise SystemExit(f"gpu_check summary expects 'step|status|seconds'; received "
                             f"{'|'.join(row)!r}")
    ok = all(status == "ok" for _, status, _ in rows)
    return table(["step", "status", "seconds"], rows), ok


# -- the command line --------------------------------------------------------------------------
def _data(data_dir, images: int | None = None):
    from gpunn.data import load_dataset

    data = load_dataset("mnist", data_dir=data_dir)
    return data if images is None else data.train.subset(images)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["require", "parity", "fused", "train", "summary"])
    parser.add_argument("lines", nargs="*", help="summary: step|status|seconds lines")
    parser.add_argument("--data-dir", default=os.environ.get("GPUNN_DATA"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    if args.command == "summary":
        body, ok = summary_body(args.lines)
        write_section("GPU check", "`bash benchmarks/gpu_check.sh`\n\n" + body)
        print(body)
        return 0 if ok else 1
    be = require_gpu()
    if args.command == "require":
        print(f"gpu_check: {be.device} works")
        return 0
    if args.command == "parity":
        import cupy

        from gpunn.kernels import lookup

        data = _data(args.data_dir)
        rows = kernel_parity(lambda op: lookup(op, "numba"), lambda op: lookup(op, "cupy"),
                             cupy.asarray, cupy.asnumpy)
        rows += epoch_parity(data.train, data.test, be.device)
        body = table(["what", "max abs diff (or values)", "allowed", "status"], rows)
        write_section(f"GPU parity: every kernel and one epoch, cpu vs {be.device}", body)
        print(body)
        return 1 if failed(rows) else 0
    if args.command == "fused":
        train = _data(args.data_dir).train
        body, ok = fused_body(fused_epoch(train, be.device, args.repeat),
                              fused_epoch(train, "cpu", args.repeat), be.device)
        write_section(f"Fused dense step ({be.device})", body)
        print(body)
        return 0 if ok else 1
    result = train_run(be.device, args.data_dir)
    epoch = statistics.median(e["seconds"] for e in result["epochs"])
    body = (f"`gpunn train --device {be.device}` (chapter 1: 784-30-10, 30 epochs; the book "
            f"reaches 95.42%): test accuracy {result['test_accuracy']:.2%}, training "
            f"{result['seconds']:.1f} s (median epoch {epoch:.2f} s), "
            f"the whole command {result['wall_seconds']:.1f} s.")
    write_section(f"gpunn train, chapter 1 ({be.device})", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
