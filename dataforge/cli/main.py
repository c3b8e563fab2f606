"""Root of the ``dataforge`` command: builds the settings once, hands them to every verb, and
turns every verb's errors into the one exit-code table (:mod:`dataforge.cli.exits`)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Final

import click
from rich.console import Console

from dataforge import __version__
from dataforge.cli.common import JSON_META, CliContext
from dataforge.cli.exits import MEANINGS
from dataforge.cli.failures import SUBJECT_META, failure_for, report
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
    "serve": "dataforge.cli.serve:serve",
    "history": "dataforge.cli.history:history",
}

_ARGV_META: Final = "dataforge.argv"


class _Group(click.Group):
    """Imports a verb's module only when that verb (or --help) is used, so `dataforge tasks`
    does not pay for libcst and `dataforge convert` does not pay for Celery.

    Every error of every verb passes through :meth:`invoke`, the one place that decides its
    exit status and prints it (as JSON when the verb was asked for JSON).
    """

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

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV_META] = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # an option of the root itself (`dataforge --bogus`)
            failure = failure_for(exc, None)
            if failure is None:
                raise
            report(failure, as_json=_wants_json(ctx))
            ctx.exit(int(failure.exit))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            obj = ctx.obj if isinstance(ctx.obj, CliContext) else None
            failure = failure_for(exc, obj.settings if obj else None, ctx.meta.get(SUBJECT_META))
            if failure is None:
                raise
            report(failure, as_json=_wants_json(ctx))
            ctx.exit(int(failure.exit))


def _wants_json(ctx: click.Context) -> bool:
    """``--json`` as the verb parsed it; before it got that far (an unknown option), as typed."""
    if JSON_META in ctx.meta:
        return bool(ctx.meta[JSON_META])
    argv: Sequence[str] = ctx.meta.get(_ARGV_META, ())
    return "--json" in argv


_EPILOG = "Exit status, the same for every verb:\n\n" + "\n\n".join(
    f"{int(code)}: {meaning}." for code, meaning in MEANINGS.items()
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EPILOG)
@click.version_option(__version__, "--version", prog_name="dataforge")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """DataForge: the unified Celery scheduling runtime and the toolkit that migrates to it.

    Configuration comes from DATAFORGE_* environment variables (docs/configuration.md).
    """
    ctx.obj = CliContext(settings=Settings.from_env(), console=Console())


def main() -> None:
    cli(prog_name="dataforge")
