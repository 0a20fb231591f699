"""``gpunn train``, ``evaluate``, ``predict`` and ``summary``: the book's networks.

The commands parse options, call the library and format what comes back; the training
loop reports through callbacks (:class:`gpunn.cli.session.Session`: a bar and a line per
epoch, checkpoints, Ctrl-C).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import click

from gpunn.cli.data import EXPAND_OPTION
from gpunn.cli.main import (
    DATA_DIR_OPTION,
    DEVICE_OPTION,
    THREADS_OPTION,
    UserError,
    quiet_requested,
    select_backend,
    skipped_checkpoint_notes,
    write_json,
)
from gpunn.cli.session import Session, check_outputs, checkpoint_options, plural, quiet_option

DATASETS = ("mnist", "fashion-mnist")


class SizesType(click.ParamType):
    """Comma-separated layer sizes, e.g. 784,30,10."""

    name = "SIZES"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return [int(v) for v in value]
        parts = [p.strip() for p in str(value).split(",")]
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            self.fail(f"expected comma-separated layer sizes like 784,30,10; received "
                      f"{value!r}", param, ctx)
        if len(sizes) < 2 or min(sizes) < 1:
            self.fail(f"expected at least two sizes, each >= 1, like 784,30,10; received "
                      f"{value!r}", param, ctx)
        return sizes


def _data_options(f):
    f = DATA_DIR_OPTION(f)
    f = click.option("--dataset", type=click.Choice(DATASETS), default="mnist",
                     show_default=True, help="The images: MNIST's handwritten digits, or "
                                             "Fashion-MNIST's clothes.")(f)
    return f


def _load_data(dataset: str, data_dir, quiet: bool = False):
    from gpunn.data import load_dataset

    return load_dataset(dataset, data_dir=data_dir, download=True,
                        progress=not (quiet or quiet_requested()))


def _list_presets() -> None:
    from gpunn import presets

    names = presets.names()
    width = max(len(name) for name in names)
    for name in names:
        summary, book = presets.describe(name)
        click.echo(f"{name:<{width}}  {summary}  (book: {book})")


# Options that describe a fully connected stack, which a convolutional preset fixes itself.
_FC_ONLY = ("sizes", "activation", "cost", "dropout", "init")


@click.command()
@click.option("--preset", default=None, metavar="NAME",
              help="Start from one of the book's runs: ch1, ch1-100, ch3-xent, ch3-l2, "
                   "ch3-l2-100, ch3-init, 3b1b, the chapter-5 rows ch5-1..ch5-4 and the "
                   "chapter-6 conv nets ch6-shallow ... ch6-dropout (see --list-presets); "
                   "other options override it.")
@click.option("--list-presets", is_flag=True, help="List the presets and exit.")
@click.option("--sizes", type=SizesType(), default=None,
              help="Layer sizes, input first. [default: 784,30,10]")
@click.option("--cost", type=click.Choice(["quadratic", "cross-entropy", "log-likelihood"]),
              default=None, help="Cost function (log-likelihood uses a softmax output). "
                                 "[default: quadratic]")
@click.option("--activation", type=click.Choice(["sigmoid", "tanh", "relu", "linear"]),
              default=None, help="Hidden-layer activation. [default: sigmoid]")
@click.option("--eta", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate η. [default: 3.0]")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Passes over the training data. [default: 30]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Mini-batch size. [default: 10]")
@click.option("--lmbda", type=click.FloatRange(min=0), default=None,
              help="L2 regularisation λ (weights decay by 1 − ηλ/n). [default: 0]")
@click.option("--l1", type=click.FloatRange(min=0), default=None,
              help="L1 regularisation λ₁. [default: 0]")
@click.option("--momentum", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="Momentum coefficient μ in [0, 1). [default: 0]")
@click.option("--dropout", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="Probability of dropping each hidden unit in training. [default: 0]")
@click.option("--init", type=click.Choice(["default", "large"]), default=None,
              help="Weights N(0, 1/n_in) ('default', chapter 3) or N(0, 1) ('large', "
                   "chapter 1). [default: large]")
@click.option("--early-stop", type=click.IntRange(min=0), default=None, metavar="N",
              help="Stop when validation accuracy has not improved in N epochs (0: off).")
@click.option("--schedule", type=click.IntRange(min=0), default=None, metavar="N",
              help="Halve η when validation accuracy has not improved in N epochs; stop at "
                   "η/128 (0: off).")
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Train on only the first N training images (chapter 3's overfitting).")
@EXPAND_OPTION
@click.option("--eval-on", type=click.Choice(["validation", "test"]), default="validation",
              show_default=True, help="Which split to report after each epoch.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seeds initial weights, shuffling and dropout.")
@DEVICE_OPTION
@THREADS_OPTION
@_data_options
@click.option("--save", "save_path", type=click.Path(dir_okay=False), default=None,
              help="Save the trained network to this .npz file.")
@click.option("--metrics-json", type=click.Path(dir_okay=False), default=None,
              help="Write per-epoch metrics and the test accuracy to this JSON file.")
@click.option("--monitor-training", is_flag=True,
              help="Also record training accuracy and cost each epoch (one more pass over "
                   "the training data); implied by --plot.")
@click.option("--track-layer-speed", is_flag=True,
              help="Record each hidden layer's speed of learning ‖δˡ‖ on 1,000 training "
                   "images after every epoch (chapter 5) into the metrics.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw training and evaluation accuracy and cost per epoch to this PNG "
                   "(needs gpunn[plot]).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Write a checkpoint (model, optimiser, RNG and data-order "
                                  "state) to DIR after every epoch; Ctrl-C writes one too.")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[DIR|FILE]",
              help="Continue the run saved in a checkpoint: the latest in DIR (default: "
                   "--checkpoint-dir) or FILE. Its settings are used; --epochs and --eta may "
                   "change.")
@checkpoint_options
@quiet_option
def train(preset, list_presets, sizes, cost, activation, eta, epochs, batch_size, lmbda, l1,
          momentum, dropout, init, early_stop, schedule, train_size, expand, eval_on, seed,
          device, threads,
          dataset, data_dir, save_path, metrics_json, monitor_training, track_layer_speed,
          plot_path, checkpoint_dir, resume, checkpoint_every, keep, on_nan, quiet):
    """Train one of the book's networks on MNIST and report its test accuracy.

    With no options this is chapter 1's run: 784-30-10 sigmoid neurons, quadratic cost,
    η = 3.0, mini-batches of 10, 30 epochs (the book reaches 95.42%). Any book row trains
    with --preset, chapter 6's conv nets included. On a terminal each epoch shows a
    progress bar (images/s, time left); every epoch prints a line. Examples:

    \b
      gpunn train --epochs 1
      gpunn train --preset ch3-l2-100 --save ch3.npz
      gpunn train --preset ch6-relu --epochs 1 --train-size 2000
      gpunn train --sizes 784,100,10 --cost cross-entropy --eta 0.5 --lmbda 5
      gpunn train --checkpoint-dir ck     (Ctrl-C, then:)  gpunn train --resume ck
    """
    from gpunn import presets

    if list_presets:
        _list_presets()
        return
    config = presets.get(preset) if preset else dict(presets.DEFAULTS)
    given = {"sizes": sizes, "cost": cost, "activation": activation, "eta": eta,
             "epochs": epochs, "batch_size": batch_size, "lmbda": lmbda, "l1": l1,
             "momentum": momentum, "dropout": dropout, "init": init,
             "early_stop": early_stop, "schedule": schedule}
    if config.get("row"):
        fixed = [f"--{k}" for k in _FC_ONLY if given[k] is not None]
        if fixed:
            raise UserError(f"{', '.join(fixed)} cannot change the convolutional preset "
                            f"{preset}: it fixes its layers; drop {fixed[0]}, or give --sizes "
                            f"without --preset for a fully connected network")
    config.update({k: v for k, v in given.items() if v is not None})
    config.update({"preset": preset, "seed": seed, "dataset": dataset,
                   "train_size": train_size, "expand": expand, "eval_on": eval_on,
                   "data_dir": str(Path(data_dir).resolve()) if data_dir else None})
    check_outputs({"--save": save_path, "--metrics-json": metrics_json, "--plot": plot_path},
                  {"--checkpoint-dir": checkpoint_dir})
    be = select_backend(device, threads) if resume is not None else None
    resumed = _resume(resume, checkpoint_dir, config, be) if resume is not None else None
    if resumed is not None:
        checkpoint_dir = checkpoint_dir or str(Path(resumed[1]["checkpoint_path"]).parent)
        config = resumed[1]["config"]
        dataset, train_size, eval_on, seed = (config[k] for k in
                                              ("dataset", "train_size", "eval_on", "seed"))
        data_dir = data_dir or config.get("data_dir")  # where the interrupted run found it
    if config.get("row") is None:
        _check_sizes(config["sizes"], dataset)

    import numpy as np

    import gpunn
    from gpunn.train import evaluate as evaluate_on

    be = be or select_backend(device, threads)
    from gpunn.distributed import world

    comm = world(be)
    click.get_current_context().meta["gpunn.batch_size"] = config["batch_size"]
    data = _load_data(dataset, data_dir, quiet)
    training = data.train if not train_size else data.train.subset(train_size)
    row_expanded = bool(config.get("row")) and presets.rows()[config["row"]].expanded
    if config.get("expand") or row_expanded:  # --expand, else the row's own (shifts)
        from gpunn.data.expand import expanded

        training = expanded(training, config.get("expand") or "shifts")
    evaluation = data.validation if eval_on == "validation" else data.test
    if resumed is None:
        net, state = _build(config, seed, be), None
    else:
        net, state = resumed
    if not quiet:
        click.echo(f"{net!r} on {be.device}; {len(training):,} training images "
                   f"({data.source}); evaluating on {eval_on}")
        if state is not None:
            for line in skipped_checkpoint_notes(state):
                click.echo(line, err=True)
            click.echo(f"resuming {state['checkpoint_path']}: {_position(state, len(training))}")
    if track_layer_speed:
        from gpunn.demos.vanishing import layer_speeds

        probe = np.arange(min(1000, len(training)))
        probe_x, probe_y = training.x(probe), training.labels[probe]

    def annotate(record):
        if track_layer_speed:
            record["layer_speeds"] = layer_speeds(net, probe_x, probe_y)

    def describe(record):
        acc = record.get("evaluation_accuracy")
        line = (f"{eval_on} accuracy {acc:7.2%} ({record['evaluation_correct']:,}/"
                f"{len(evaluation):,})  " if acc is not None else "")
        return line + f"{record['seconds']:6.2f} s"

    session = Session(net, config["epochs"], describe=describe, checkpoint_dir=checkpoint_dir,
                      keep=keep, state_extra={"config": config}, quiet=quiet,
                      resume_hint=f"gpunn train --resume {checkpoint_dir}", annotate=annotate,
                      first_epoch=(state["epoch"] + 1) if state else 1)
    if state is not None:
        session.last_path = state["checkpoint_path"]
        session.position = (state["epoch"], state["examples_done"])
    start = time.perf_counter()
    history = session.run(functools.partial(
        net.sgd, training, config["epochs"], config["batch_size"], config["eta"],
        lmbda=config["lmbda"], evaluation_data=evaluation, l1=config["l1"],
        momentum=config["momentum"], early_stopping_n=config["early_stop"],
        schedule_n=config["schedule"], monitor_evaluation_cost=True,
        monitor_training_accuracy=monitor_training or bool(plot_path),
        monitor_training_cost=monitor_training or bool(plot_path),
        resume=state, checkpoint_every=checkpoint_every, on_nan=on_nan, comm=comm),
        len(training))
    seconds = time.perf_counter() - start
    test_accuracy = evaluate_on(net, data.test, comm=comm)["accuracy"]
    ranks = f" x {comm.size} ranks ({comm.name})" if comm.size > 1 else ""
    click.echo(f"test accuracy {test_accuracy:.2%} after {plural(len(history), 'epoch')} in "
               f"{seconds:.1f} s on {be.name} ({be.device}){ranks}"
               + ("" if history.stop_reason == "completed" else f"; {history.stop_reason}"))
    if comm.rank != 0:
        return  # rank 0 writes the files
    if save_path:
        path = gpunn.save(net, save_path, training=config)
        click.echo(f"saved the network to {path}")
    if plot_path:
        from gpunn.plots import training_curves

        click.echo(f"plotted the training curves to {training_curves(history, plot_path)}")
    if metrics_json:
        write_json(metrics_json, {
            "epochs": history.epochs,
            "stop_reason": history.stop_reason,
            "test_accuracy": test_accuracy,
            "seconds": seconds,
            "device": be.device,
            "backend": be.name,
            "ranks": comm.size,
            "config": config,
        })


def _check_sizes(sizes, dataset) -> None:
    if sizes[0] != 784:
        raise UserError(f"--sizes must start with 784 (28x28 pixels) for {dataset}; received "
                        f"{','.join(map(str, sizes))}")
    if sizes[-1] != 10:
        raise UserError(f"--sizes must end with 10 (one output per class) for {dataset}; "
                        f"received {','.join(map(str, sizes))}")


def _build(config: dict, seed, be):
    """The untrained network of ``config``: a book row's conv net, or a fully connected one."""
    import gpunn

    if config.get("row"):
        from gpunn import book

        return book.build(book.get(config["row"]), seed=seed, backend=be)
    return gpunn.Network(config["sizes"], cost=config["cost"], activation=config["activation"],
                         init=config["init"], dropout=config["dropout"], seed=seed, backend=be)


def _resume(resume: str, checkpoint_dir, config: dict, be):
    """(net, state) of the checkpoint ``--resume`` names, after checking that the options
    given on the command line agree with the run it continues."""
    from click.core import ParameterSource

    from gpunn.checkpoint import load_checkpoint

    source = resume or checkpoint_dir
    if not source:
        raise UserError("--resume needs a checkpoint: `--resume DIR` (the latest checkpoint "
                        "in DIR), `--resume FILE`, or --checkpoint-dir DIR")
    net, state = load_checkpoint(source, backend=be)
    saved = state.get("config")
    if not isinstance(saved, dict) or state.get("kind") != "gpunn.Network.sgd":
        raise UserError(f"{state['checkpoint_path']} was not written by `gpunn train`; "
                        f"resume it from Python with gpunn.checkpoint.load_checkpoint")
    ctx = click.get_current_context()

    def given(key):
        return ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE

    def show(value):
        return ",".join(map(str, value)) if isinstance(value, list) else value

    for key, value in config.items():
        if key in ("epochs", "eta", "data_dir") or not given(key):
            continue
        if saved.get(key) != value:
            option = "--" + key.replace("_", "-")
            raise UserError(f"{option} {show(value)} differs from the run in "
                            f"{state['checkpoint_path']} ({option} {show(saved.get(key))}); "
                            f"resuming continues that run with its settings: drop {option}, "
                            f"or start a new run with another --checkpoint-dir")
    saved = dict(saved)
    for key in ("epochs", "eta"):
        if given(key):
            saved[key] = config[key]
    if saved["epochs"] < state["epoch"]:
        raise UserError(f"--epochs {saved['epochs']}: {state['checkpoint_path']} has already "
                        f"trained {plural(state['epoch'], 'epoch')}; give --epochs "
                        f"{state['epoch'] + 1} or more")
    if given("eta"):
        state["eta"] = config["eta"]
    state["config"] = saved
    return net, state


def _position(state, n: int) -> str:
    """Where a run is, e.g. 'after epoch 3' or 'in epoch 4 after 2,000/50,000 images'."""
    if state is None:
        return "before the first epoch ended"
    if state["examples_done"]:
        return f"in epoch {state['epoch'] + 1} after {state['examples_done']:,}/{n:,} images"
    return f"after epoch {state['epoch']}"


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default="test",
              show_default=True, help="Which images: the 50,000 training, 10,000 validation "
                                      "or 10,000 test images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Images per forward pass (memory grows with it).")
@_data_options
@DEVICE_OPTION
@THREADS_OPTION
def evaluate(model, split, batch_size, dataset, data_dir, device, threads):
    """Accuracy of a saved network (or a checkpoint) on a dataset split."""
    import gpunn
    from gpunn.train import evaluate as evaluate_on

    net = gpunn.load(model, backend=select_backend(device, threads))
    click.get_current_context().meta["gpunn.batch_size"] = batch_size
    data = _load_data(dataset, data_dir)
    part = getattr(data, split)
    accuracy = evaluate_on(net, part, batch_size=batch_size)["accuracy"]
    click.echo(f"{split} accuracy {accuracy:.2%} ({round(accuracy * len(part)):,}/"
               f"{len(part):,}) for {model}")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@DEVICE_OPTION
@THREADS_OPTION
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw the digit beside bars of the ten output activations to this PNG "
                   "(one image only).")
@click.option("--layers", "all_layers", is_flag=True,
              help="With --plot, draw every fully connected layer's activations too.")
def predict(model, images, device, threads, plot_path, all_layers):
    """Classify images of digits (PNG/JPEG, any size) with a saved network.

    Each image is made MNIST-like first: grey, light digit on dark (inverted if the
    background is light), cropped, scaled to 20 px and centred in 28x28.
    """
    if plot_path and len(images) != 1:
        raise UserError(f"--plot draws one image; received {len(images)}")
    import numpy as np

    import gpunn
    from gpunn.images import load_digit

    net = gpunn.load(model, backend=select_backend(device, threads))
    if net.n_in != 784:
        raise UserError(f"{model} expects {net.n_in} inputs; predict needs a network "
                        f"with 784 inputs (28x28 images)")
    X = np.stack([load_digit(path) for path in images])
    layers = net.activations(net.backend.asarray(X))
    out = net.backend.to_numpy(layers[-1])
    for path, a in zip(images, out):
        acts = "  ".join(f"{k}:{v:.3f}" for k, v in enumerate(a))
        click.echo(f"{path}: {int(a.argmax())}   [{acts}]")
    if plot_path:
        from gpunn import plots
        from gpunn.layers import FullyConnected

        hidden = [net.backend.to_numpy(a[0]) for layer, a in zip(net.layers[:-1], layers[:-1])
                  if all_layers and isinstance(layer, FullyConnected)]
        written = plots.prediction(X[0], hidden + [out[0]], plot_path, title=images[0])
        click.echo(f"wrote {written}")


def _print_layer_summary(net) -> None:
    rows = net.summary()
    width = max(len(r["layer"]) for r in rows)
    click.echo(f"{'layer':<{width}}  {'output':>14}{'weights':>12}{'biases':>10}")
    for r in rows:
        shape = "x".join(map(str, r["output_shape"]))
        click.echo(f"{r['layer']:<{width}}  {shape:>14}{r['weights']:>12,}{r['biases']:>10,}")
    click.echo(f"total: {net.num_params:,} parameters")


@click.command()
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--preset", default=None, metavar="NAME", help="A book preset, e.g. 3b1b.")
@click.option("--sizes", type=SizesType(), default=None, help="Layer sizes, e.g. 784,16,16,10.")
@click.option("--arch", type=click.Choice(["alexnet", "alexnet-small"]), default=None,
              help="An ImageNet-style convnet (1,000 classes); see `gpunn imagenet summary`.")
def summary(model, preset, sizes, arch):
    """Per-layer weight and bias counts of a network (MODEL file, --preset, --sizes, --arch)."""
    from gpunn import presets

    if arch:
        from gpunn.cli.imagenet import summary as arch_summary

        return arch_summary.callback(arch=arch, classes=1000, lrn=False)

    if model:
        from gpunn.io import read_meta

        meta, _ = read_meta(model)
        sizes = meta["architecture"].get("sizes")
        if sizes is None:
            import gpunn

            _print_layer_summary(gpunn.load(model, backend="cpu"))
            return
    elif preset:
        sizes = presets.get(preset)["sizes"]
    elif sizes is None:
        sizes = presets.DEFAULTS["sizes"]
    total = 0
    click.echo(f"{'layer':<8}{'shape':>14}{'weights':>12}{'biases':>10}{'total':>12}")
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        w, b = n_in * n_out, n_out
        total += w + b
        click.echo(f"{i:<8}{f'{n_out}x{n_in}':>14}{w:>12,}{b:>10,}{w + b:>12,}")
    click.echo(f"{'total':<8}{'':>14}{'':>12}{'':>10}{total:>12,}")
    click.echo(f"network {'-'.join(map(str, sizes))}: {total:,} parameters")
