"""`dataforge legacy` (placeholder until its issue lands)."""

from __future__ import annotations

import click

__all__ = ["legacy"]


@click.command("legacy")
def legacy() -> None:
    """Not implemented yet."""
    raise click.ClickException("dataforge legacy is not implemented yet")
