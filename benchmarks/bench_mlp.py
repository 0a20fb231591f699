"""Seconds per epoch of the book's fully connected networks, beside PyTorch CPU.

    python benchmarks/bench_mlp.py               # speed, peak RSS of `gpunn train`
    python benchmarks/bench_mlp.py --accuracy    # also: ch1 and ch3-l2-100, 3 seeds each
    python benchmarks/bench_mlp.py --device cuda # CuPy vs PyTorch CUDA

Both libraries train the same network (sigmoid, quadratic cost, η = 3.0) on the same
MNIST training set in the same process, one epoch at a time after a warm-up epoch; the
figures are medians over ``--repeat`` epochs. Set ``OPENBLAS_NUM_THREADS`` before starting
(the script runs PyTorch with the same thread count). Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import table, torch_epoch_seconds, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
WIDE = ([784, 1000, 10], 10)  # its first layer's x Wᵀ is measured in both orientations
CONFIGS = [([784, 30, 10], 10), ([784, 30, 10], 100), ([784, 100, 10], 10),
           ([784, 100, 10], 100), WIDE]
TARGETS = {((784, 30, 10), 10): 0.15, ((784, 30, 10), 100): 0.08}


def gpunn_epoch_times(train, sizes, mb, repeat, device, orientation=None):
    """Seconds of each of ``repeat`` epochs; ``orientation`` fixes the fused kernel's forward
    product (one of dense_numba.ORIENTATIONS) instead of the measured choice."""
    import gpunn
    from gpunn.kernels import dense_numba

    kernel, fixed = dense_numba.DENSE_SGD, dense_numba.DENSE_SGD.orientation
    kernel.orientation = orientation
    try:
        net = gpunn.Network(sizes, seed=1, backend=device)
        net.sgd(train, 1, mb, 3.0)  # warm-up: JIT compilation, caches
        return [net.sgd(train, 1, mb, 3.0)[0]["seconds"] for _ in range(repeat)]
    finally:
        kernel.orientation = fixed


def torch_epoch_times(train, sizes, mb, repeat, device):
    import torch

    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    X = torch.from_numpy(train.x()).to(dev)
    Y = torch.nn.functional.one_hot(torch.from_numpy(train.labels), 10).float().to(dev)
    torch.manual_seed(1)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=3.0)

    def quadratic(out, target):
        return 0.5 * ((out - target) ** 2).sum(dim=1).mean()

    torch_epoch_seconds(model, opt, quadratic, X, Y, mb)  # warm-up
    return [torch_epoch_seconds(model, opt, quadratic, X, Y, mb) for _ in range(repeat)]


def peak_rss_of_train(data_dir) -> float:
    """Peak RSS (MB) of a one-epoch `gpunn train` run, as /usr/bin/time -v reports it."""
    cmd = ["/usr/bin/time", "-v", str(Path(sys.executable).parent / "gpunn"), "train",
           "--epochs", "1", "-q", "--device", "cpu"]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    kb = [line for line in out.splitlines() if "Maximum resident set size" in line][0]
    return int(kb.split(":")[1]) / 1024


def accuracy_runs(data, preset, key, seeds, device):
    """Train ``preset`` once per seed, evaluating each epoch on the split the book used."""
    import gpunn
    from gpunn import presets

    c = presets.get(preset)
    results = []
    for seed in seeds:
        net = gpunn.Network(c["sizes"], cost=c["cost"], init=c["init"], seed=seed,
                            backend=device)
        t0 = time.perf_counter()
        history = net.sgd(data.train, c["epochs"], c["batch_size"], c["eta"],
                          lmbda=c["lmbda"], evaluation_data=getattr(data, key))
        per_epoch = history.series("evaluation_accuracy")
        results.append({"seed": seed, "final": per_epoch[-1], "best": max(per_epoch),
                        "best_epoch": per_epoch.index(max(per_epoch)) + 1,
                        "seconds": time.perf_counter() - t0})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    from gpunn.data import load_dataset

    data = load_dataset("mnist", data_dir=args.data_dir)
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count() or 1))
    have_torch = False
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(threads)
            have_torch = True
        except ImportError:
            pass

    rows = []
    for sizes, mb in CONFIGS:
        g = statistics.median(gpunn_epoch_times(data.train, sizes, mb, args.repeat,
                                                args.device))
        t = (statistics.median(torch_epoch_times(data.train, sizes, mb, args.repeat,
                                                 args.device)) if have_torch else None)
        target = TARGETS.get((tuple(sizes), mb)) if args.device == "cpu" else None
        row = ["-".join(map(str, sizes)), mb, f"{g:.3f}",
               f"{t:.3f}" if t else "n/a", f"{t / g:.1f}x" if t else "n/a",
               (f"≤ {target}: {'met' if g <= target else 'NOT met'}" if target else "")]
        print(" | ".join(map(str, row)), flush=True)
        rows.append(row)
    body = (f"Device: {args.device}; BLAS and torch threads: {threads}; medians of "
            f"{args.repeat} epochs after a warm-up epoch; sigmoid, quadratic cost, η=3.0, "
            f"50,000 MNIST images.\n\n")
    body += table(["network", "mini-batch", "gpunn s/epoch", "PyTorch s/epoch",
                   "PyTorch / gpunn", "target"], rows)
    if args.device == "cpu":
        rss = peak_rss_of_train(args.data_dir)
        print(f"peak RSS of `gpunn train --epochs 1`: {rss:.0f} MB", flush=True)
        body += (f"\n\nPeak RSS of `gpunn train --epochs 1` (whole process, /usr/bin/time): "
                 f"{rss:.0f} MB (target ≤ 250 MB: {'met' if rss <= 250 else 'NOT met'}).")
    if args.device == "cpu":
        from gpunn.kernels.dense_numba import ORIENTATIONS

        sizes, mb = WIDE
        name = "-".join(map(str, sizes))
        variants = (None, *ORIENTATIONS)  # None: the orientation linear measures per layer
        times = {o: [] for o in variants}
        for _ in range(args.repeat):  # alternating, so a change in the machine hits each
            for o in variants:
                times[o] += gpunn_epoch_times(data.train, sizes, mb, 1, "cpu", o)
        chosen, first, flipped = (statistics.median(times[o]) for o in variants)
        print(f"{name} at mini-batch {mb}: measured choice {chosen:.3f} s, {ORIENTATIONS[0]} "
              f"{first:.3f} s, {ORIENTATIONS[1]} {flipped:.3f} s", flush=True)
        body += (f"\n\nThe fused kernel's forward product for {name} at mini-batch {mb} "
                 f"(medians of {args.repeat} epochs, the three alternating): the orientation "
                 f"`linear` measured for each layer's shape {chosen:.3f} s/epoch; "
                 f"`{ORIENTATIONS[0]}` on every layer {first:.3f} s/epoch; "
                 f"`{ORIENTATIONS[1]}` on every layer {flipped:.3f} s/epoch. Measured against "
                 f"`{ORIENTATIONS[0]}` alone: {chosen / first:.2f}x.")
    write_section(f"Fully connected network ({args.device})", body)

    if args.accuracy:
        acc_rows = []
        for preset, key, target in (("ch1", "test", 0.95), ("ch3-l2-100", "validation",
                                                             0.978)):
            from gpunn.presets import describe

            res = accuracy_runs(data, preset, key, [1, 2, 3], args.device)
            med = statistics.median(r["final"] for r in res)
            each = ", ".join(f"seed {r['seed']}: {r['final']:.2%} (best {r['best']:.2%} at "
                             f"epoch {r['best_epoch']})" for r in res)
            secs = statistics.median(r["seconds"] for r in res)
            acc_rows.append([preset, describe(preset)[1], each, f"{med:.2%} {key}",
                             f"≥ {target:.1%}: {'met' if med >= target else 'NOT met'}",
                             f"{secs:.0f}"])
            print(acc_rows[-1], flush=True)
        write_section(f"Fully connected network: accuracy ({args.device})", table(
            ["preset", "book", "each seed: after 30 epochs (best epoch)", "median after 30",
             "target", "s per run"],
            acc_rows))


if __name__ == "__main__":
    main()
