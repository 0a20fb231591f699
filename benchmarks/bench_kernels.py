"""Forward+backward time of gpunn's CPU kernels against PyTorch CPU and the NumPy reference.

    python benchmarks/bench_kernels.py [--quick] [--threads 1]

Shapes: the book's network3 (mini-batch 10 and 64: 1->20 5x5 on 28x28, pool 2; 20->40 5x5 on
12x12, pool 2), AlexNet-style layers (3x64x64 input, 64 5x5 filters, pool 3/2, ...), and the
fused softmax-cross-entropy for N=64, K=10 and K=1000, and a fully connected layer's SGD update
(weight_update) and its product x Wᵀ (linear) at the book's FC sizes. Conv rows give GFLOP/s
and the fraction of a float32 sgemm ceiling measured on the forward product's own (M, K, N).
BLAS, Numba and PyTorch all run on ``--threads`` threads. Writes the "Kernels (CPU)" section
of RESULTS.md. GPU kernels are not timed here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# Thread counts must be fixed before NumPy loads its BLAS.
_threads = "1"
for _i, _arg in enumerate(sys.argv):
    if _arg == "--threads" and _i + 1 < len(sys.argv):
        _threads = sys.argv[_i + 1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = _threads


import gpunn  # noqa: E402,F401  (before NumPy: it asks OpenBLAS's idle threads to sleep)

# isort: split
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_time, table, write_section  # noqa: E402

from gpunn import backend as backend_module  # noqa: E402
from gpunn.kernels import lookup  # noqa: E402

# (label, N, C, H, W, F, K, stride, padding, pool kernel, pool stride)
NETWORK3 = [
    ("network3 conv1 1->20 5x5 28x28", 1, 28, 20, 5, 1, 0, 2, 2),
    ("network3 conv2 20->40 5x5 12x12", 20, 12, 40, 5, 1, 0, 2, 2),
]
ALEXNET = [
    ("alexnet-style 3->64 5x5 p2 64x64", 3, 64, 64, 5, 1, 2, 3, 2),
    ("alexnet-style 64->64 5x5 p2 15x15", 64, 15, 64, 5, 1, 2, 3, 2),
    ("KSH-style 3->64 11x11 s4 p2 64x64", 3, 64, 64, 11, 4, 2, 3, 2),
]


def _torch(threads: int):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _ms(seconds) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3f}"


def _ratio(a, b) -> str:
    return "—" if a is None or b is None else f"{a / b:.2f}"


def sgemm_gflops(m: int, k: int, n: int, repeat: int) -> float:
    a = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
    return 2 * m * k * n / median_time(lambda: a @ b, repeat=repeat) / 1e9


def paired_medians(fns, repeat: int, warmup: int = 2) -> list[float]:
    """Median seconds of each of ``fns``, timed in turn, so that load from other processes on
    a shared machine falls on all of them alike and their ratios hold. Each timed call comes
    after an untimed one of the same function: with several threads, the previous library's
    pool (PyTorch's OpenMP threads, OpenBLAS's) may still hold the cores for a moment after
    its call, and that moment should not be charged to the next library."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, samples in zip(fns, times):
            fn()
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return [statistics.median(samples) for samples in times]


def products_step(n, c, f, k, oh, ow):
    """The three BLAS products of the Numba conv2d alone, in its layouts (its lower bound)."""
    rng = np.random.default_rng(2)
    p, kk = n * oh * ow, c * k * k
    cols = rng.standard_normal((p, kk)).astype(np.float32)
    w2 = rng.standard_normal((f, kk)).astype(np.float32)
    dout2 = rng.standard_normal((p, f)).astype(np.float32)
    prod, dcols = np.empty((p, f), np.float32), np.empty((p, kk), np.float32)

    def step():
        np.matmul(cols, w2.T, out=prod)
        dout2.T @ cols
        np.matmul(dout2, w2, out=dcols)

    return step


def bench_conv(case, n, torch, repeat, with_reference):
    label, c, size, f, k, stride, padding, pool_k, pool_s = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    w = (rng.standard_normal((f, c, k, k)) * 0.1).astype(np.float32)
    b = np.zeros(f, np.float32)
    cpu = backend_module.select("cpu")
    conv, pool = cpu.kernel("conv2d"), cpu.kernel("max_pool2d")

    def run(impl):
        def step():
            out, cache = impl.forward(x, w, b, stride, padding)
            impl.backward(out, cache)  # dout = out: any array of the right shape

        return step

    out, _ = conv.forward(x, w, b, stride, padding)
    oh, ow = out.shape[2:]
    flops = 3 * 2 * n * f * oh * ow * c * k * k  # forward, dw and dx products
    t_ref = median_time(run(lookup("conv2d", "numpy")), repeat=3) if with_reference else None
    t_torch = t_pool = t_pool_torch = None
    steps = [run(conv), products_step(n, c, f, k, oh, ow)]
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)

        def torch_step():
            y = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
            y.backward(y.detach())
            tx.grad = tw.grad = tb.grad = None

        steps.append(torch_step)
    t_ours, t_products, *rest = paired_medians(steps, repeat)
    t_torch = rest[0] if rest else None
    ceiling = sgemm_gflops(f, c * k * k, n * oh * ow, repeat)
    gflops = flops / t_ours / 1e9
    conv_row = [f"{label} N={n}", _ms(t_ours), _ms(t_torch), _ratio(t_ours, t_torch), _ms(t_ref),
                _ms(t_products), f"{gflops:.1f}", f"{ceiling:.1f}", f"{gflops / ceiling:.2f}"]

    # The pooling that follows this conv, on its output.
    y = np.ascontiguousarray(out)

    def pool_step():
        p, cache = pool.forward(y, pool_k, pool_s)
        pool.backward(p, cache)

    t_pool = median_time(pool_step, repeat=repeat, warmup=2)
    t_pool_ref = None
    if with_reference:
        ref = lookup("max_pool2d", "numpy")

        def ref_step():
            p, cache = ref.forward(y, pool_k, pool_s)
            ref.backward(p, cache)

        t_pool_ref = median_time(ref_step, repeat=3)
    if torch is not None:
        ty = torch.tensor(y, requires_grad=True)

        def torch_pool():
            p = torch.nn.functional.max_pool2d(ty, pool_k, pool_s)
            p.backward(p.detach())
            ty.grad = None

        t_pool_torch = median_time(torch_pool, repeat=repeat, warmup=2)
    pool_row = [f"pool {pool_k}/{pool_s} on {tuple(y.shape)}", _ms(t_pool), _ms(t_pool_torch),
                _ratio(t_pool, t_pool_torch), _ms(t_pool_ref)]
    return conv_row, pool_row, (t_ours, t_torch, t_products)


def _limit(name: str, ours: float, theirs: float, products: float) -> str:
    """Why a conv shape is slower than PyTorch: the BLAS products, or the loops around them."""
    rest = max(ours - products, 0.0)
    head = (f"- {name}: {ours / theirs:.2f}x PyTorch; its three OpenBLAS products alone take "
            f"{products * 1e3:.2f} ms ({products / theirs:.2f}x PyTorch's whole fwd+bwd), "
            f"im2col, col2im and the layout copies the other {rest * 1e3:.2f} ms.")
    if products >= theirs:
        return (head + " The products alone exceed PyTorch (oneDNN's direct convolution runs "
                "these thin shapes faster than sgemm does), so no work on the loops around BLAS "
                "can close the gap; that needs a direct, register-tiled conv kernel.")
    return head + " The loops around BLAS are what to shrink here."


def bench_softmax(n, k, torch, repeat):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, k)).astype(np.float32)
    labels = rng.integers(0, k, n)
    xent = backend_module.select("cpu").kernel("softmax_cross_entropy")
    ref = lookup("softmax_cross_entropy", "numpy")

    def step(impl):
        def run():
            _, probs = impl.forward(logits, labels)
            impl.backward(probs, labels)

        return run

    t_ours = median_time(step(xent), repeat=repeat * 20, warmup=5)
    t_ref = median_time(step(ref), repeat=repeat * 20, warmup=5)
    t_torch = None
    if torch is not None:
        tz = torch.tensor(logits, requires_grad=True)
        ty = torch.tensor(labels)

        def torch_step():
            torch.nn.functional.cross_entropy(tz, ty).backward()
            tz.grad = None

        t_torch = median_time(torch_step, repeat=repeat * 20, warmup=5)
    torch_us = "—" if t_torch is None else f"{t_torch * 1e6:.1f}"
    row = [f"N={n} K={k}", f"{t_ours * 1e6:.1f}", torch_us,
           _ratio(t_ours, t_torch), f"{t_ref * 1e6:.1f}"]
    return row, (t_ours, t_torch)


# (n_out, n_in, m): the FC layers of ch6-dropout / ch6-ensemble (640-1000, 1000-1000) and
# ch6-relu (640-100), at mini-batch 10 and 64
WEIGHT_UPDATES = [(1000, 640, 10), (1000, 1000, 10), (100, 640, 10), (1000, 1000, 64)]


def bench_weight_update(n_out, n_in, m, torch, repeat):
    """W ← βW − ηδᵀx: the kernel (one sgemm), the reference (the gradient formed, scaled and
    subtracted: what the layer step did before the kernel) and PyTorch's ``addmm_``."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32) * 0.01
    delta = rng.standard_normal((m, n_out)).astype(np.float32) * 0.01
    x = rng.random((m, n_in), dtype=np.float32)
    ours = backend_module.select("cpu").kernel("weight_update")
    ref = lookup("weight_update", "numpy")
    fns = [lambda: ours(w, delta, x, 1e-3), lambda: ref(w, delta, x, 1e-3)]
    if torch is not None:
        tw, td, tx = (torch.from_numpy(a.copy()) for a in (w, delta, x))
        fns.append(lambda: tw.addmm_(td.T, tx, alpha=-1e-3))
    times = paired_medians(fns, repeat * 10)
    t_ours, t_ref = times[:2]
    t_torch = times[2] if torch is not None else None
    return [f"{n_out}x{n_in}, m={m}", f"{t_ours * 1e6:.0f}",
            "—" if t_torch is None else f"{t_torch * 1e6:.0f}", _ratio(t_ours, t_torch),
            f"{t_ref * 1e6:.0f}", _ratio(t_ours, t_ref)]


# (m, n_in, n_out): x Wᵀ of the same FC layers at mini-batch 10 and 64, the softmax layer, and
# one at mini-batch 100, past what the chooser measures
LINEARS = [(10, 640, 1000), (10, 1000, 1000), (64, 1000, 1000), (10, 1000, 10), (100, 1000, 1000)]


def bench_linear(m, n_in, n_out, torch, repeat):
    """x Wᵀ: the kernel (the orientation it chose here), the reference ``x @ W.T``, the other
    orientation and PyTorch's ``x @ W.T`` (what ``nn.Linear`` runs)."""
    from gpunn.kernels.dense_numba import ORIENTATIONS, LinearNumba

    rng = np.random.default_rng(0)
    x = rng.random((m, n_in), dtype=np.float32)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32) * 0.01
    ours = backend_module.select("cpu").kernel("linear")
    ref = lookup("linear", "numpy")
    other = LinearNumba(ORIENTATIONS[1])
    chosen = ours.orientation_for(x, w)  # measured here, once, for the shapes it measures
    fns = [lambda: ours(x, w), lambda: ref(x, w), lambda: other(x, w)]
    if torch is not None:
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        fns.append(lambda: tx @ tw.T)
    times = paired_medians(fns, repeat * 10)
    t_ours, t_ref, t_other = times[:3]
    t_torch = times[3] if torch is not None else None
    return [f"{m}x{n_in} @ {n_out}x{n_in}ᵀ", f"`{chosen}`", f"{t_ours * 1e6:.0f}",
            "—" if t_torch is None else f"{t_torch * 1e6:.0f}", _ratio(t_ours, t_torch),
            f"{t_ref * 1e6:.0f}", f"{t_other * 1e6:.0f}", _ratio(t_ours, t_ref)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shapes")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/Numba/torch threads")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else 15
    torch = _torch(args.threads)
    load_before = os.getloadavg()[0]

    conv_rows, pool_rows, verdicts, limits = [], [], [], []
    cases = [(case, n, True) for n in (10, 64) for case in NETWORK3]
    cases += [(case, 16, False) for case in ALEXNET[: 1 if args.quick else None]]
    for case, n, network3 in cases:
        conv_row, pool_row, (ours, theirs, products) = bench_conv(case, n, torch, repeat,
                                                                  network3)
        conv_rows.append(conv_row)
        pool_rows.append(pool_row)
        if network3 and theirs is not None:
            verdicts.append((conv_row[0], ours / theirs))
        if theirs is not None and ours > theirs:
            limits.append(_limit(conv_row[0], ours, theirs, products))
        print(" | ".join(conv_row), flush=True)

    soft_rows = []
    for k in (10, 1000):
        row, (ours, theirs) = bench_softmax(64, k, torch, repeat)
        soft_rows.append(row)
        if theirs is not None:
            verdicts.append((f"softmax-xent {row[0]}", ours / theirs))
        print(" | ".join(row), flush=True)

    update_rows = []
    for shape in WEIGHT_UPDATES[: 2 if args.quick else None]:
        update_rows.append(bench_weight_update(*shape, torch, repeat))
        print(" | ".join(update_rows[-1]), flush=True)

    linear_rows = []
    for shape in LINEARS[: 2 if args.quick else None]:
        linear_rows.append(bench_linear(*shape, torch, repeat))
        print(" | ".join(linear_rows[-1]), flush=True)

    peak = sgemm_gflops(1024, 1024, 1024, 3)
    load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    header = ["conv2d fwd+bwd (float32)", "gpunn ms", "torch ms", "gpunn/torch", "reference ms",
              "its 3 sgemm ms", "GFLOP/s", "sgemm GFLOP/s same shape", "fraction of sgemm"]
    met = [f"- {name}: {ratio:.2f}x PyTorch — {'met' if ratio <= 1.0 else 'NOT met'}"
           for name, ratio in verdicts]
    body = "\n\n".join([
        f"`python benchmarks/bench_kernels.py{' --quick' if args.quick else ''} "
        f"--threads {args.threads}`: medians of {repeat} runs; {args.threads} thread(s) for "
        f"BLAS, Numba and PyTorch, each timed call after an untimed one of its own. gpunn = "
        f"the Numba kernels (`backend.kernel(op)` on the CPU); "
        f"reference = the NumPy oracle. fwd+bwd computes dx, dw and db; gpunn, torch and "
        f"\"its 3 sgemm\" are timed in turn, call by call. float32 sgemm "
        f"1024x1024x1024: {peak:.1f} GFLOP/s. Load average (1 min, other processes included): "
        f"{load}; above ~1 on this 2-core machine the BLAS products slow more than PyTorch's "
        f"direct convolution does.",
        table(header, conv_rows),
        table(["max_pool2d fwd+bwd (float32)", "gpunn ms", "torch ms", "gpunn/torch",
               "reference ms"], pool_rows),
        table(["softmax_cross_entropy fwd+bwd (float32)", "gpunn µs", "torch µs",
               "gpunn/torch", "reference µs"], soft_rows),
        table(["weight_update W ← βW − ηδᵀx (float32)", "gpunn µs", "torch addmm_ µs",
               "gpunn/torch", "reference µs (gradient formed)", "gpunn/reference"],
              update_rows),
        table(["linear x Wᵀ (float32)", "orientation chosen", "gpunn µs", "torch µs",
               "gpunn/torch", "reference `x @ W.T` µs", "`(W @ x.T).T` µs",
               "gpunn/reference"], linear_rows),
        "Targets (network3 conv fwd+bwd and fused softmax-xent fwd+bwd <= 1.0x PyTorch CPU):\n"
        + ("\n".join(met) if met else "- PyTorch not installed: not compared"),
        "Conv shapes slower than PyTorch, and what limits them (\"its 3 sgemm ms\" = the "
        "kernel's forward, dw and dx products alone, in its own layouts):\n"
        + ("\n".join(limits) if limits else "- none"),
        "GPU (CuPy RawKernel) figures: unmeasured — no GPU in this session; the CUDA sources "
        "are only compiled (NVRTC, sm_80/sm_90) by tests/kernels/test_nvrtc.py.",
    ])
    write_section(f"Kernels (CPU, {args.threads} thread{'s' if args.threads != 1 else ''})",
                  body)
    print(body)


if __name__ == "__main__":
    main()
