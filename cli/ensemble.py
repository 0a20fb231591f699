"""``gpunn ensemble``: train K networks with different seeds and let them vote (chapter 6)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gpunn.cli.main import (
    DATA_DIR_OPTION,
    DEVICE_OPTION,
    THREADS_OPTION,
    UserError,
    select_backend,
    write_json,
)
from gpunn.cli.session import check_outputs, checkpoint_options, quiet_option


@click.command()
@click.option("--members", "-k", type=click.IntRange(min=2), default=5, show_default=True,
              help="Networks in the ensemble; member i is trained with seed i.")
@click.option("--preset", default=None, metavar="NAME",
              help="A fully connected preset of `gpunn train` (ch1, ch3-l2, ...), or a "
                   "chapter-6 row of `gpunn reproduce` (ch6-relu, ch6-dropout, ...).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs per member (default: the preset's or row's).")
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Train each member on only the first N training images.")
@DEVICE_OPTION
@THREADS_OPTION
@DATA_DIR_OPTION
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Checkpoint every member's epochs under DIR; the same command resumes "
                   "after an interrupt and does not retrain finished members.")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[DIR]",
              help="Continue an interrupted ensemble from DIR (default: --checkpoint-dir).")
@click.option("--metrics-json", type=click.Path(dir_okay=False), default=None,
              help="Write each member's test accuracy and the vote's to this JSON file.")
@checkpoint_options
@quiet_option
def ensemble(members, preset, epochs, train_size, device, threads, data_dir, checkpoint_dir, resume,
             metrics_json, checkpoint_every, keep, on_nan, quiet):
    """Train MEMBERS networks and report each one's test accuracy and the plurality vote's.

    \b
      gpunn ensemble --preset ch3-l2 --members 5
      gpunn ensemble --preset ch6-relu --members 5 --epochs 10
    """
    from gpunn import book, presets
    from gpunn.data import load_dataset
    from gpunn.ensemble import vote_accuracy

    preset = preset or "ch3-l2"
    row = {**book.ROWS, **presets.rows()}.get(preset)
    if row is None:
        raise UserError(f"unknown preset {preset!r}; choose one of "
                        f"{', '.join(presets.names())} or ch6-ensemble")
    from gpunn.cli.reproduce import MemberJob, _run_member, resolve_resume

    checkpoint_dir = resolve_resume(resume, checkpoint_dir, f"ensemble-{preset}")
    check_outputs({"--metrics-json": metrics_json}, {"--checkpoint-dir": checkpoint_dir})
    be = select_backend(device, threads)
    data = load_dataset("mnist", data_dir=data_dir, download=True, progress=not quiet)

    settings = {"ensemble": preset, "epochs": epochs or row.epochs, "train_size": train_size}
    job = MemberJob(data, be, settings, epochs, "book", train_size, checkpoint_every, keep,
                    on_nan, quiet)
    test_outputs, figures, start = [], [], time.perf_counter()
    for seed in range(1, members + 1):
        run_dir = (Path(checkpoint_dir) / f"ensemble-{preset}" / f"member-{seed}"
                   if checkpoint_dir else None)
        result = _run_member(row, seed, run_dir, f"member {seed} ", job, keep_outputs=True)
        test_outputs.append(result["test_outputs"])
        figures.append(result["test"])
        click.echo(f"member {seed} (seed {seed}): test accuracy {result['test']:.2%}  "
                   f"{result['seconds']:.0f} s")
    accuracy = vote_accuracy(test_outputs, data.test.labels)
    seconds = time.perf_counter() - start
    click.echo(f"ensemble of {members} ({preset}): test accuracy {accuracy:.2%} by plurality "
               f"vote; {seconds:.1f} s in all")
    if metrics_json:
        write_json(metrics_json, {"preset": preset, "members": figures, "vote": accuracy,
                                  "seconds": seconds, "device": be.device,
                                  "settings": settings})
