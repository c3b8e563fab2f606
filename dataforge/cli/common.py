"""What every verb shares: the settings built once at the edge, output helpers, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.console import Console

from dataforge.settings import Settings

__all__ = [
    "CliContext", "EXIT_ENVIRONMENT", "EXIT_FAILED", "EXIT_CHANGED", "EXIT_OK", "emit_json", "pass_cli",
    "stderr_console",
]  # fmt: skip

EXIT_OK = 0
#: --check found something to change; a preflight found a blocker.
EXIT_CHANGED = 1
#: Some item failed (a file that did not parse, a row that cannot be migrated...).
EXIT_FAILED = 2
#: The environment is not usable: database unreachable, schema missing or outdated.
EXIT_ENVIRONMENT = 3

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CliContext:
    """Built once by the root group; every verb receives it via :func:`pass_cli`."""

    settings: Settings
    console: Console


def _build(ctx: click.Context) -> CliContext:
    obj = ctx.find_object(CliContext)
    if obj is None:
        obj = CliContext(settings=Settings.from_env(), console=Console())
        ctx.obj = obj
    return obj


def pass_cli(f: F) -> F:
    """Decorator: inject the :class:`CliContext` as the first argument."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return ctx.invoke(f, _build(ctx), *args, **kwargs)

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper  # type: ignore[return-value]


def stderr_console() -> Console:
    return Console(stderr=True)


def emit_json(data: Any) -> None:
    """Machine output for ``--json``: one document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
