"""`dataforge db` (placeholder until its issue lands)."""

from __future__ import annotations

import click

__all__ = ["db"]


@click.command("db")
def db() -> None:
    """Not implemented yet."""
    raise click.ClickException("dataforge db is not implemented yet")
