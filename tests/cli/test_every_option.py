"""Every option of every command, given a bad value (the wrong type, out of range, a choice
that does not exist, a path that does not exist): exit 2, one line on stderr, no traceback,
and no work started (loading data is made to fail loudly, so a bad value that slipped
through would show as exit 1)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from gpunn.cli.main import _load_commands, cli

MISSING = "/dev/null/gpunn-fuzz"  # neither exists nor can be made: /dev/null is a file
# Values that are not bad for a plain string option: where any string is valid, there is
# nothing to reject (a model name is checked by the fuzzing of the argument it goes with).
FREE_TEXT = {"--host"}


def _commands(group=cli, path=()):
    _load_commands(cli)
    for name, command in sorted(group.commands.items()):
        here = (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, here)
            if not command.invoke_without_command:
                continue
        yield here, command


def _bad_values(option: click.Option):
    """(what, value) pairs that the option must refuse."""
    t = option.type
    if option.is_flag or option.count:
        return []
    if isinstance(t, click.Choice):
        return [("not a choice", "no-such-choice")]
    if isinstance(t, (click.IntRange, click.FloatRange)):
        out = [("not a number", "x")]
        if t.min is not None:
            out.append(("below the minimum", str(t.min - 1)))
        if t.max is not None:
            out.append(("above the maximum", str(t.max + 1)))
        return out
    if isinstance(t, (click.types.IntParamType, click.types.FloatParamType)):
        return [("not a number", "x")]
    if isinstance(t, click.Path):
        return [("a path that cannot be used", MISSING)]
    if option.opts[0] in FREE_TEXT:
        return []
    return [("a value that names nothing", MISSING)]


CASES = [(path, option.opts[0], what, value)
         for path, command in _commands()
         for option in command.params if isinstance(option, click.Option)
         for what, value in _bad_values(option)]


def test_every_command_is_fuzzed():
    names = {" ".join(path) for path, *_ in CASES}
    for expected in ("train", "evaluate", "reproduce", "ensemble", "imagenet",
                     "imagenet make-toy", "data fetch", "demo vanishing", "plot", "export"):
        assert expected in names
    assert len(CASES) > 150


@pytest.fixture(autouse=True)
def no_work(monkeypatch, tmp_path):
    """A command that got past its options would load data: make that an error (exit 1)."""
    def refuse(*args, **kwargs):
        raise RuntimeError("a bad option value was accepted and the command started work")

    for target in ("gpunn.data.load_dataset", "gpunn.data.fetch",
                   "gpunn.data.open_image_folder", "gpunn.data.make_toy"):
        monkeypatch.setattr(target, refuse)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GPUNN_DATA", raising=False)


@pytest.mark.parametrize("path, option, what, value", CASES,
                         ids=[f"{' '.join(p)} {o} {w}" for p, o, w, _ in CASES])
def test_a_bad_value_is_one_line_and_exit_2(path, option, what, value):
    result = CliRunner().invoke(cli, [*path, option, value])
    stderr = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(stderr) == 1 and stderr[0].startswith("gpunn: error:"), result.stderr
    assert "Traceback" not in result.output, result.output


def test_every_option_and_command_explains_itself():
    """`--help` says what every option does: no option without help text, no command without
    a description."""
    missing = [f"{' '.join(path)} {param.opts[0]}" for path, command in _commands()
               for param in command.params
               if isinstance(param, click.Option) and not (param.help or "").strip()]
    assert not missing, f"options without help: {missing}"
    bare = [" ".join(path) for path, command in _commands() if not (command.help or "").strip()]
    assert not bare, f"commands without a description: {bare}"
