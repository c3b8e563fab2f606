"""Alembic migrations of the DataForge scheduling tables (docs/migrations.md).

The revisions go legacy baseline → expand → data → contract → change triggers → executions
HOT close (``migrations/versions``); dropping ``handler_path`` is an optional revision kept in
``migrations/optional`` (after the main line's head) so that a plain ``alembic upgrade head``
can never drop it. The revisions never import the application's models: each one describes
the schema it works on itself, so it keeps meaning the same thing when the models move on.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MIGRATIONS_DIR", "OPTIONAL_DIR", "VERSIONS_DIR"]

#: ``script_location`` of the bundled Alembic environment (works from an installed package).
MIGRATIONS_DIR = Path(__file__).resolve().parent
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
#: Revisions that only run when asked for by name (``dataforge db upgrade --optional``).
OPTIONAL_DIR = MIGRATIONS_DIR / "optional"
