"""``gpunn demo approx`` and ``gpunn demo vanishing``: chapters 4 and 5, printed as tables.

The numbers come from :mod:`gpunn.demos`; the pictures from :mod:`gpunn.plots`.
"""

from __future__ import annotations

import click

from gpunn.cli.main import (
    DATA_DIR_OPTION,
    DEVICE_OPTION,
    THREADS_OPTION,
    InterruptGuard,
    progress_disabled,
    select_backend,
)
from gpunn.cli.session import check_outputs, plural


class IntListType(click.ParamType):
    """Comma-separated positive integers, e.g. 5,10,20."""

    name = "N,N,..."

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return [int(v) for v in value]
        try:
            numbers = [int(p) for p in str(value).split(",")]
        except ValueError:
            numbers = []
        if not numbers or min(numbers) < 1:
            self.fail(f"expected comma-separated integers >= 1 like 5,10,20; received "
                      f"{value!r}", param, ctx)
        return numbers


@click.group()
def demo():
    """The book's demonstrations: universal approximation (chapter 4) and unstable
    gradients (chapter 5)."""


@demo.command()
@click.option("--bumps", type=IntListType(), default="5,10,20,50,100", show_default=True,
              help="Numbers of bumps (pairs of step neurons) to build.")
@click.option("--hidden", type=click.IntRange(min=1), default=30, show_default=True,
              help="Hidden neurons of the network trained by SGD.")
@click.option("--steps", type=click.IntRange(min=0), default=40_000, show_default=True,
              help="SGD steps (mini-batches of 100 fresh x) for the trained network; 0: skip.")
@click.option("--eta", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Learning rate of the trained network (momentum 0.9).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seeds the trained network's initial weights and its sample points.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw f, the constructions and the trained fit to this PNG.")
def approx(bumps, hidden, steps, eta, seed, plot_path):
    """Chapter 4: one hidden layer can approximate f(x) = 0.2 + 0.4x² + 0.3x sin(15x) +
    0.05 cos(50x).

    Builds the book's construction (step neurons with w = 999, bumps from pairs with
    heights ±h, the output σ(Σ h a + b) so the bumps build σ⁻¹∘f) for each number of bumps,
    and prints the average deviation on the book's scale (σ⁻¹∘f against the weighted
    output; the book's target is 0.40) and on the scale of f. Then trains a 1-HIDDEN-1
    sigmoid network by SGD on the same f, for comparison.
    """
    from gpunn.demos import approx as demo_approx

    check_outputs({"--plot": plot_path})
    rows = demo_approx.deviations(bumps)
    click.echo("The book's construction (average deviation over 1,001 points of [0, 1]):")
    click.echo(f"{'bumps':>7}{'hidden':>8}{'σ⁻¹ scale (book)':>19}{'f scale':>10}")
    for r in rows:
        mark = "  <= 0.40" if r["logit"] <= demo_approx.BOOK_TARGET else ""
        click.echo(f"{r['bumps']:>7}{r['hidden']:>8}{r['logit']:>19.3f}{r['f']:>10.4f}{mark}")
    met = [r["bumps"] for r in rows if r["logit"] <= demo_approx.BOOK_TARGET]
    click.echo(f"book's target: average deviation <= {demo_approx.BOOK_TARGET:.2f} on the σ⁻¹ "
               f"scale; " + (f"met from {min(met)} bumps" if met else "not met"))
    fit_net = None
    if steps:
        fit_net, dev = demo_approx.fit(hidden=hidden, steps=steps, eta=eta, seed=seed)
        click.echo(f"trained 1-{hidden}-1 sigmoid network (SGD, quadratic cost, {steps:,} steps "
                   f"of 100 points, η = {eta:g}, momentum 0.9): average deviation "
                   f"{dev['logit']:.3f} on the σ⁻¹ scale, {dev['f']:.4f} on the f scale")
    if plot_path:
        from gpunn import plots

        x = demo_approx.GRID
        shown = sorted(bumps)[:1] + (sorted(bumps)[-1:] if len(bumps) > 1 else [])
        weighted, outputs = {}, {}
        for n in shown:
            net = demo_approx.construction(n)
            weighted[f"{n} bumps"] = demo_approx.weighted_output(net, x)
            outputs[f"{n} bumps"] = demo_approx.network_output(net, x)
        if fit_net is not None:
            weighted[f"trained 1-{hidden}-1"] = demo_approx.weighted_output(fit_net, x)
            outputs[f"trained 1-{hidden}-1"] = demo_approx.network_output(fit_net, x)
        first = next(r for r in rows if r["bumps"] == shown[0])
        path = plots.approximation(x, demo_approx.goal(x), weighted, demo_approx.f(x),
                                   outputs, plot_path, deviation=first["logit"])
        click.echo(f"wrote {path}")


@demo.command()
@click.option("--hidden-layers", type=IntListType(), default="1,2,3,4", show_default=True,
              help="Networks [784, 30 x k, 10] to measure, for each k.")
@click.option("--images", type=click.IntRange(min=1), default=1000, show_default=True,
              help="The first N training images (the book: 1,000).")
@click.option("--seeds", type=click.IntRange(min=1), default=10, show_default=True,
              help="Average the speeds at initialisation over this many random networks.")
@click.option("--epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also train (the book: 500 epochs, one mini-batch of all images, η = 0.1, "
                   "λ = 5) and track the speeds.")
@click.option("--eta", type=click.FloatRange(min=0, min_open=True), default=0.1,
              show_default=True, help="Learning rate η of the --epochs training (the book: 0.1).")
@click.option("--lmbda", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="L2 regularisation λ of that training, as the book's run.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw the speeds (at initialisation, or per epoch with --epochs) to this PNG.")
@DATA_DIR_OPTION
@DEVICE_OPTION
@THREADS_OPTION
def vanishing(hidden_layers, images, seeds, epochs, eta, lmbda, plot_path, data_dir, device,
              threads):
    """Chapter 5: the speed of learning ‖δˡ‖ of each hidden layer falls towards the input.

    For networks [784, 30, ..., 30, 10] as the book built them (sigmoid, cross-entropy, weights
    N(0, 1/n_in)), the length of the bias gradient of each hidden layer for the mean cost over
    the first 1,000 MNIST training images, averaged over --seeds networks, beside the book's
    figures (one network each) in parentheses.
    """
    import numpy as np

    import gpunn
    from gpunn.cli.train import _load_data
    from gpunn.demos import vanishing as demo_vanishing

    check_outputs({"--plot": plot_path})
    be = select_backend(device, threads)
    data = _load_data("mnist", data_dir)
    n = min(images, len(data.train))
    X, y = data.train.x(np.arange(n)), data.train.labels[:n]
    click.echo(f"speed of learning ‖δˡ‖ at initialisation, mean cost over {n:,} training "
               f"images, mean of {seeds} networks (the book's figure in parentheses):")
    results = []
    for k in hidden_layers:
        sizes = demo_vanishing.book_sizes(k)
        speeds, _ = demo_vanishing.speeds_at_init(sizes, X, y, seeds=range(seeds), backend=be)
        book = demo_vanishing.BOOK_SPEEDS.get(k)
        cells = [f"{s:.3f}" + (f" ({b:g})" if book else "")
                 for s, b in zip(speeds, book or [None] * k)]
        ratio = f"first/last {speeds[0] / speeds[-1]:.3f}" if k > 1 else ""
        if book and k > 1:
            ratio += f" ({book[0] / book[-1]:.3f})"
        name = "-".join(map(str, sizes))
        click.echo(f"{name:<24}" + "".join(f"{c:<17}" for c in cells) + ratio)
        results.append({"sizes": sizes, "speeds": speeds, "book": list(book) if book else None})
    if epochs:
        click.echo(f"training each network for {plural(epochs, 'epoch')} (mini-batch of all {n:,} "
                   f"images, η = {eta:g}, λ = {lmbda:g}), seed 0:")
        from tqdm import tqdm

        for r in results:
            net = gpunn.Network(r["sizes"], cost=demo_vanishing.BOOK_COST, seed=0, backend=be)
            name = "-".join(map(str, r["sizes"]))
            with InterruptGuard() as guard, tqdm(total=epochs, unit="epoch", desc=name,
                                                 leave=False,
                                                 disable=progress_disabled()) as bar:
                r["track"] = demo_vanishing.track_speeds(
                    net, X, y, epochs, eta=eta, lmbda=lmbda, should_stop=guard.should_stop,
                    on_epoch=lambda epoch, _: bar.update(epoch - bar.n))
            if guard.requested:
                click.echo(f"gpunn: {guard.name}: stopped training {name} after "
                           f"{plural(len(r['track']) - 1, 'epoch')}", err=True)
                click.get_current_context().exit(guard.exit_code)
            click.echo(f"{name:<24}after {plural(epochs, 'epoch')}: "
                       + "  ".join(f"{s:.2e}" for s in r["track"][-1]))
    if plot_path:
        from gpunn import plots

        click.echo(f"wrote {plots.layer_speeds(results, plot_path)}")
