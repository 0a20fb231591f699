"""``gpunn plot`` (training curves from --metrics-json) and ``gpunn show`` (a model's weights).

The drawing is done by :mod:`gpunn.plots`; matplotlib is needed only when these run.
"""

from __future__ import annotations

import json

import click

from gpunn.cli.main import UserError, check_writable


def _output(output, source: str, suffix: str, force: bool) -> str:
    """The PNG to write: ``-o``, else beside ``source`` with ``suffix``; never an existing
    file unless ``--force`` (a default name must not replace a picture silently)."""
    from pathlib import Path

    if output is None:
        output = str(Path(source).with_suffix("")) + suffix
    if Path(output).exists() and not force:
        raise UserError(f"{output} exists; pass --force to replace it, or -o to write "
                        f"another file")
    check_writable(output, "-o")
    return output


@click.command()
@click.argument("metrics", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The PNG to write. [default: METRICS with .png, e.g. m.json -> m.png]")
@click.option("--force", is_flag=True, help="Replace the PNG if it exists.")
def plot(metrics, output, force):
    """Training and evaluation accuracy and cost per epoch, from the METRICS JSON file that
    `gpunn train --metrics-json` writes (costs appear when they were monitored)."""
    from gpunn import plots

    output = _output(output, metrics, ".png", force)
    try:
        with open(metrics, encoding="utf-8") as f:
            payload = json.load(f)
    except OSError as exc:
        raise UserError(f"cannot read {metrics}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{metrics} is not JSON ({exc}); expected the file gpunn train "
                        "--metrics-json writes") from exc
    title = None
    if isinstance(payload, dict) and isinstance(payload.get("config"), dict):
        config = payload["config"]
        if config.get("sizes"):
            title = (f"{'-'.join(map(str, config['sizes']))}, {config.get('cost', '')}, "
                     f"η = {config.get('eta', '?')}")
    click.echo(f"wrote {plots.training_curves(payload, output, title=title)}")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--weights", "show_weights", is_flag=True,
              help="The first hidden layer's incoming weights, one 28x28 image per neuron.")
@click.option("--max-units", type=click.IntRange(min=1), default=100, show_default=True,
              help="Draw at most this many neurons.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The PNG to write. [default: MODEL with -weights.png, e.g. net.npz -> "
                   "net-weights.png]")
@click.option("--force", is_flag=True, help="Replace the PNG if it exists.")
def show(model, show_weights, max_units, output, force):
    """Pictures of a saved network, as in 3Blue1Brown's videos (--weights)."""
    if not show_weights:
        raise UserError("say what to show: --weights (the first layer's incoming weights)")
    output = _output(output, model, "-weights.png", force)
    import gpunn
    from gpunn import plots

    net = gpunn.load(model, backend="cpu")
    w = net.backend.to_numpy(net.weights[0])
    if w.ndim != 2 or w.shape[1] != 784:
        raise UserError(f"{model}: --weights draws a first layer with 784 inputs (28x28 "
                        f"images); its first weights have shape {tuple(w.shape)}")
    title = None
    if w.shape[0] > max_units:
        title = f"Incoming weights of the first {max_units} of {w.shape[0]} hidden neurons"
    path = plots.first_layer_weights(w[:max_units], output, title=title)
    click.echo(f"wrote {path}")
