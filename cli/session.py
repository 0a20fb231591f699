"""What every training command shares: the options and the callbacks of one training run.

``gpunn train``, ``reproduce``, ``ensemble``, ``imagenet`` and the demos all train through
the one loop (:func:`gpunn.train.fit`); a :class:`Session` gives it the CLI's side: a
progress bar on a terminal (images/s and ETA), one line per epoch, checkpoints written
through :mod:`gpunn.checkpoint`, Ctrl-C/SIGTERM turned into a checkpoint at the current
chunk and exit 130/143, and a divergence turned into one line and exit 3.
"""

from __future__ import annotations

import sys

import click

from gpunn.cli.main import InterruptGuard, UserError, check_writable

ON_NAN = ("stop", "skip-batch", "halve-eta")


def checkpoint_options(f):
    """--checkpoint-dir, --checkpoint-every, --keep and --on-nan, as every command has them."""
    f = click.option("--on-nan", type=click.Choice(ON_NAN), default="stop", show_default=True,
                     help="When a weight becomes NaN or infinite: stop (exit 3), skip the bad "
                          "mini-batch, or halve eta and retry.")(f)
    f = click.option("--keep", type=click.IntRange(min=1), default=3, show_default=True,
                     metavar="K", help="Keep the newest K checkpoints in --checkpoint-dir.")(f)
    f = click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, metavar="N",
                     help="Also write a checkpoint every N mini-batches (0: only after "
                          "epochs).")(f)
    return f


def quiet_option(f):
    return click.option("--quiet", "-q", is_flag=True,
                        help="No progress bars or per-epoch lines; only the results.")(f)


def check_outputs(files: dict, dirs: dict | None = None) -> None:
    """Check, before any training starts, that every output given can be written:
    ``files={"--save": path, ...}``, ``dirs={"--checkpoint-dir": path}`` (None: not given)."""
    for option, path in files.items():
        if path:
            check_writable(path, option)
    for option, path in (dirs or {}).items():
        if path:
            check_writable(path, option, directory=True)


class Session:
    """The CLI's callbacks for one run of the loop, and how the run ends.

    ``label`` prefixes the epoch lines (e.g. "seed 2 " in ``reproduce``); ``describe(record)``
    formats an epoch's figures; ``state_extra`` is stored in every checkpoint beside the
    loop's state (the command's configuration, to check and continue a resume);
    ``resume_hint`` completes "resume with: ..."; ``annotate(record)`` may add figures to
    each epoch's record (quiet or not) before it is described.
    """

    def __init__(self, net, epochs: int, *, describe, checkpoint_dir=None, keep: int = 3,
                 state_extra: dict | None = None, quiet: bool = False, label: str = "",
                 resume_hint: str = "", first_epoch: int = 1, unit: str = "img",
                 annotate=None):
        self.net, self.epochs, self.describe, self.annotate = net, epochs, describe, annotate
        self.checkpoint_dir, self.keep = checkpoint_dir, keep
        self.state_extra = state_extra or {}
        self.quiet, self.label, self.resume_hint, self.unit = quiet, label, resume_hint, unit
        self.epoch = first_epoch
        self.last_path = None
        self.position = None  # (epoch, examples_done) of the last state seen
        self._bar = None
        self._last_accuracy, self._warned = None, False

    # -- the loop's callbacks
    def on_progress(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self._bar is None:
            from tqdm import tqdm

            # disable=None: no bar unless stderr is a terminal (logs and pipes stay clean)
            self._bar = tqdm(total=total, unit=self.unit, unit_scale=True, leave=False,
                             desc=f"{self.label}epoch {self.epoch}/{self.epochs}",
                             disable=None, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch(self, record: dict) -> None:
        self.close_bar()
        self.epoch = record["epoch"] + 1
        if self.annotate is not None:
            self.annotate(record)
        if not self.quiet:
            click.echo(f"{self.label}epoch {record['epoch']:>3}/{self.epochs}  "
                       f"{self.describe(record)}")
        self.warn_if_stuck(record.get("evaluation_accuracy"))

    def warn_if_stuck(self, accuracy) -> None:
        """Say so, once, when two epochs in a row end at the same accuracy at chance level
        (at most 1.5 / classes): a network that answers one class for every image, as one
        whose ReLU units have all died does. It goes on training; the user decides."""
        classes = getattr(self.net, "n_out", 0)
        if accuracy is None or classes < 2 or self._warned:
            return
        if accuracy == self._last_accuracy and accuracy <= 1.5 / classes:
            self._warned = True
            click.echo(f"gpunn: warning: {self.label}accuracy {accuracy:.2%} after epochs "
                       f"{self.epoch - 2} and {self.epoch - 1}, chance level for "
                       f"{classes} classes: the network has probably stopped learning (for "
                       f"example, every ReLU unit of a layer dead); stop it (Ctrl-C) and "
                       f"start from another seed or with a smaller learning rate", err=True)
        self._last_accuracy = accuracy

    def on_checkpoint(self, state: dict) -> None:
        self.position = (state["epoch"], state["examples_done"])
        if self.checkpoint_dir:
            from gpunn.checkpoint import save_checkpoint

            self.last_path = save_checkpoint(self.checkpoint_dir, self.net,
                                             {**state, **self.state_extra}, keep=self.keep)

    # -- running it
    def run(self, train, n: int | None = None):
        """Call ``train(should_stop=..., on_progress=..., on_epoch=..., on_checkpoint=...)``
        (a partial of ``fit``, ``Network.sgd``, ``imagenet.train`` or ``book.run_row``) and
        return what it returns (a History, or a dict with a "stop_reason"); an interrupt or a
        divergence ends the command here, with one line."""
        from gpunn.errors import TrainingDiverged

        if not self.quiet and sys.stderr.isatty() and \
                self.net.backend.first_compile_likely(_kernel_ops(self.net)):
            click.echo("compiling kernels (first run only; they are cached for the next)",
                       err=True)
        try:
            with InterruptGuard() as guard:
                history = train(should_stop=guard.should_stop, on_progress=self.on_progress,
                                on_epoch=self.on_epoch, on_checkpoint=self.on_checkpoint)
        except TrainingDiverged as exc:
            where = (f"the last good checkpoint is {self.last_path} (resume with "
                     f"`{self.resume_hint} --eta {exc.eta / 2:g}`)" if self.last_path
                     else "no checkpoint was written (use --checkpoint-dir to keep one)")
            batch = f", mini-batch {exc.batch}" if exc.batch else ""
            raise UserError(f"{self.label}training diverged in epoch {exc.epoch}{batch} at eta "
                            f"{exc.eta:g}: a weight or the cost became NaN or infinite; "
                            f"{where}; try a smaller --eta, or --on-nan skip-batch / "
                            f"halve-eta", exc.exit_code) from exc
        finally:
            self.close_bar()
        reason = history["stop_reason"] if isinstance(history, dict) else history.stop_reason
        if reason == "interrupted":
            # under mpiexec a rank may stop because another was signalled: exit as it does
            name, code = guard.name or "SIGINT", guard.exit_code or 130
            where = self.where(n)
            if self.last_path:
                click.echo(f"gpunn: {name}: stopped {self.label}{where}; checkpoint "
                           f"{self.last_path}; resume with: {self.resume_hint}", err=True)
            else:
                click.echo(f"gpunn: {name}: stopped {self.label}{where}; no "
                           f"--checkpoint-dir was given, so there is nothing to resume",
                           err=True)
            click.get_current_context().exit(code)
        return history

    def where(self, n: int | None) -> str:
        """Where the run is, e.g. 'after epoch 3' or 'in epoch 4 after 2,000/50,000 images'."""
        if self.position is None:
            return "before the first epoch ended"
        epoch, done = self.position
        if done:
            of = f"/{n:,}" if n else ""
            return f"in epoch {epoch + 1} after {done:,}{of} images"
        return f"after epoch {epoch}"


def _kernel_ops(net) -> list[str]:
    """The compiled kernels training ``net`` calls, by its layers' kinds."""
    ops = {"gather_rows"}
    for layer in net.layers:
        ops |= {"fully-connected": {"dense_sgd"}, "softmax": {"softmax_cross_entropy"},
                "conv2d": {"conv2d"}, "max-pool": {"max_pool2d"},
                "conv-pool": {"conv2d", "max_pool2d"}}.get(layer.kind, set())
    return sorted(ops)


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")
