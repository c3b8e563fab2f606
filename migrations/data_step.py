"""The data step's staging, in one order for the data revision (online and ``--sql``) and the
preflight: classify every row into temporary tables the upgrade then writes from.

1. the kwargs stage (:func:`migrations.legacy_data.kwargs_table_statements`): what SQL proves;
2. the Python step (:mod:`migrations.python_kwargs`): the rows SQL left, converted in
   batches: read from this connection online, from ``-x legacy_db=URL`` in an offline script,
   or absent (an offline script rendered without the rows, which then carries notes only);
3. a guard: no row may be left undecided. Online it never fires (the Python step decided
   every row); an offline script stops there, inside its transaction, changing nothing,
   when a row needs Python but the script has no result for it (rendered without the legacy
   database, or the row was edited since): the offline script does what the online
   upgrade does, or nothing;
4. the classification (:func:`migrations.legacy_data.classification_sql`) into
   :data:`migrations.legacy_data.MIGRATION_ROWS`.
"""

from __future__ import annotations

from collections.abc import Callable

from migrations.legacy_data import (
    KWARGS_ROWS,
    MIGRATION_ROWS,
    classification_sql,
    cleanup_statements,
    kwargs_table_statements,
    prepare_statements,
)
from migrations.options import MigrationOptions
from migrations.python_kwargs import PENDING
from migrations.sql import guard_statements, lit

__all__ = ["UNDECIDED_GUARD", "stage", "unstage"]

#: The CHECK constraint an offline script stops at when a row needs the Python step's result.
UNDECIDED_GUARD = "render_with_legacy_db_to_convert_kwargs"


def stage(
    run: Callable[[str], object],
    dialect: str,
    options: MigrationOptions,
    python_step: Callable[[], list[str]],
) -> None:
    """Run (or render, through ``run``) the staging statements; ``python_step`` is called once
    the kwargs stage exists and returns the Python step's statements."""
    for statement in prepare_statements(dialect):
        run(statement)
    for statement in kwargs_table_statements(dialect):
        run(statement)
    for statement in python_step():
        run(statement)
    undecided = f"SELECT count(*) FROM {KWARGS_ROWS} WHERE kw_kind = {lit(PENDING)}"
    for statement in guard_statements(UNDECIDED_GUARD, undecided):
        run(statement)
    run(f"CREATE TEMPORARY TABLE {MIGRATION_ROWS} AS {classification_sql(dialect, options)}")


def unstage(run: Callable[[str], object], dialect: str) -> None:
    """Drop what :func:`stage` created (the temporary objects also go with the session)."""
    run(f"DROP TABLE {MIGRATION_ROWS}")
    run(f"DROP TABLE {KWARGS_ROWS}")
    for statement in cleanup_statements(dialect):
        run(statement)
