"""The ``gpunn`` command group and its shared plumbing (errors, exit codes, --device,
signals).

Exit statuses: 0 done; 1 an unexpected error (a bug: traceback); 2 bad input, usage or
environment (including a checkpoint that could not be written); 3 training diverged; 4 out
of memory (GPU or host); 130 interrupted by SIGINT (Ctrl-C); 143 stopped by SIGTERM.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys

import click

from gpunn import __version__
from gpunn.errors import GpunnError


class UserError(click.ClickException):
    """A user's mistake: one line on stderr, exit status 2, no traceback."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"gpunn: error: {self.format_message()}", err=True, file=file)


class GpunnGroup(click.Group):
    """A click group whose errors are one line on stderr and an exit status, no traceback.

    Click's own usage errors (a bad option value, a missing argument) and gpunn's errors
    (``GpunnError``) both become ``gpunn: error: ...`` and exit 2.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        ranks = _Ranks.start()
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            ranks.fail(f"gpunn: error: {message}", exc.exit_code)
        except click.Abort:
            ranks.fail("gpunn: aborted", 130)
        except Exception:  # a bug on one rank: its traceback, then every rank ends
            if ranks.comm is None:
                raise
            import traceback

            ranks.fail(traceback.format_exc().rstrip(), 1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        from gpunn.distributed import launched_size

        if launched_size() > 1 and name not in DATA_PARALLEL:
            raise UserError(f"`gpunn {name}` does not run data parallel yet; under mpiexec "
                            f"use {' or '.join(f'`gpunn {c}`' for c in DATA_PARALLEL)}, or "
                            f"run `gpunn {name}` without mpiexec")
        return name, command, rest

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GpunnError as exc:
            raise UserError(str(exc), exc.exit_code) from exc
        except Exception as exc:
            if is_gpu_out_of_memory(exc):  # CuPy's OutOfMemoryError is a MemoryError too
                raise UserError(gpu_out_of_memory_message(exc, ctx.meta), 4) from exc
            if isinstance(exc, MemoryError):  # NumPy's _ArrayMemoryError is one
                raise UserError(host_out_of_memory_message(exc, ctx.meta), 4) from exc
            raise
        finally:
            be = ctx.meta.get("gpunn.backend")
            if be is not None:
                be.free_memory()  # hand CuPy's cached blocks back to the driver

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            _load_commands(self)
            command = super().get_command(ctx, name)
        return command

    def list_commands(self, ctx):
        _load_commands(self)
        return super().list_commands(ctx)


# The commands that run as one job under `mpiexec -n N` (N > 1); the others refuse there.
DATA_PARALLEL = ("train", "reproduce", "imagenet", "info")


class _Ranks:
    """The command's side of a run under ``mpiexec -n N`` (N > 1): only rank 0 prints (the
    others' stdout and stderr go to /dev/null), and an error on any rank is one line and
    MPI_Abort, which ends every rank at once (the others would wait in the next all-reduce
    for ever). Without mpiexec, or with one rank, nothing changes."""

    def __init__(self, comm=None, stderr=None):
        self.comm, self.stderr = comm, stderr

    @classmethod
    def start(cls):
        from gpunn import distributed

        if distributed.launched_size() <= 1:
            return cls()
        try:
            comm = distributed.world()
        except distributed.MPIUnavailable as exc:
            if distributed.launched_rank() == 0:  # one line for the job, not one a rank
                click.echo(f"gpunn: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        ranks = cls(comm, sys.stderr)
        if comm.rank > 0:
            import os

            sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process
        return ranks

    def fail(self, line: str, code: int):
        """Print ``line`` on stderr and exit ``code``; under MPI, abort every rank."""
        import time

        if self.comm is None:
            click.echo(line, err=True)
            sys.exit(code)
        if self.comm.rank > 0:
            # The same mistake (a bad option) fails on every rank: rank 0's abort ends this
            # one before it prints, so the job shows the line once.
            time.sleep(1.0)
        print(line, file=self.stderr, flush=True)
        # The launcher forwards a rank's output through a pipe; an abort at once can tear the
        # job down before the line is through (seen once, on a loaded machine).
        time.sleep(0.25)
        self.comm.abort(code)
        sys.exit(code)  # MPI_Abort ends the process; should it return, so does this


def primary() -> bool:
    """True on the rank that prints and writes files: rank 0, or the only process."""
    from gpunn import distributed

    return distributed.launched_size() <= 1 or distributed.world().rank == 0


def _load_commands(group: click.Group) -> None:
    """Import the command modules on first need (keeps ``gpunn --version`` instant)."""
    if getattr(group, "_loaded", False):
        return
    group._loaded = True
    from gpunn.cli import commands

    commands.register(group)
    _add_quiet(group)


def _add_quiet(command: click.Command) -> None:
    """Give every command ``--quiet/-q`` (no progress bars or notes, only the results); a
    command with its own ``quiet`` keeps it, the others read :func:`quiet_requested`."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_quiet(sub)
        if command.name == "cli":
            return
    if any(p.name == "quiet" for p in command.params):
        return

    def remember(ctx, param, value):
        if value:
            ctx.meta["gpunn.quiet"] = True

    command.params.append(click.Option(
        ["--quiet", "-q"], is_flag=True, expose_value=False, callback=remember,
        help="No progress bars or notes on stderr; only the results."))


def quiet_requested() -> bool:
    """True when the running command was given ``--quiet``."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get("gpunn.quiet"))


def progress_disabled():
    """tqdm's ``disable``: True under ``--quiet``, else None (a bar only on a terminal)."""
    return True if quiet_requested() else None


def _existing_data_dir(ctx, param, value):
    """--data-dir must exist (a download goes there only with `gpunn data fetch`); the line
    names $GPUNN_DATA when that is where the folder came from."""
    if value is None:
        return None
    from pathlib import Path

    from click.core import ParameterSource

    if not Path(value).exists():
        if ctx.get_parameter_source(param.name) == ParameterSource.ENVIRONMENT:
            raise UserError(f"GPUNN_DATA={value} does not exist (no --data-dir was given, so "
                            f"the environment variable GPUNN_DATA chose it); set GPUNN_DATA "
                            f"to the folder that holds the data, or unset it to use the cache")
        raise UserError(f"--data-dir {value} does not exist; give the folder that holds the "
                        f"data (DIR/mnist/ or the files), or leave --data-dir out to use "
                        f"$GPUNN_DATA or the cache")
    return value


DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(file_okay=True, dir_okay=True), default=None,
    envvar="GPUNN_DATA", callback=_existing_data_dir,
    help="Where the dataset files are: DIR/mnist/ or the files themselves (default: "
         "$GPUNN_DATA, then ~/.cache/gpunn, then a download into the cache).")

DEVICE_OPTION = click.option(
    "--device",
    default="auto",
    show_default=True,
    envvar="GPUNN_DEVICE",
    help="auto, cpu, cuda or cuda:N. auto uses a GPU when CuPy can start one, else NumPy.",
)


THREADS_OPTION = click.option(
    "--threads", type=click.IntRange(min=1), default=None, envvar="GPUNN_NUM_THREADS",
    help="CPU threads for BLAS and the Numba kernels together (default: $GPUNN_NUM_THREADS, "
         "else every core; under mpiexec, the cores split between the ranks of a machine).")


def write_json(path, payload: dict) -> None:
    """Write a results file (``--metrics-json`` etc.) atomically, or a one-line UserError."""
    from gpunn.io import write_json_atomic

    with _writing(path):
        write_json_atomic(path, payload)


def write_file(path, write) -> None:
    """Write ``path`` all or nothing (``write(f)`` fills a binary file), or a one-line
    UserError."""
    from gpunn.io import write_atomic

    with _writing(path):
        write_atomic(path, write)


@contextlib.contextmanager
def _writing(path):
    try:
        yield
    except OSError as exc:
        raise UserError(f"could not write {path}: {exc.strerror or exc}") from exc


def select_backend(device: str, threads: int | None = None):
    """The backend for ``--device``, or a UserError naming why it cannot start; CPU work then
    runs on ``--threads`` threads (see :func:`gpunn.backend.set_num_threads`).

    The backend is remembered in the click context, so the group frees its memory pool on
    exit and can report free memory after an out-of-memory error.
    """
    from gpunn import backend, distributed

    if threads is None and distributed.local_size() > 1:  # ranks share the machine's cores
        threads = max(1, backend.cpu_count() // distributed.local_size())
    try:
        backend.set_num_threads(threads)
    except ValueError as exc:
        raise UserError(str(exc)) from exc

    if device == "cuda" and distributed.launched_size() > 1:
        device = f"cuda:{distributed.local_rank()}"  # one GPU a rank, by its local rank
    try:
        be = backend.select(device)
    except backend.BackendUnavailable as exc:
        raise UserError(exc.for_option("--device")) from exc
    except ValueError as exc:
        raise UserError(str(exc).replace("device must be", "--device must be", 1)) from exc
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["gpunn.backend"] = be
    return be


def _nearest_existing(path):
    """``path`` itself if it exists, else its nearest existing ancestor."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path, option: str, directory: bool = False) -> None:
    """Raise a one-line UserError unless ``path`` can be written, before any work is done.

    A file needs an existing parent directory it can write in (and, if it exists, to be a
    writable file); a directory (``directory=True``) must be writable, or creatable under its
    nearest existing ancestor. ``option`` ("--save", "--checkpoint-dir") names where the path
    came from. The check writes a probe file and removes it: nothing is left behind.
    """
    import os
    from pathlib import Path

    path = Path(path)
    where = f"{option} {path}"
    if directory:
        if path.exists() and not path.is_dir():
            raise UserError(f"{where} is a file, not a directory; give a directory path")
        ancestor = _nearest_existing(path)
        if not ancestor.is_dir():
            raise UserError(f"{where} cannot be created: {ancestor} is a file, not a "
                            f"directory; choose a path in a directory")
        problem = _cannot_write_in(ancestor)
        if problem:
            action = "write in" if ancestor == path else f"create {path} in"
            raise UserError(f"{where}: cannot {action} {ancestor} ({problem}); choose a "
                            f"writable directory")
        return
    if path.is_dir():
        raise UserError(f"{where} is a directory; give a file name (e.g. {path / 'out'})")
    parent = path.parent
    if not parent.exists():
        ancestor = _nearest_existing(parent)
        if not ancestor.is_dir():
            raise UserError(f"{where}: {ancestor} is a file, not a directory; choose a path "
                            f"in a directory")
        raise UserError(f"{where}: directory {parent} does not exist; create it "
                        f"(mkdir -p {parent}) or choose another path")
    if not parent.is_dir():
        raise UserError(f"{where}: {parent} is a file, not a directory; choose a path in a "
                        f"directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{where}: the file exists and is read-only; make it writable or "
                        f"choose another path")
    problem = _cannot_write_in(parent)
    if problem:
        raise UserError(f"{where}: cannot write in {parent} ({problem}); choose a writable "
                        f"directory")


def _cannot_write_in(directory) -> str | None:
    """Why no file can be created in ``directory`` (the OS's words), or None.

    Creates and removes a probe file: permission bits say nothing for root, and a read-only
    mount or /proc refuses only an actual attempt.
    """
    import os
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".gpunn-probe-", dir=directory)
    except FileNotFoundError:  # /proc and the like: the directory takes no new files
        return "it accepts no new files"
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def skipped_checkpoint_notes(state: dict, doing: str = "resuming from") -> list[str]:
    """One line per damaged checkpoint that :func:`gpunn.checkpoint.load_checkpoint` passed
    over, for stderr before a command goes on ``doing`` ``state["checkpoint_path"]``."""
    lines = []
    for skipped in state.get("skipped") or ():
        reason = skipped["reason"].removeprefix(skipped["path"]).lstrip(" :")
        lines.append(f"gpunn: skipped damaged checkpoint {skipped['path']} ({reason}); "
                     f"{doing} {state['checkpoint_path']}")
    return lines


# -- host out of memory -----------------------------------------------------------------------
def host_out_of_memory_message(exc: MemoryError, meta: dict) -> str:
    """One line for a MemoryError on the host: the request, the memory available, the fix."""
    from gpunn.backend import host_memory_available

    requested = getattr(exc, "_total_size", None)  # NumPy's _ArrayMemoryError
    if requested is None:
        found = re.search(r"([\d.]+) (KiB|MiB|GiB|TiB) for an array", str(exc))
        if found:
            unit = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[found.group(2)]
            requested = int(float(found.group(1)) * unit)
    what = f"{requested / 2**20:,.1f} MiB" if requested is not None else "memory"
    line = f"the computer ran out of memory allocating {what}"
    available = host_memory_available()
    if available is not None:
        line += f" ({available / 2**20:,.1f} MiB available)"
    batch = meta.get("gpunn.batch_size")
    if batch is not None:
        return line + (f" with --batch-size {batch}; try a smaller --batch-size "
                       f"(e.g. {max(1, batch // 2)})")
    return line + "; try a smaller --batch-size or a smaller network"


def check_host_memory(needed: int, what: str = "this run") -> None:
    """Refuse (UserError, exit 4) before any work when ``needed`` bytes, a command's estimate,
    exceed the memory the machine has available; does nothing where that is unknown."""
    from gpunn.backend import host_memory_available

    available = host_memory_available()
    if available is None or needed <= available:
        return
    ctx = click.get_current_context(silent=True)
    batch = ctx.meta.get("gpunn.batch_size") if ctx is not None else None
    line = (f"{what} needs about {needed / 2**30:,.1f} GiB of memory and this machine has "
            f"{available / 2**30:,.1f} GiB available")
    if batch is not None:
        fits = max(1, int(batch * available / needed) // 2)
        line += f" with --batch-size {batch}; try a smaller --batch-size (e.g. {fits})"
    else:
        line += "; try a smaller --batch-size"
    raise UserError(line, 4)


# -- GPU out of memory ------------------------------------------------------------------------
def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """True for CuPy's ``cupy.cuda.memory.OutOfMemoryError``, recognised by its class name
    and module so that this needs no CuPy."""
    return any(cls.__name__ == "OutOfMemoryError" and cls.__module__.split(".")[0] == "cupy"
               for cls in type(exc).__mro__)


def gpu_out_of_memory_message(exc: BaseException, meta: dict) -> str:
    """One line: what was requested, what is free, the batch size, and the fix."""
    requested = getattr(exc, "_size", None)
    if requested is None:
        found = re.search(r"allocating ([\d,]+) bytes", str(exc))
        requested = int(found.group(1).replace(",", "")) if found else None
    free = None
    be = meta.get("gpunn.backend")
    if be is not None:
        try:
            be.free_memory()
            free = be.memory_info()["free"]
        except Exception:  # noqa: BLE001 - the report must not fail on a broken device
            free = None
    batch = meta.get("gpunn.batch_size")
    what = f"{requested / 2**20:,.1f} MiB" if requested is not None else "memory"
    line = f"the GPU ran out of memory allocating {what}"
    if free is not None:
        line += f" ({free / 2**20:,.1f} MiB free)"
    if batch is not None:
        line += (f" with --batch-size {batch}; try a smaller --batch-size "
                 f"(e.g. {max(1, batch // 2)})")
    else:
        line += "; try a smaller --batch-size"
    return line + " or --device cpu"


# -- SIGINT / SIGTERM -----------------------------------------------------------------------
class InterruptGuard:
    """Turns the first SIGINT or SIGTERM into a request to stop at the next safe point.

    ``with InterruptGuard() as guard:`` then poll ``guard.requested`` (the signal number, or
    None). After the first signal both go back to the operating system's default action, so
    a second Ctrl-C ends the process at once. ``exit_code`` is 130 for SIGINT, 143 for
    SIGTERM (128 + the signal number, as a shell reports it).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = None
        self._previous = {}

    def __enter__(self):
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay as they were
            self._previous.clear()
        return self

    def _handle(self, signum, frame):
        self.requested = signum
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def should_stop(self) -> bool:
        return self.requested is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""

    @property
    def exit_code(self) -> int:
        return 128 + int(self.requested) if self.requested else 0


@click.group(cls=GpunnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="gpunn")
def cli():
    """gpunn: the networks of Nielsen's "Neural Networks and Deep Learning" on CPU or GPU.

    Start with `gpunn train` (chapter 1's network on MNIST), `gpunn info` (what gpunn can
    use on this machine) or `gpunn COMMAND --help`.
    """


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="gpunn")


if __name__ == "__main__":
    main()
