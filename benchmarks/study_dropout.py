"""How ch6-dropout starts with inverted dropout and with dropout scaled at evaluation.

    python benchmarks/study_dropout.py --data-dir DIR                  # seeds 100-119, 1,000 images
    python benchmarks/study_dropout.py --seeds 100,109 --images 10000  # longer starts

Trains the ch6-dropout network (two conv-pool ReLU layers, FC 1000-1000 with dropout 0.5,
η = 0.03, mini-batch 10, the book's initialisation) for one epoch on the first ``--images``
training images, expanded five-fold as the row does, once per seed and dropout mode. It
prints, and writes to RESULTS.md, the validation accuracy after that epoch and the share of
units of each hidden layer that are alive (positive for at least one of 200 validation
images). A network whose second conv-pool layer has lost its units learns nothing more.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import table, write_section  # noqa: E402

MODES = ("inverted", "scale-at-eval")
NAMES = ("conv-pool 1", "conv-pool 2", "FC 1", "FC 2")


def alive(net, probe) -> list[float]:
    """Share of each hidden layer's units positive for some example of ``probe``."""
    return [float((a.reshape(len(a), -1).max(axis=0) > 0).mean())
            for a in net.activations(probe)[:-1]]


def start(data, seed, mode, images):
    from gpunn import book
    from gpunn.layers import FullyConnected

    row = book.get("ch6-dropout")
    net = book.build(row, seed=seed, backend="cpu")
    for layer in net.layers:
        if isinstance(layer, FullyConnected):
            layer.dropout_mode = mode
    result = book.run_row(row, data, seed, epochs=1, backend="cpu", train_size=images,
                          resume=(net, None))
    return result["final"], alive(net, data.validation.x(np.arange(200)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-119",
                        help="seeds: a range A-B or a comma list (default 100-119)")
    parser.add_argument("--images", type=int, default=1000,
                        help="training images before the five-fold expansion (default 1000)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if "-" in args.seeds:
        lo, hi = map(int, args.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]

    from gpunn import backend
    from gpunn.data import load_dataset

    backend.set_num_threads(args.threads)
    data = load_dataset("mnist", data_dir=args.data_dir)
    began, rows, dead = time.perf_counter(), [], {m: 0 for m in MODES}
    for seed in seeds:
        cells = [seed]
        for mode in MODES:
            accuracy, shares = start(data, seed, mode, args.images)
            dead[mode] += shares[1] < 0.05
            cells += [f"{accuracy:.2%}", " / ".join(f"{s:.2f}" for s in shares)]
            print(f"seed {seed} {mode:13s} validation {accuracy:.2%}  alive "
                  + ", ".join(f"{n} {s:.2f}" for n, s in zip(NAMES, shares)), flush=True)
        rows.append(cells)
    steps = 5 * args.images // 10
    summary = "; ".join(f"{mode}: {dead[mode]} of {len(seeds)}" for mode in MODES)
    print(f"second conv-pool layer dead (< 5% of units alive) after {steps:,} steps: {summary}")
    if args.no_write:
        return
    body = (
        f"ch6-dropout (η = 0.03, mini-batch 10, dropout 0.5 on the FC and softmax inputs, the "
        f"book's initialisation) trained for {steps:,} mini-batches ({args.images:,} images "
        f"expanded five-fold), once per seed and dropout mode; {args.threads} thread(s), "
        f"{time.perf_counter() - began:.0f} s in all. Alive: the share of each hidden layer's "
        f"units (conv-pool 1 / conv-pool 2 / FC 1 / FC 2) positive for at least one of 200 "
        f"validation images.\n\n"
        + table(["seed", "inverted: validation", "inverted: alive",
                 "scaled at evaluation: validation", "scaled at evaluation: alive"], rows)
        + f"\n\n**Second conv-pool layer dead (< 5% of its units alive)**: {summary}.\n")
    write_section(f"Dropout in the book's rows: how ch6-dropout starts ({args.images:,} "
                  f"images)", body)


if __name__ == "__main__":
    main()
