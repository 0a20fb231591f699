"""``gpunn imagenet``: the KSH 2012 convnet demo on an image folder, the toy set or noise.

    gpunn imagenet --toy                       # make the toy folder if needed, train, evaluate
    gpunn imagenet --data DIR --arch alexnet   # DIR/train/<class>/*.jpg, DIR/val/<class>/...
    gpunn imagenet --synthetic --steps 5       # training and forward images/s
    gpunn imagenet make-toy DIR
    gpunn imagenet summary --arch alexnet

The work is done by gpunn.imagenet, gpunn.models and gpunn.data; this module parses, shows
progress bars and prints what comes back.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from gpunn.cli.main import DEVICE_OPTION, UserError, select_backend

ARCHS = ("alexnet", "alexnet-small")
# What --toy uses where an option is not given: 10 classes of 3,000 images, so smaller
# batches give enough steps per epoch. η = 0.02 leaves the first plateau by epoch 4 but
# overshoots once the net fits (epoch 8 lost half its accuracy at 0.02), hence η/10 at 7.
TOY_DEFAULTS = {"arch": "alexnet-small", "epochs": 18, "batch_size": 32, "eta": 0.02,
                "step_epochs": 7}
DEFAULTS = {"arch": "alexnet-small", "epochs": 90, "batch_size": 128, "eta": 0.01,
            "step_epochs": 30}


def _toy_dir() -> Path:
    from gpunn.data import cache_dir

    return cache_dir() / "toy"


def _make_toy(path: Path) -> Path:
    from tqdm import tqdm

    from gpunn.data import make_toy

    with tqdm(total=1, unit="img", desc=f"making {path}", leave=False, disable=None) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        return make_toy(path, progress=progress)


@click.group(invoke_without_command=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Image folder: DIR/train/<class>/*.jpg and DIR/val/<class>/... "
              "With --toy, where the toy set lives (made there if missing).")
@click.option("--toy", is_flag=True, help="Train on the toy folder of shapes (10 classes, 3,600 "
              "JPEGs), made on first use in ~/.cache/gpunn/toy (or --data).")
@click.option("--synthetic", is_flag=True, help="Measure training and forward images/s on "
              "random images (no data needed); --steps timed steps after one warm-up step.")
@click.option("--arch", type=click.Choice(ARCHS), default=None,
              help="alexnet (224x224 input, KSH 2012) or alexnet-small (64x64, CPU-sized). "
              "[default: alexnet-small]")
@click.option("--classes", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Classes for --synthetic (a folder has its own).")
@click.option("--lrn", is_flag=True, help="Local response normalisation after conv 1 and 2.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs to train. [default: 90; 18 with --toy]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Mini-batch size. [default: 128; 32 with --toy; 64 with --synthetic]")
@click.option("--eta", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate η at the start. [default: 0.01; 0.02 with --toy]")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9,
              show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True,
              help="w ← w − η(∇C + decay·w).")
@click.option("--schedule", type=click.Choice(["step", "plateau", "constant"]), default="step",
              show_default=True, help="Divide η by 10 every --step-epochs, or when validation "
              "top-1 has not improved for --patience epochs (plateau).")
@click.option("--step-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs between η/10 steps. [default: 30; 7 with --toy]")
@click.option("--patience", type=click.IntRange(min=1), default=2, show_default=True,
              help="Epochs without improvement before η/10 (--schedule plateau).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Stop after N mini-batches in all (with --synthetic: N timed steps, "
              "default 10).")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Threads decoding images ahead of training (0: in the training thread).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write a checkpoint here after every epoch.")
@click.option("--resume", type=click.Path(exists=True, path_type=Path), default=None,
              help="Continue from a checkpoint file, or the newest in a checkpoint folder.")
@click.option("--metrics-json", type=click.Path(dir_okay=False), default=None,
              help="Write every epoch's figures, the final evaluation and the settings here.")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
@DEVICE_OPTION
@click.pass_context
def imagenet(ctx, data_dir, toy, synthetic, arch, classes, lrn, epochs, batch_size, eta,
             momentum, weight_decay, schedule, step_epochs, patience, steps, workers,
             checkpoint_dir, resume, metrics_json, seed, device):
    """Train KSH 2012's convnet (AlexNet) on an image folder, the toy set, or measure speed.

    Exactly one of --data DIR, --toy or --synthetic. Training is KSH's: SGD with momentum
    0.9, weight decay 5e-4, η 0.01 divided by 10 on a schedule, random 64x64 (224x224 for
    alexnet) crops and mirror images; each epoch prints top-1 and top-5 validation accuracy,
    and the run ends with the final evaluation and the time.

    \b
    gpunn imagenet --toy                    # 99.5% top-1 on the toy shapes, ~5 min on 2 cores
    gpunn imagenet --data ~/imagenet --arch alexnet --device cuda --checkpoint-dir ckpt
    gpunn imagenet --synthetic --steps 5    # images/s, training and forward only
    gpunn imagenet make-toy DIR             # write the toy folder
    gpunn imagenet summary --arch alexnet   # layers and parameter counts (62,378,344)
    """
    if ctx.invoked_subcommand is not None:
        return
    if toy + synthetic + (data_dir is not None and not toy) != 1:
        raise UserError("give one of --data DIR, --toy or --synthetic (see 'gpunn imagenet "
                        "--help')")
    defaults = TOY_DEFAULTS if toy else DEFAULTS
    arch = arch or defaults["arch"]
    backend = select_backend(device)
    if synthetic:
        _synthetic(arch, classes, lrn, batch_size or 64, steps or 10, eta or 0.01, momentum,
                   weight_decay, seed, backend, metrics_json)
        return
    if toy:
        data_dir = data_dir or _toy_dir()
        if not (data_dir / "train").is_dir():
            click.echo(f"making the toy image folder in {data_dir}")
            _make_toy(data_dir)
    settings = {"arch": arch, "lrn": lrn, "epochs": epochs or defaults["epochs"],
                "batch_size": batch_size or defaults["batch_size"],
                "eta": eta or defaults["eta"], "momentum": momentum,
                "weight_decay": weight_decay, "schedule": schedule,
                "step_epochs": step_epochs or defaults["step_epochs"], "patience": patience,
                "steps": steps, "workers": workers, "seed": seed, "data": str(data_dir)}
    _train(settings, backend, checkpoint_dir, resume, metrics_json)


def _train(settings, backend, checkpoint_dir, resume, metrics_json):
    from tqdm import tqdm

    from gpunn import imagenet as library
    from gpunn import models
    from gpunn.data import open_image_folder

    arch = settings["arch"]
    train_set, val_set = open_image_folder(settings["data"], crop=models.INPUT_SIZE[arch])
    state = None
    if resume is not None:
        net, state = library.resume(resume, backend=backend)
        if net.n_out != len(train_set.classes):
            raise UserError(f"{resume} was trained on {net.n_out} classes; "
                            f"{settings['data']} has {len(train_set.classes)}")
        click.echo(f"resuming from {resume} after epoch {state['epoch']}")
    else:
        net = models.build(arch, len(train_set.classes), settings["lrn"], seed=settings["seed"],
                           backend=backend)
    click.echo(f"{arch}: {net.num_params:,} parameters on {backend.device}; "
               f"{len(train_set):,} training and {len(val_set):,} validation images in "
               f"{len(train_set.classes)} classes")
    epochs = settings["epochs"]
    bar = None

    def on_step(info):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=info["steps"] * settings["batch_size"], unit="img", leave=False,
                       desc=f"epoch {info['epoch']}/{epochs}", dynamic_ncols=True,
                       disable=None)
        bar.update(info["images"] - bar.n)  # tqdm's rate and ETA are images/s and the epoch
        bar.set_postfix(loss=f"{info['loss']:.3f}", refresh=False)

    def on_epoch(record):
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        val = (f"  val top-1 {record['val_top1']:.2%}  top-5 {record['val_top5']:.2%}"
               if "val_top1" in record else "")
        click.echo(f"epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.3f}  "
                   f"train top-1 {record['train_top1']:.2%}{val}  eta {record['eta']:g}  "
                   f"{record['images_per_s']:.1f} img/s  {record['seconds']:.0f}s")

    start = time.perf_counter()
    try:
        history = library.train(
            net, train_set, val_set, epochs=epochs, batch_size=settings["batch_size"],
            eta=settings["eta"], momentum=settings["momentum"],
            weight_decay=settings["weight_decay"], schedule=settings["schedule"],
            step_epochs=settings["step_epochs"], patience=settings["patience"],
            seed=settings["seed"], workers=settings["workers"], on_step=on_step,
            on_epoch=on_epoch, steps=settings["steps"], checkpoint_dir=checkpoint_dir,
            state=state)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    diverged = history.stop_reason.startswith("the loss diverged")
    if history.stop_reason != "completed":
        click.echo(history.stop_reason, err=diverged)
    final = history.epochs[-1] if history.epochs else {}
    if "val_top1" in final:
        click.echo(f"validation: top-1 {final['val_top1']:.2%}  top-5 {final['val_top5']:.2%}"
                   f"  ({len(val_set):,} images)  in {seconds:.0f}s")
    if metrics_json:
        from gpunn.cli.main import write_json

        write_json(metrics_json, {
            "epochs": history.epochs, "stop_reason": history.stop_reason,
            "val_top1": final.get("val_top1"), "val_top5": final.get("val_top5"),
            "seconds": seconds, "device": backend.device, "config": settings})
    if diverged:
        raise click.exceptions.Exit(3)  # as `gpunn train` does when the loss turns NaN


def _synthetic(arch, classes, lrn, batch_size, steps, eta, momentum, weight_decay, seed,
               backend, metrics_json):
    from tqdm import tqdm

    from gpunn import imagenet as library
    from gpunn import models
    from gpunn.data import SyntheticImages

    size = models.INPUT_SIZE[arch]
    net = models.build(arch, classes, lrn, seed=seed, backend=backend)
    source = SyntheticImages(batch_size, classes, size, seed)
    click.echo(f"{arch}: {net.num_params:,} parameters, {classes} classes, 3x{size}x{size} "
               f"random images, batch {batch_size}, on {backend.device}")
    with tqdm(total=1, unit="step", leave=False, desc="warm-up, then timed steps",
              disable=None) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        result = library.throughput(net, source, batch_size, steps, 1, eta, momentum,
                                    weight_decay, on_step=progress)
    click.echo(f"training: {result['train_images_per_s']:.1f} images/s  "
               f"(steady state: {steps} steps after 1 warm-up step)")
    click.echo(f"forward:  {result['forward_images_per_s']:.1f} images/s")
    if metrics_json:
        from gpunn.cli.main import write_json

        write_json(metrics_json, {**result, "arch": arch, "classes": classes,
                                          "device": backend.device})


@imagenet.command("make-toy")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--classes", type=click.IntRange(2, 10), default=10, show_default=True)
@click.option("--per-class", type=click.IntRange(min=1), default=300, show_default=True,
              help="Training images per class.")
@click.option("--val-per-class", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def make_toy(directory, classes, per_class, val_per_class, seed):
    """Write the toy image folder of shapes and textures into DIRECTORY (new or empty).

    DIRECTORY/train/<class>/*.jpg and DIRECTORY/val/<class>/*.jpg, 80x80 JPEGs: circle,
    square, triangle, cross, stripes, checkerboard, ring, diagonal, dots.
    """
    from tqdm import tqdm

    from gpunn.data import make_toy as write_toy

    total = classes * (per_class + val_per_class)
    with tqdm(total=total, unit="img", desc="writing", leave=False, disable=None) as bar:
        path = write_toy(directory, classes, per_class, val_per_class, seed=seed,
                         progress=lambda done, _: bar.update(done - bar.n))
    click.echo(f"{path}: {total:,} images in {classes} classes")


@imagenet.command()
@click.option("--arch", type=click.Choice(ARCHS), default="alexnet", show_default=True)
@click.option("--classes", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--lrn", is_flag=True, help="With local response normalisation layers.")
def summary(arch, classes, lrn):
    """Layers, output shapes and parameter counts of an architecture (nothing allocated)."""
    from gpunn import models

    rows = models.summary(arch, classes, lrn)
    click.echo(f"{'layer':<36}{'output':>12}{'weights':>13}{'biases':>9}")
    for row in rows:
        shape = "x".join(map(str, row["output_shape"]))
        click.echo(f"{_describe(row['config']):<36}{shape:>12}{row['weights']:>13,}"
                   f"{row['biases']:>9,}")
    total = sum(row["weights"] + row["biases"] for row in rows)
    size = models.INPUT_SIZE[arch]
    click.echo(f"{arch} for 3x{size}x{size} input, {classes} classes: {total:,} parameters")


def _describe(c: dict) -> str:
    """A layer's config as a short line: ``conv 96 11x11/4 pad 2 relu``."""
    kind = c["type"]
    if kind == "Conv2D":
        k = c["kernel_size"]
        return f"conv {c['out_channels']} {k}x{k}/{c['stride']} pad {c['padding']} " \
               f"{c['activation']}"
    if kind == "MaxPool":
        return f"max-pool {c['kernel']}x{c['kernel']}/{c['stride']}"
    if kind == "LRN":
        return f"LRN {c['size']} k={c['k']:g} a={c['alpha']:g} b={c['beta']:g}"
    if kind in ("FullyConnected", "Softmax"):
        name = "softmax" if kind == "Softmax" else f"fc {c['activation']}"
        drop = f", dropout {c['dropout']:g} in" if c.get("dropout") else ""
        return f"{name} {c['n_in']}->{c['n_out']}{drop}"
    return kind.lower()
