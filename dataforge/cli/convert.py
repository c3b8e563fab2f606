"""`dataforge convert` / `dataforge verify` (placeholder until the codemod issue lands)."""

from __future__ import annotations

import click

__all__ = ["convert", "verify"]


@click.command("convert")
def convert() -> None:
    """Not implemented yet."""
    raise click.ClickException("dataforge convert is not implemented yet")


@click.command("verify")
def verify() -> None:
    """Not implemented yet."""
    raise click.ClickException("dataforge verify is not implemented yet")
