"""`dataforge demo` (placeholder until its issue lands)."""

from __future__ import annotations

import click

__all__ = ["demo"]


@click.command("demo")
def demo() -> None:
    """Not implemented yet."""
    raise click.ClickException("dataforge demo is not implemented yet")
