"""`dataforge schedules` (placeholder until its issue lands)."""

from __future__ import annotations

import click

__all__ = ["schedules"]


@click.command("schedules")
def schedules() -> None:
    """Not implemented yet."""
    raise click.ClickException("dataforge schedules is not implemented yet")
