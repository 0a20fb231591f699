"""Seconds per epoch of network3's 2-conv-pool ReLU net (chapter 6), beside PyTorch CPU.

    python benchmarks/bench_convnet.py                 # mini-batch 10 and 64, CPU, 1 and 2 threads
    python benchmarks/bench_convnet.py --threads 4     # one thread count
    python benchmarks/bench_convnet.py --device cuda   # CuPy vs PyTorch CUDA

The net: conv 20 5x5 + max-pool 2 + ReLU, conv 40 5x5 + max-pool 2 + ReLU, FC 640-100 ReLU,
softmax 10, log-likelihood, SGD η=0.03, λ=0.1. Both libraries train the same number of
MNIST images (``--images``, default 5,000) in the same process, after a warm-up; the
seconds are scaled to a 50,000-image epoch and the figures are medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import table, torch_epoch_seconds, write_section  # noqa: E402

EPOCH = 50_000
TARGET_RATIO = 0.8  # gpunn's time / PyTorch's (issue: ≤ 0.8x at 1 and 2 threads)


def gpunn_times(split, mb, repeat, device):
    from gpunn import book

    net = book.build(book.get("ch6-relu"), seed=1, backend=device)
    net.sgd(split.subset(mb * 20), 1, mb, 0.03, lmbda=0.1)  # warm-up: JIT, caches
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        net.sgd(split, 1, mb, 0.03, lmbda=0.1)
        out.append(time.perf_counter() - start)
    return out


def torch_times(split, mb, repeat, device):
    import torch
    from torch import nn

    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    X = torch.from_numpy(split.x(shape="image")).to(dev)
    y = torch.from_numpy(split.labels).to(dev)
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(20, 40, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(640, 100), nn.ReLU(), nn.Linear(100, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.03, weight_decay=0.1 / EPOCH)
    loss_fn = nn.CrossEntropyLoss()

    torch_epoch_seconds(model, opt, loss_fn, X, y, mb, n=mb * 20)  # warm-up
    return [torch_epoch_seconds(model, opt, loss_fn, X, y, mb) for _ in range(repeat)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", default="1,2",
                        help="Comma-separated thread counts (BLAS, Numba and PyTorch alike).")
    args = parser.parse_args()

    from gpunn.data import load_dataset

    split = load_dataset("mnist", data_dir=args.data_dir).train.subset(args.images)
    counts = [int(t) for t in args.threads.split(",")]
    if args.device != "cpu":  # the GPU does the work: one run, on the first count
        counts = counts[:1]
    for threads in counts:
        run(args, split, threads)


def run(args, split, threads):
    from gpunn import backend

    backend.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        have_torch = True
    except ImportError:
        have_torch = False
    scale = EPOCH / args.images
    rows = []
    for mb in (10, 64):
        g = statistics.median(gpunn_times(split, mb, args.repeat, args.device)) * scale
        t = (statistics.median(torch_times(split, mb, args.repeat, args.device)) * scale
             if have_torch else None)
        ratio = g / t if t else None
        rows.append([mb, f"{g:.1f}", f"{t:.1f}" if t else "n/a",
                     f"{ratio:.2f}" if ratio else "n/a",
                     ("met" if ratio <= TARGET_RATIO else "NOT met") if ratio else ""])
        print(f"threads {threads}: " + " | ".join(map(str, rows[-1])), flush=True)
    body = (f"Device: {args.device}; threads (BLAS, Numba, torch): {threads}; "
            f"{args.images:,} MNIST images per timed run, scaled to a 50,000-image epoch; "
            f"medians of {args.repeat} runs after a warm-up.\n\n")
    body += table(["mini-batch", "gpunn s/epoch", "PyTorch s/epoch", "gpunn / PyTorch",
                   f"target ≤ {TARGET_RATIO:.1f}x"], rows)
    write_section(f"Chapter 6 conv net, 2 conv-pool ReLU ({args.device}, {threads} "
                  f"thread{'s' if threads > 1 else ''})", body)


if __name__ == "__main__":
    main()
