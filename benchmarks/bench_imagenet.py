"""Training images/s of alexnet-small (3x64x64) beside PyTorch, same layer shapes, same run.

    python benchmarks/bench_imagenet.py                       # CPU, batch 64
    python benchmarks/bench_imagenet.py --device cuda --arch alexnet --batch-size 128

Both sides train the same network on one batch of random images, reused (compute only, no
decoding): SGD with momentum 0.9 and weight decay 5e-4, log-likelihood on a softmax, dropout
0.5 before the last two layers. Each side runs ``--warmup`` untimed steps, then the figure is
the median over ``--repeat`` runs of ``--steps`` steps. Threads: ``--threads`` (default every
core) for gpunn's BLAS and Numba kernels and for PyTorch alike.
Peak memory is the process's resident high-water mark (VmHWM) after gpunn's runs, before
PyTorch's. Writes the section "ImageNet-style convnet (alexnet-small)" of RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import gpunn  # noqa: F401  (before NumPy: it asks OpenBLAS's idle threads to sleep)

# isort: split
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import median_time, table, write_section  # noqa: E402

TARGET_RATIO = 1.0  # gpunn's images/s / PyTorch's, CPU (issue: >= 1.0x at 2 threads)


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def gpunn_rates(arch, classes, batch, steps, warmup, repeat, device):
    from gpunn import imagenet, models
    from gpunn.data import SyntheticImages

    net = models.build(arch, classes, seed=1, backend=device)
    source = SyntheticImages(batch, classes, models.INPUT_SIZE[arch], seed=0)
    train, forward = [], []
    for i in range(repeat):
        r = imagenet.throughput(net, source, batch, steps, warmup if i == 0 else 0)
        train.append(r["train_images_per_s"])
        forward.append(r["forward_images_per_s"])
    return statistics.median(train), statistics.median(forward), net.num_params


def layer_times(arch, classes, batch, repeat, device):
    """Median milliseconds of each layer's forward and backward in a training step."""
    import numpy as np

    from gpunn import models

    net = models.build(arch, classes, seed=1, backend=device)
    size = models.INPUT_SIZE[arch]
    X = net.backend.asarray(np.random.default_rng(0).standard_normal(
        (batch, 3, size, size), dtype=np.float32))
    Y = net.targets(net.xp.asarray(np.arange(batch) % classes))
    fwd = {i: [] for i in range(len(net.layers))}
    bwd = {i: [] for i in range(len(net.layers))}
    sync = net.backend.synchronize
    for _ in range(repeat + 1):  # the first pass warms up
        a = X
        for i, layer in enumerate(net.layers):
            sync()
            t0 = time.perf_counter()
            a = layer.forward(a, True, net.rng)
            sync()
            fwd[i].append(time.perf_counter() - t0)
        out = net.layers[-1]
        grad = out.backward_delta((a - Y) / batch)
        for i in range(len(net.layers) - 2, -1, -1):
            t0 = time.perf_counter()
            grad = net.layers[i].backward(grad, need_grad_input=i > 0)
            sync()
            bwd[i].append(time.perf_counter() - t0)
    rows = []
    for i, layer in enumerate(net.layers):
        f = 1e3 * statistics.median(fwd[i][1:])
        b = 1e3 * statistics.median(bwd[i][1:]) if bwd[i] else 0.0
        rows.append([repr(layer).split("(")[0] + f" {layer.output_shape}", f"{f:.1f}",
                     f"{b:.1f}"])
    return rows


def train_gflop_per_image(arch, classes) -> float:
    """Multiply-adds x 2 of one training example: forward, then dW and dX (none for conv 1)."""
    from gpunn import models

    total = 0.0
    for i, row in enumerate(models.summary(arch, classes)):
        c, shape = row["config"], row["output_shape"]
        if c["type"] == "Conv2D":
            fwd = 2 * row["weights"] * shape[1] * shape[2]
        elif c["type"] in ("FullyConnected", "Softmax"):
            fwd = 2 * row["weights"]
        else:
            continue
        total += fwd * (2 if i == 0 else 3)
    return total / 1e9


def gemm_ceiling() -> float:
    """GFLOP/s of NumPy's sgemm on 4096^3, the most this machine's BLAS gives."""
    a = np.random.default_rng(0).random((4096, 4096), dtype=np.float32)
    return 2 * 4096 ** 3 / median_time(lambda: a @ a, repeat=3) / 1e9


def torch_model(arch, classes):
    """The same layers as gpunn.models, as a torch Sequential."""
    from torch import nn

    from gpunn import models
    from gpunn.layers import Conv2D, Flatten, FullyConnected, MaxPool, Softmax

    out = []
    for layer in models.layers(arch, classes):
        if isinstance(layer, Conv2D):
            out += [nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                              layer.stride, layer.padding), nn.ReLU()]
        elif isinstance(layer, MaxPool):
            out.append(nn.MaxPool2d(layer.kernel, layer.stride))
        elif isinstance(layer, Flatten):
            out.append(nn.Flatten())
        elif isinstance(layer, FullyConnected):  # Softmax too: its logits
            if layer.dropout:
                out.append(nn.Dropout(layer.dropout))
            out.append(nn.Linear(layer.n_in, layer.n_out))
            if not isinstance(layer, Softmax):
                out.append(nn.ReLU())
    return nn.Sequential(*out)


def torch_rates(arch, classes, batch, steps, warmup, repeat, device):
    import torch
    from torch import nn

    from gpunn import models

    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    torch.manual_seed(1)
    model = torch_model(arch, classes).to(dev)
    size = models.INPUT_SIZE[arch]
    X = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(X), y).backward()
        opt.step()

    def rate(fn):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        return steps * batch / (time.perf_counter() - start)

    model.train()
    for _ in range(warmup):
        step()
    train = statistics.median(rate(step) for _ in range(repeat))
    model.eval()
    with torch.no_grad():
        for _ in range(warmup):
            model(X)
        forward = statistics.median(rate(lambda: model(X)) for _ in range(repeat))
    return train, forward


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="alexnet-small", choices=["alexnet", "alexnet-small"])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for gpunn and PyTorch (default: every core).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md.")
    args = parser.parse_args(argv)

    from gpunn import backend

    threads = backend.set_num_threads(args.threads)
    common = (args.arch, args.classes, args.batch_size, args.steps, args.warmup, args.repeat,
              args.device)
    base = peak_rss_mb()
    g_train, g_fwd, params = gpunn_rates(*common)
    peak = peak_rss_mb()  # before torch is imported
    layers = layer_times(args.arch, args.classes, args.batch_size, args.repeat, args.device)

    import torch

    torch.set_num_threads(threads)
    t_train, t_fwd = torch_rates(*common)
    ratio = g_train / t_train
    gflop, ceiling = train_gflop_per_image(args.arch, args.classes), gemm_ceiling()
    rows = [["gpunn", f"{g_train:.1f}", f"{g_fwd:.1f}"],
            ["PyTorch " + torch.__version__, f"{t_train:.1f}", f"{t_fwd:.1f}"],
            ["gpunn / PyTorch", f"{ratio:.2f}", f"{g_fwd / t_fwd:.2f}"]]
    body = (f"{args.arch}, {params:,} parameters ({args.classes} classes), batch "
            f"{args.batch_size}, {args.device}, {threads} thread(s); median of {args.repeat} x "
            f"{args.steps} steps after {args.warmup} warm-up steps; one batch of random "
            f"images reused (compute only).\n\n"
            + table(["", "training images/s", "forward images/s"], rows)
            + f"\n\ngpunn peak resident memory {peak:.0f} MB (process high-water mark before "
            f"PyTorch was imported; {base:.0f} MB before the network was built). Target: "
            f"training >= {TARGET_RATIO}x PyTorch: "
            f"{'met' if ratio >= TARGET_RATIO else 'not met'} ({ratio:.2f}x).\n\n"
            f"Training does {gflop:.2f} GFLOP per image: gpunn runs at "
            f"{gflop * g_train:.0f} GFLOP/s, PyTorch at {gflop * t_train:.0f} GFLOP/s; NumPy's "
            f"sgemm reaches {ceiling:.0f} GFLOP/s on 4096^3 here.\n\n"
            f"Where gpunn's time goes (ms per layer, one training step of {args.batch_size}):"
            f"\n\n" + table(["layer (output shape)", "forward", "backward"], layers) + "\n")
    if not args.device.startswith("cuda"):
        body += ("\nOn a GPU, `python benchmarks/bench_imagenet.py --device cuda --arch alexnet "
                 "--batch-size 128` sets alexnet at 224x224 beside PyTorch CUDA in its own "
                 "section; not measured yet (no GPU on the machine these figures come from).\n")
    print(body)
    if not args.no_write:
        name = (f"ImageNet-style convnet ({args.arch}, {args.device}, {threads} "
                f"thread{'s' if threads != 1 else ''})")
        write_section(name, body)


if __name__ == "__main__":
    main()
