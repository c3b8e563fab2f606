"""Root of the ``dataforge`` command: builds the settings once and hands them to every verb."""

from __future__ import annotations

import importlib

import click
from rich.console import Console

from dataforge import __version__
from dataforge.cli.common import CliContext
from dataforge.errors import ConfigurationError
from dataforge.settings import Settings

__all__ = ["cli", "main"]

#: verb -> "module:attribute". Each verb group lives in its own module.
COMMANDS = {
    "tasks": "dataforge.cli.tasks:tasks",
    "schedules": "dataforge.cli.schedules:schedules",
    "db": "dataforge.cli.db:db",
    "legacy": "dataforge.cli.legacy:legacy",
    "convert": "dataforge.cli.convert:convert",
    "verify": "dataforge.cli.convert:verify",
    "demo": "dataforge.cli.demo:demo",
    "history": "dataforge.cli.history:history",
}


class _Group(click.Group):
    """Imports a verb's module only when that verb (or --help) is used, so `dataforge tasks`
    does not pay for libcst and `dataforge convert` does not pay for Celery."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)
        return cmd


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dataforge")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """DataForge: the unified Celery scheduling runtime and the toolkit that migrates to it.

    Configuration comes from DATAFORGE_* environment variables (docs/configuration.md).
    """
    try:
        ctx.obj = CliContext(settings=Settings.from_env(), console=Console())
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc


def main() -> None:
    cli(prog_name="dataforge")
