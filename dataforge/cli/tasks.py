"""`dataforge tasks` (placeholder until its issue lands)."""

from __future__ import annotations

import click

__all__ = ["tasks"]


@click.command("tasks")
def tasks() -> None:
    """Not implemented yet."""
    raise click.ClickException("dataforge tasks is not implemented yet")
