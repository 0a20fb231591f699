"""``gpunn reproduce``: run a result of the book and set it beside the book's figure."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import click
from click.core import ParameterSource

from gpunn.cli.data import EXPAND_OPTION
from gpunn.cli.main import (
    DATA_DIR_OPTION,
    DEVICE_OPTION,
    THREADS_OPTION,
    UserError,
    primary,
    select_backend,
    skipped_checkpoint_notes,
    write_file,
    write_json,
)
from gpunn.cli.session import Session, check_outputs, checkpoint_options, plural, quiet_option

QUICK_TRAIN_SIZE = 1000


def _list_rows() -> None:
    from gpunn.book import ROWS

    width = max(len(name) for name in ROWS)
    click.echo(f"{'row':<{width}}  {'book':>7}  {'on':<10}  {'epochs':>6}  network")
    for row in ROWS.values():
        click.echo(f"{row.name:<{width}}  {row.book:>6.2f}%  {row.split:<10}  {row.epochs:>6}"
                   f"  ch{row.chapter}: {row.title}")
    click.echo("baselines: `gpunn baseline darkness` (book 22.25%), `gpunn baseline svm` "
               "(book 94.35%, needs scikit-learn)")


@click.command()
@click.argument("row", required=False)
@click.option("--list", "list_rows", is_flag=True, help="List every book row and exit.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Independent runs (seeds 1..N); the median is reported.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Override the book's number of epochs (e.g. for a shorter run).")
@click.option("--quick", is_flag=True,
              help=f"A smoke test: 1 seed, 1 epoch, {QUICK_TRAIN_SIZE:,} training images "
                   f"(2 members for an ensemble).")
@click.option("--member", "only_members", type=click.IntRange(min=1), multiple=True,
              metavar="K",
              help="For an ensemble row: train only member K (repeatable) and stop before the "
                   "vote, to spread the members over processes or machines that share one "
                   "--checkpoint-dir. Run again without --member to vote: finished members "
                   "are loaded, not retrained.")
@click.option("--compat", type=click.Choice(["book", "network3"]), default="book",
              show_default=True, help="Follow the book's text, or network3.py's actual code "
                                      "(FC init, L2 scaling). Dropout is scaled at evaluation "
                                      "in both, as the book and network3.py do.")
@EXPAND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@DATA_DIR_OPTION
@click.option("--metrics-json", type=click.Path(dir_okay=False), default=None,
              help="Write every seed's result to this JSON file.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Checkpoint every epoch of every seed under DIR/ROW/; run the same command "
                   "again to resume after an interrupt (finished seeds are not retrained).")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[DIR]",
              help="Continue an interrupted run from DIR (default: --checkpoint-dir); the same "
                   "as running the same command with --checkpoint-dir DIR, but an error if "
                   "DIR holds nothing of this row.")
@checkpoint_options
@quiet_option
def reproduce(row, list_rows, seeds, epochs, quick, only_members, compat, expand, device, threads,
              data_dir, metrics_json, checkpoint_dir, resume, checkpoint_every, keep, on_nan,
              quiet):
    """Train one of the book's results (ROW) and print the book's figure beside gpunn's.

    \b
      gpunn reproduce --list
      gpunn reproduce ch6-relu --seeds 3
      gpunn reproduce ch6-dropout --quick
      gpunn reproduce ch6-relu --expand shifts,rotations
      gpunn reproduce ch6-ensemble --seeds 1 --checkpoint-dir ck --member 1 --member 2
    """
    from gpunn import book

    if list_rows or row is None:
        if row is None and not list_rows:
            raise UserError("name a row to reproduce, or use --list to see them")
        _list_rows()
        return
    spec = book.get(row)
    if quick and click.get_current_context().get_parameter_source("seeds") \
            == ParameterSource.COMMANDLINE and seeds != 1:
        raise UserError(f"--quick trains one seed (a smoke test); drop --seeds {seeds} or "
                        f"--quick")
    checkpoint_dir = resolve_resume(resume, checkpoint_dir, spec.name)
    members_per_seed = min(spec.ensemble, 2) if quick else spec.ensemble
    _check_members(spec, only_members, members_per_seed, checkpoint_dir, metrics_json)
    check_outputs({"--metrics-json": metrics_json}, {"--checkpoint-dir": checkpoint_dir})
    be = select_backend(device, threads)
    from gpunn.data import load_dataset

    data = load_dataset("mnist", data_dir=data_dir, download=True, progress=not quiet)
    if quick:
        seeds, epochs = 1, 1
    train_size = min(QUICK_TRAIN_SIZE, len(data.train)) if quick else None
    n_epochs = epochs or spec.epochs
    # --quick trains two members of an ensemble: enough to exercise the vote
    click.echo(f"{spec.name}: {spec.title}; book {spec.book:.2f}% ({spec.split}); "
               f"{plural(seeds, 'seed')} x {plural(n_epochs, 'epoch')}"
               + (f" x {plural(members_per_seed, 'member')}" if spec.ensemble > 1 else "")
               + f" on {be.name} ({be.device})"
               + (f"; --expand {expand} (the book: "
                  f"{'shifts' if spec.expanded else 'none'})" if expand else ""), err=True)
    if quick:
        click.echo(f"--quick: a smoke test of the command ({QUICK_TRAIN_SIZE:,} training "
                   f"images, 1 epoch); its figures are not the book's and are expected to be "
                   f"far below {spec.book:.2f}%", err=True)
    results = []
    settings = {"row": spec.name, "compat": compat, "epochs": n_epochs, "quick": quick}
    if expand is not None:  # only when given: runs checkpointed before --expand still match
        settings["expand"] = expand
    if spec.dropout:  # runs checkpointed with inverted dropout (before 2026-12-02) differ
        from gpunn.book import DROPOUT_MODE

        settings["dropout"] = DROPOUT_MODE
    job = MemberJob(data, be, settings, epochs, compat, train_size, checkpoint_every, keep,
                    on_nan, quiet)
    for seed in range(1, seeds + 1):
        start = time.perf_counter()
        members = []
        for k in range(members_per_seed):
            if only_members and k + 1 not in only_members:
                continue
            member_seed = seed if spec.ensemble == 1 else seed * 100 + k
            label = f"seed {seed} " + (f"member {k + 1} " if spec.ensemble > 1 else "")
            run_dir = (Path(checkpoint_dir) / spec.name / (f"seed-{seed}" + (
                f"-member-{k + 1}" if spec.ensemble > 1 else "")) if checkpoint_dir else None)
            members.append(_run_member(spec, member_seed, run_dir, label, job,
                                       keep_outputs=spec.ensemble > 1))
        if only_members:
            asked = sorted(set(only_members))
            done = (f"member{'s' if len(asked) > 1 else ''} {', '.join(map(str, asked))} of "
                    f"{members_per_seed}")
            verb = (f"found {done} finished earlier" if all(m.get("loaded") for m in members)
                    else f"trained {done} in {time.perf_counter() - start:.1f} s")
            click.echo(f"seed {seed}: {verb}; run the command again without --member to vote "
                       f"once every member has finished")
            continue
        if spec.ensemble > 1:
            from gpunn.ensemble import vote_accuracy

            figure = vote_accuracy([m["test_outputs"] for m in members], data.test.labels)
            result = {"seed": seed, "figure": figure,
                      "members": [m["figure"] for m in members]}
        else:
            m = members[0]
            result = {k: v for k, v in m.items() if k != "net"}
        result["seconds"] = time.perf_counter() - start
        result["train_seconds"] = sum(m.get("train_seconds", 0.0) for m in members)
        results.append(result)
        extra = (f" (members' test accuracy: "
                 f"{', '.join(f'{a:.2%}' for a in result['members'])})"
                 if spec.ensemble > 1 else
                 f" (best {'validation' if spec.chapter == 6 else spec.split} "
                 f"{result['best']:.2%} at epoch {result['best_epoch']})")
        result["earlier_runs"] = any(m.get("earlier_runs") for m in members)
        timing = (f"{result['seconds']:.1f} s in this run; {result['train_seconds']:.1f} s of "
                  f"training in all, earlier runs included" if result["earlier_runs"] else
                  f"{result['seconds']:.1f} s ({result['train_seconds']:.1f} s training, the "
                  f"rest evaluating)")
        click.echo(f"seed {seed}: {_figure_name(spec)} {result['figure']:.2%}{extra}; {timing}")
    if only_members:
        return
    median = statistics.median(r["figure"] for r in results)
    click.echo(f"{spec.name}: median {_figure_name(spec)} {median:.2%} over "
               f"{plural(len(results), 'seed')}; book {spec.book:.2f}%"
               + (" (--quick: a smoke test, not comparable)" if quick else "")
               + f"; {sum(r['seconds'] for r in results):.1f} s in all")
    if metrics_json and primary():  # rank 0 writes
        write_json(metrics_json, {"row": spec.name, "book": spec.book,
                                          "split": spec.split, "compat": compat,
                                          "quick": quick, "epochs": n_epochs,
                                          "device": be.device, "median": median,
                                          "seeds": results})


def _differences(there, here) -> str:
    """What differs between the settings a run was made with and this command's, e.g.
    "dropout: none there, 'scale-at-eval' here"."""
    there = there if isinstance(there, dict) else {}
    keys = [k for k in dict.fromkeys([*there, *here]) if there.get(k) != here.get(k)]
    return "; ".join(f"{k}: {repr(there[k]) if k in there else 'none'} there, "
                     f"{repr(here[k]) if k in here else 'none'} here" for k in keys)


def _check_members(spec, only_members, members_per_seed, checkpoint_dir, metrics_json):
    """``--member K``: only for an ensemble row, K within it, and with a checkpoint directory
    (the member's network must outlive the command for the vote)."""
    if not only_members:
        return
    if spec.ensemble == 1:
        raise UserError(f"--member trains one network of an ensemble; {spec.name} is a single "
                        f"network (the ensemble row is ch6-ensemble)")
    too_big = sorted(k for k in set(only_members) if k > members_per_seed)
    if too_big:
        raise UserError(f"--member {too_big[0]}: {spec.name} has members 1 to "
                        f"{members_per_seed}")
    if not checkpoint_dir:
        raise UserError("--member needs --checkpoint-dir DIR: the vote later loads each "
                        "member from there")
    if metrics_json:
        raise UserError("--metrics-json records the vote, which --member does not reach; "
                        "give it to the run without --member")


def _figure_name(spec) -> str:
    """What the row's figure measures, e.g. 'test accuracy at the best validation epoch'."""
    if spec.ensemble > 1:
        return "test accuracy of the vote"
    if spec.chapter == 6:
        return "test accuracy at the best validation epoch"
    return f"{spec.split} accuracy"


def resolve_resume(resume, checkpoint_dir, name):
    """The checkpoint directory of a run, given ``--resume [DIR]`` and ``--checkpoint-dir``."""
    if resume is None:
        return checkpoint_dir
    directory = resume or checkpoint_dir
    if not directory:
        raise UserError("--resume needs a directory: `--resume DIR` or --checkpoint-dir DIR")
    if not (Path(directory) / name).is_dir():
        raise UserError(f"--resume {directory}: it holds no run of {name} "
                        f"({Path(directory) / name} is missing); start one with "
                        f"--checkpoint-dir {directory}")
    return directory


@dataclass(frozen=True)
class MemberJob:
    """What every network a command trains shares (``reproduce``'s seeds and members, the
    members of ``gpunn ensemble``): the data, the backend, the run settings recorded with
    each checkpoint and result, and the checkpoint options."""

    data: object
    backend: object
    settings: dict
    epochs: int | None
    compat: str
    train_size: int | None
    checkpoint_every: int | None
    keep: int
    on_nan: str
    quiet: bool

    @cached_property
    def test_set(self) -> str:
        """A short fingerprint of the test set (images, scale and labels): recorded test
        outputs are only used for the test set they were computed on."""
        import hashlib

        import numpy as np

        split = self.data.test
        digest = hashlib.sha256(np.ascontiguousarray(split.images).tobytes())
        digest.update(repr(split.scale).encode())
        digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


def _run_member(spec, seed, run_dir, label, job: MemberJob, keep_outputs=False):
    """Train one network of the row with ``seed``, resuming from ``run_dir`` when it holds a
    checkpoint; a finished run there (result.json + model.npz) is loaded instead of retrained.

    ``keep_outputs`` (ensemble members): the result also holds ``test_outputs``, the network's
    output activations on the test set, which the vote needs; they are kept in ``run_dir`` as
    test-outputs.npy, so a finished member votes without model.npz."""
    import functools

    import gpunn
    from gpunn import book
    from gpunn.checkpoint import latest_checkpoint, load_checkpoint
    from gpunn.distributed import world

    data, be, settings = job.data, job.backend, job.settings
    resume = None
    if run_dir is not None:
        done = run_dir / "result.json"
        if done.exists():
            result = json.loads(done.read_text())
            if result.get("settings") != settings:
                raise UserError(f"{run_dir} holds a run with other settings "
                                f"({_differences(result.get('settings'), settings)}); use "
                                f"another --checkpoint-dir")
            click.echo(f"  {label}finished earlier ({run_dir}), not retrained", err=True)
            return _finished_member(run_dir, result, job, keep_outputs)
        if latest_checkpoint(run_dir) is not None:
            resume = load_checkpoint(run_dir, backend=be)
            if resume[1].get("reproduce") != settings:
                raise UserError(f"{run_dir} holds a checkpoint of other settings "
                                f"({_differences(resume[1].get('reproduce'), settings)}); "
                                f"use another --checkpoint-dir")
            for line in skipped_checkpoint_notes(resume[1]):
                click.echo(line, err=True)
            click.echo(f"  {label}resuming {resume[1]['checkpoint_path']}", err=True)

    net, state = resume or (book.build(spec, seed=seed, backend=be, compat=job.compat), None)
    n_epochs = job.epochs or spec.epochs

    def describe(record):
        return (f"validation {record['evaluation_accuracy']:.2%}" if spec.chapter == 6 else
                f"{spec.split} {record['evaluation_accuracy']:.2%}") + \
               f"  {record['seconds']:.1f} s"

    session = Session(net, n_epochs, describe=describe, checkpoint_dir=run_dir,
                      keep=job.keep, state_extra={"reproduce": settings},
                      quiet=job.quiet, label=label,
                      resume_hint="the same command again (it resumes from "
                                  f"{run_dir and run_dir.parent.parent})",
                      first_epoch=(state["epoch"] + 1) if state else 1)
    if state is not None:
        session.last_path = state["checkpoint_path"]
        session.position = (state["epoch"], state["examples_done"])
    result = session.run(functools.partial(
        book.run_row, spec, data, seed, epochs=job.epochs, backend=be, compat=job.compat,
        train_size=job.train_size, resume=(net, state), checkpoint_every=job.checkpoint_every,
        on_nan=job.on_nan, expand=settings.get("expand"), comm=world(be)))
    result["earlier_runs"] = state is not None  # some epochs were trained by an earlier run
    record = {**{k: v for k, v in result.items() if k != "net"}, "settings": settings}
    if keep_outputs:
        from gpunn.ensemble import outputs

        result["test_outputs"] = outputs(result["net"], data.test)
        record["test_set"] = job.test_set
    if run_dir is not None and primary():  # rank 0 writes; result.json last: it marks "done"
        gpunn.save(result["net"], run_dir / "model.npz")
        if keep_outputs:
            _write_outputs(run_dir, result["test_outputs"])
        write_json(str(run_dir / "result.json"), record)
    return result


OUTPUTS_FILE = "test-outputs.npy"


def _write_outputs(run_dir, test_outputs) -> None:
    import numpy as np

    write_file(run_dir / OUTPUTS_FILE, lambda f: np.save(f, test_outputs))


def _finished_member(run_dir, result, job: MemberJob, keep_outputs):
    """A finished run loaded from ``run_dir``: its network when model.npz is there, and for an
    ensemble member its test outputs, read from test-outputs.npy when they were recorded for
    this test set, else computed from model.npz and recorded (runs made before 2026-12-02)."""
    import numpy as np

    import gpunn
    from gpunn.ensemble import outputs

    model = run_dir / "model.npz"
    net = gpunn.load(model, backend=job.backend) if model.exists() else None
    member = {**result, "earlier_runs": True, "loaded": True, "net": net}
    recorded = run_dir / OUTPUTS_FILE
    if keep_outputs and recorded.exists() and result.get("test_set") == job.test_set:
        member["test_outputs"] = np.load(recorded)
    elif net is None:
        missing = ("" if not keep_outputs else
                   f", and its {OUTPUTS_FILE} was recorded on another test set"
                   if recorded.exists() else f" nor {OUTPUTS_FILE}")
        raise UserError(f"{run_dir} holds a finished run (result.json) but no model.npz"
                        f"{missing}; copy the run's model.npz there, or use another "
                        f"--checkpoint-dir")
    elif keep_outputs:
        member["test_outputs"] = outputs(net, job.data.test)
        if primary():
            _write_outputs(run_dir, member["test_outputs"])
            write_json(str(run_dir / "result.json"), {**result, "test_set": job.test_set})
    return member
