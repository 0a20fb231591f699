"""``gpunn export``: a checkpoint (a file, or the latest in a directory) as a model file.

The model file is what ``gpunn train --save`` writes, so ``gpunn evaluate``, ``predict``,
``summary`` and ``show`` take it; the training state (momentum, the random generator, the
position in the epoch) is left out.
"""

from __future__ import annotations

from pathlib import Path

import click

from gpunn.cli.main import UserError, check_writable, skipped_checkpoint_notes


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="The model file to write (.npz is appended if missing).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def export(checkpoint, output, force):
    """Write the network of CHECKPOINT (a ckpt-NNNNNN.npz file, or a directory: its latest
    intact checkpoint) as a model file for `gpunn evaluate` and `gpunn predict`."""
    import gpunn
    from gpunn.checkpoint import load_checkpoint

    path = Path(output)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")  # as gpunn.save names it
    if path.exists() and not path.is_dir() and not force:
        raise UserError(f"-o {path} exists; pass --force to overwrite it, or choose another "
                        f"file")
    check_writable(path, "-o")
    net, state = load_checkpoint(checkpoint, backend="cpu")
    for line in skipped_checkpoint_notes(state, doing="exporting"):
        click.echo(line, err=True)
    config = state.get("config")
    training = dict(config) if isinstance(config, dict) else {}
    training["exported_from"] = {"checkpoint": state["checkpoint_path"],
                                 "epoch": state.get("epoch"),
                                 "examples_done": state.get("examples_done")}
    written = gpunn.save(net, path, training=training)
    epoch = state.get("epoch")
    when = f" (after epoch {epoch})" if isinstance(epoch, int) else ""
    click.echo(f"wrote {written} from {state['checkpoint_path']}{when}; use it with "
               f"`gpunn evaluate {written}` or `gpunn predict {written} IMAGE`")
