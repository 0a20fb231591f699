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

import math
import time
from pathlib import Path

import click

from gpunn.cli.main import (
    DEVICE_OPTION,
    THREADS_OPTION,
    UserError,
    check_host_memory,
    progress_disabled,
    select_backend,
    skipped_checkpoint_notes,
)
from gpunn.cli.session import (
    Session,
    check_outputs,
    checkpoint_options,
    plural,
    quiet_option,
)

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

    with tqdm(total=1, unit="img", desc=f"making {path}", leave=False,
              disable=progress_disabled()) as bar:
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
@click.option("--pca-noise", is_flag=True, help="KSH's PCA colour noise: each training image's "
              "RGB values shifted along the principal components of the training pixels "
              "(α ~ N(0, 0.1) per image and use).")
@click.option("--ten-crop", is_flag=True, help="End with KSH's ten-crop test of the validation "
              "set: softmax averaged over the four corner and centre crops and their mirror "
              "images (ten times the forward passes).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs to train. [default: 90; 18 with --toy]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Mini-batch size. [default: 128; 32 with --toy; 64 with --synthetic]")
@click.option("--eta", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate η at the start. [default: 0.01; 0.02 with --toy]")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9,
              show_default=True, help="Momentum μ in [0, 1): v ← μv − η(∇C + decay·w), "
              "w ← w + v (KSH's 0.9).")
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
              default=None, help="Write a checkpoint here after every epoch (and every "
              "--checkpoint-every mini-batches); Ctrl-C writes one too.")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[DIR|FILE]",
              help="Continue the run saved in a checkpoint: the latest in DIR (default: "
              "--checkpoint-dir) or FILE, with its settings; --epochs, --eta, --workers and "
              "--data may change.")
@checkpoint_options
@click.option("--metrics-json", type=click.Path(dir_okay=False), default=None,
              help="Write every epoch's figures, the final evaluation and the settings here.")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True,
              help="Seeds the initial weights, the order of the images, their crops and "
              "mirrors, and dropout.")
@DEVICE_OPTION
@THREADS_OPTION
@quiet_option
@click.pass_context
def imagenet(ctx, data_dir, toy, synthetic, arch, classes, lrn, pca_noise, ten_crop, epochs,
             batch_size, eta, momentum, weight_decay, schedule, step_epochs, patience, steps,
             workers, checkpoint_dir, resume, checkpoint_every, keep, on_nan, metrics_json,
             seed, device, threads, quiet):
    """Train KSH 2012's convnet (AlexNet) on an image folder, the toy set, or measure speed.

    Exactly one of --data DIR, --toy or --synthetic. Training is KSH's: SGD with momentum
    0.9, weight decay 5e-4, η 0.01 divided by 10 on a schedule, random 64x64 (224x224 for
    alexnet) crops and mirror images; each epoch prints top-1 and top-5 validation accuracy
    (with a progress bar on a terminal), and the run ends with the final evaluation and the
    time. Ctrl-C writes a checkpoint at the current mini-batch; --resume continues exactly.

    \b
    gpunn imagenet --toy                    # the toy shapes, 10 classes (benchmarks/RESULTS.md)
    gpunn imagenet --toy --pca-noise --ten-crop   # KSH's colour noise and ten-crop test
    gpunn imagenet --data ~/imagenet --arch alexnet --device cuda --checkpoint-dir ckpt
    gpunn imagenet --data ~/imagenet --resume ckpt   # continue from the latest checkpoint
    gpunn imagenet --synthetic --steps 5    # images/s, training and forward only
    gpunn imagenet make-toy DIR             # write the toy folder
    gpunn imagenet summary --arch alexnet   # layers and parameter counts (62,378,344)
    """
    if ctx.invoked_subcommand is not None:
        return
    # a resumed run knows its data: --resume alone continues it
    bare_resume = resume is not None and not (toy or synthetic or data_dir is not None)
    if not bare_resume and toy + synthetic + (data_dir is not None and not toy) != 1:
        raise UserError("give one of --data DIR, --toy or --synthetic (see 'gpunn imagenet "
                        "--help')")
    if synthetic and (pca_noise or ten_crop):
        raise UserError(f"{'--pca-noise' if pca_noise else '--ten-crop'} needs images to crop "
                        f"and colour: give --data DIR or --toy instead of --synthetic")
    check_outputs({"--metrics-json": metrics_json}, {"--checkpoint-dir": checkpoint_dir})
    if data_dir is not None and not toy and not data_dir.is_dir():
        raise UserError(f"--data {data_dir} is not a folder; give an image folder "
                        f"(DIR/train/<class>/*.jpg and DIR/val/<class>/...), or --toy")
    defaults = TOY_DEFAULTS if toy else DEFAULTS
    arch = arch or defaults["arch"]
    backend = select_backend(device, threads)
    batch = batch_size or (64 if synthetic else defaults["batch_size"])
    ctx.meta["gpunn.batch_size"] = batch
    if backend.name == "numpy":  # on the host: refuse a batch that cannot fit, before work
        check_host_memory(_training_bytes(arch, classes, lrn, batch),
                          f"training {arch}")
    if synthetic:
        _synthetic(arch, classes, lrn, batch_size or 64, steps or 10, eta or 0.01, momentum,
                   weight_decay, seed, backend, metrics_json, quiet)
        return
    if toy and not bare_resume:
        data_dir = data_dir or _toy_dir()
        if not (data_dir / "train").is_dir():
            click.echo(f"making the toy image folder in {data_dir}")
            _make_toy(data_dir)
    from gpunn.data.colour import KSH_ALPHA_STD

    settings = {"arch": arch, "lrn": lrn, "epochs": epochs or defaults["epochs"],
                "batch_size": batch_size or defaults["batch_size"],
                "eta": eta or defaults["eta"], "momentum": momentum,
                "weight_decay": weight_decay, "schedule": schedule,
                "step_epochs": step_epochs or defaults["step_epochs"], "patience": patience,
                "steps": steps, "workers": workers, "seed": seed, "data": str(data_dir),
                "pca_noise": KSH_ALPHA_STD if pca_noise else 0.0, "ten_crop": ten_crop}
    run = {"checkpoint_dir": checkpoint_dir, "checkpoint_every": checkpoint_every,
           "keep": keep, "on_nan": on_nan, "quiet": quiet}
    _train(settings, backend, resume, metrics_json, run)


# What a resumed run may change; any other option given must agree with the checkpoint.
_MAY_CHANGE = ("epochs", "eta", "workers", "data", "ten_crop")


def _resume(resume, checkpoint_dir, settings, backend):
    """(net, state, settings) of the checkpoint ``--resume`` names, the settings merged."""
    from click.core import ParameterSource

    from gpunn.checkpoint import load_checkpoint

    source = resume or checkpoint_dir
    if not source:
        raise UserError("--resume needs a checkpoint: `--resume DIR` (the latest checkpoint "
                        "in DIR), `--resume FILE`, or --checkpoint-dir DIR")
    net, state = load_checkpoint(source, backend=backend)
    saved = state.get("imagenet")
    if not isinstance(saved, dict):
        raise UserError(f"{state['checkpoint_path']} was not written by `gpunn imagenet`; "
                        f"resume it with the command that wrote it")
    ctx = click.get_current_context()
    for key, value in settings.items():
        option = {"data": "data_dir"}.get(key, key)
        if (key in _MAY_CHANGE or option not in ctx.params or
                ctx.get_parameter_source(option) != ParameterSource.COMMANDLINE):
            continue
        if saved.get(key) != value:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} {value} differs from the run in {state['checkpoint_path']} "
                            f"({flag} {saved.get(key)}); resuming continues that run with its "
                            f"settings: drop {flag}, or start a new run")
    merged = dict(saved)
    for key in _MAY_CHANGE:
        option = {"data": "data_dir"}.get(key, key)
        if key == "data" or ctx.get_parameter_source(option) == ParameterSource.COMMANDLINE:
            merged[key] = settings[key] if key != "data" or ctx.params.get("data_dir") \
                else saved["data"]
    if ctx.get_parameter_source("eta") == ParameterSource.COMMANDLINE:
        state["eta"] = settings["eta"]
    return net, state, merged


def _train(settings, backend, resume, metrics_json, run):
    import functools

    from gpunn import imagenet as library
    from gpunn import models
    from gpunn.cli.main import primary
    from gpunn.data import open_image_folder
    from gpunn.distributed import world

    state = None
    checkpoint_dir = run["checkpoint_dir"]
    if resume is not None:
        net, state, settings = _resume(resume, checkpoint_dir, settings, backend)
        checkpoint_dir = checkpoint_dir or Path(state["checkpoint_path"]).parent
    arch = settings["arch"]
    train_set, val_set = open_image_folder(settings["data"], crop=models.INPUT_SIZE[arch])
    if state is not None:
        if net.n_out != len(train_set.classes):
            raise UserError(f"{state['checkpoint_path']} was trained on {net.n_out} classes; "
                            f"{settings['data']} has {len(train_set.classes)}")
        for line in skipped_checkpoint_notes(state):
            click.echo(line, err=True)
        where = (f"in epoch {state['epoch'] + 1} after {state['examples_done']:,} images"
                 if state["examples_done"] else f"after epoch {state['epoch']}")
        click.echo(f"resuming {state['checkpoint_path']} {where}")
    else:
        net = models.build(arch, len(train_set.classes), settings["lrn"], seed=settings["seed"],
                           backend=backend)
    click.get_current_context().meta["gpunn.batch_size"] = settings["batch_size"]
    click.echo(f"{arch}: {net.num_params:,} parameters on {backend.device}; "
               f"{len(train_set):,} training and {len(val_set):,} validation images in "
               f"{len(train_set.classes)} classes"
               + (f"; PCA colour noise α ~ N(0, {settings['pca_noise']:g})"
                  if settings.get("pca_noise") else ""))
    epochs = settings["epochs"]

    def describe(record):
        val = (f"  val top-1 {record['evaluation_accuracy']:.2%}  top-5 "
               f"{record['evaluation_top5']:.2%}" if "evaluation_accuracy" in record else "")
        return (f"loss {record['training_cost']:.3f}  train top-1 "
                f"{record['training_accuracy']:.2%}{val}  eta {record['eta']:g}  "
                f"{record['images_per_s']:.1f} img/s  {record['seconds']:.0f}s")

    hint = f"gpunn imagenet --resume {checkpoint_dir}"
    if settings["data"] != str(_toy_dir()):
        hint += f" --data {settings['data']}"
    session = Session(net, epochs, describe=describe, checkpoint_dir=checkpoint_dir,
                      keep=run["keep"], state_extra={"imagenet": settings}, quiet=run["quiet"],
                      resume_hint=hint, first_epoch=(state["epoch"] + 1) if state else 1)
    if state is not None:
        session.last_path = state["checkpoint_path"]
        session.position = (state["epoch"], state["examples_done"])
    start = time.perf_counter()
    history = session.run(functools.partial(
        library.train, net, train_set, val_set, epochs=epochs,
        batch_size=settings["batch_size"], eta=settings["eta"], momentum=settings["momentum"],
        weight_decay=settings["weight_decay"], schedule=settings["schedule"],
        step_epochs=settings["step_epochs"], patience=settings["patience"],
        seed=settings["seed"], workers=settings["workers"], steps=settings["steps"],
        checkpoint_every=run["checkpoint_every"], on_nan=run["on_nan"], resume=state,
        pca_noise=settings.get("pca_noise", 0.0), comm=world(backend)), len(train_set))
    seconds = time.perf_counter() - start
    if history.stop_reason != "completed":
        click.echo(history.stop_reason)
    final = history.epochs[-1] if history.epochs else {}
    if "evaluation_accuracy" in final:
        click.echo(f"validation: top-1 {final['evaluation_accuracy']:.2%}  top-5 "
                   f"{final['evaluation_top5']:.2%}  ({len(val_set):,} images)  in "
                   f"{seconds:.0f}s")
    ten = None
    if settings.get("ten_crop"):
        start = time.perf_counter()
        ten = library.evaluate(net, val_set, batch_size=10 * settings["batch_size"],
                               workers=settings["workers"], ten_crop=True)
        click.echo(f"validation, ten crops: top-1 {ten['top1']:.2%}  top-5 {ten['top5']:.2%}  "
                   f"({ten['images']:,} images)  in {time.perf_counter() - start:.0f}s")
    if metrics_json and primary():  # rank 0 writes
        from gpunn.cli.main import write_json

        write_json(metrics_json, {
            "epochs": history.epochs, "stop_reason": history.stop_reason,
            "val_top1": final.get("evaluation_accuracy"),
            "val_top5": final.get("evaluation_top5"), "seconds": seconds,
            "val_ten_crop": ten,
            "device": backend.device, "config": settings})


def _training_bytes(arch: str, classes: int, lrn: bool, batch_size: int) -> int:
    """A lower estimate of a training step's memory: the parameters with their gradients
    and momentum, and each layer's outputs kept for backward with their gradients."""
    from gpunn import models

    rows = models.summary(arch, classes, lrn)
    size = models.INPUT_SIZE[arch]
    params = sum(r["weights"] + r["biases"] for r in rows)
    values = 3 * size * size + sum(math.prod(r["output_shape"]) for r in rows)
    return 4 * (3 * params + 3 * batch_size * values)


def _synthetic(arch, classes, lrn, batch_size, steps, eta, momentum, weight_decay, seed,
               backend, metrics_json, quiet=False):
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
              disable=True if quiet else None) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        result = library.throughput(net, source, batch_size, steps, 1, eta, momentum,
                                    weight_decay, on_step=progress)
    click.echo(f"training: {result['train_images_per_s']:.1f} images/s  "
               f"(steady state: {plural(steps, 'step')} after 1 warm-up step)")
    click.echo(f"forward:  {result['forward_images_per_s']:.1f} images/s")
    if metrics_json:
        from gpunn.cli.main import write_json

        write_json(metrics_json, {**result, "arch": arch, "classes": classes,
                                          "device": backend.device})


@imagenet.command("make-toy")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--classes", type=click.IntRange(2, 10), default=10, show_default=True,
              help="How many of the ten shapes, in the order listed below.")
@click.option("--per-class", type=click.IntRange(min=1), default=300, show_default=True,
              help="Training images per class.")
@click.option("--val-per-class", type=click.IntRange(min=1), default=60, show_default=True,
              help="Validation images per class.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The same seed writes the same images.")
@click.option("--overwrite", is_flag=True,
              help="Replace DIRECTORY if it holds files (it is replaced only once the new "
                   "set is complete).")
def make_toy(directory, classes, per_class, val_per_class, seed, overwrite):
    """Write the toy image folder of shapes and textures into DIRECTORY (new or empty).

    DIRECTORY/train/<class>/*.jpg and DIRECTORY/val/<class>/*.jpg, 80x80 JPEGs of ten
    classes: circle, square, triangle, cross, hstripes, vstripes, checkerboard, ring,
    diagonal, dots.
    """
    from tqdm import tqdm

    from gpunn.data import FolderNotEmpty
    from gpunn.data import make_toy as write_toy

    total = classes * (per_class + val_per_class)
    try:
        with tqdm(total=total, unit="img", desc="writing", leave=False,
                  disable=progress_disabled()) as bar:
            path = write_toy(directory, classes, per_class, val_per_class, seed=seed,
                             progress=lambda done, _: bar.update(done - bar.n),
                             overwrite=overwrite)
    except FolderNotEmpty as exc:
        raise UserError(exc.words("--overwrite")) from exc
    click.echo(f"{path}: {total:,} images in {classes} classes")


@imagenet.command()
@click.option("--arch", type=click.Choice(ARCHS), default="alexnet", show_default=True,
              help="alexnet (224x224 input, KSH 2012) or alexnet-small (64x64).")
@click.option("--classes", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Outputs of the last layer (ImageNet: 1,000).")
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
