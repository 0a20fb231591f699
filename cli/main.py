"""The ``gpunn`` command group and its shared plumbing (error handling, --device)."""

from __future__ import annotations

import sys

import click

from gpunn import __version__
from gpunn.errors import GpunnError


class UserError(click.ClickException):
    """A user's mistake: one line on stderr, exit status 2, no traceback."""

    exit_code = 2

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
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            click.echo(f"gpunn: error: {message}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("gpunn: aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GpunnError as exc:
            raise UserError(str(exc)) from exc

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            _load_commands(self)
            command = super().get_command(ctx, name)
        return command

    def list_commands(self, ctx):
        _load_commands(self)
        return super().list_commands(ctx)


def _load_commands(group: click.Group) -> None:
    """Import the command modules on first need (keeps ``gpunn --version`` instant)."""
    if getattr(group, "_loaded", False):
        return
    group._loaded = True
    from gpunn.cli import commands

    commands.register(group)


DEVICE_OPTION = click.option(
    "--device",
    default="auto",
    show_default=True,
    envvar="GPUNN_DEVICE",
    help="auto, cpu, cuda or cuda:N. auto uses a GPU when CuPy can start one, else NumPy.",
)


def select_backend(device: str):
    """The backend for ``--device``, or a UserError naming why it cannot start."""
    from gpunn import backend

    try:
        return backend.select(device)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


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
