"""Where the ``gpunn`` group finds its commands: one module per command family."""

from __future__ import annotations

import importlib

import click

# module name -> names of the click commands/groups it defines
COMMAND_MODULES = {
    "gpunn.cli.info": ["info"],
    "gpunn.cli.data": ["data"],
    "gpunn.cli.train": ["train", "evaluate", "predict", "summary"],
    "gpunn.cli.demo": ["demo"],
    "gpunn.cli.plot": ["plot", "show"],
    "gpunn.cli.baseline": ["baseline"],
    "gpunn.cli.reproduce": ["reproduce"],
    "gpunn.cli.imagenet": ["imagenet"],
    "gpunn.cli.ensemble": ["ensemble"],
    "gpunn.cli.serve": ["serve", "export_web"],
    "gpunn.cli.export": ["export"],
}


def register(group: click.Group) -> None:
    for module_name, names in COMMAND_MODULES.items():
        module = importlib.import_module(module_name)
        for name in names:
            group.add_command(getattr(module, name))
