"""The preflight (``dataforge db check``): what the upgrade would do to every row, without
changing anything.

It runs the data revision's own staging (:func:`migrations.data_step.stage`: SQL, then the
Python step) on a connection that cannot change the database
(:func:`migrations.connections.inspection_connection`) and builds the same report
(:func:`migrations.data_report.collect_report`), so the preflight and the upgrade cannot
disagree, the refusal included.
"""

from __future__ import annotations

from collections.abc import Mapping

from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from dataforge.settings import Settings
from migrations.connections import inspection_connection
from migrations.data_report import add_schedule_checks, collect_report
from migrations.data_step import stage
from migrations.options import MigrationOptions
from migrations.python_kwargs import online_step
from migrations.report import Item, MigrationReport
from migrations.sql import sql

__all__ = ["BEFORE_EXPAND", "DATA_APPLIED", "OPTIONAL_REVISIONS", "RENAMED_REVISIONS", "current", "preflight"]

#: Revisions after which the data step has run (the preflight has nothing left to classify).
DATA_APPLIED = (
    "0003_data", "0004_contract", "0005_change_triggers", "0006_executions_hot_close", "0008_schedule_policies",
    "0007_drop_handler_path",
)  # fmt: skip
#: Where legacy retries are not numbered yet (0002 numbers them).
BEFORE_EXPAND = (None, "0001_legacy_baseline")
OPTIONAL_REVISIONS = ("0007_drop_handler_path",)
#: Former id -> what to run on a database stamped with it (Alembic cannot read such a database).
#: The optional drop was ``0006_drop_handler_path`` (after 0005_change_triggers) until
#: 0006_executions_hot_close took its place; docs/migrations.md, "Renamed revision".
RENAMED_REVISIONS = {
    "0006_drop_handler_path": (
        "DROP INDEX ix_task_executions_status_started_at; "
        "UPDATE alembic_version SET version_num = '0007_drop_handler_path' "
        "WHERE version_num = '0006_drop_handler_path';"
    ),
}


def current(connection: Connection) -> tuple[str | None, bool]:
    """(current revision, legacy tables present)."""
    revision = MigrationContext.configure(connection).get_current_revision()
    tables = set(inspect(connection).get_table_names())
    return revision, {"scheduled_tasks", "task_executions"} <= tables


def preflight(settings: Settings, x_args: Mapping[str, str]) -> tuple[MigrationReport, str | None]:
    """The report ``dataforge db check`` prints, and the revision the database is at.

    Raises :class:`migrations.errors.DatabaseUnavailableError` when the database cannot be
    opened, :class:`migrations.errors.MigrationOptionError` for a bad option.
    """
    options = MigrationOptions.resolve(x_args, settings)
    url = x_args.get("url") or settings.database_url
    with inspection_connection(url, missing_ok=True) as connection:
        if connection is None:
            return _empty(), None
        revision, legacy = current(connection)
        if not legacy:
            return _empty(), revision
        if revision in DATA_APPLIED or revision in RENAMED_REVISIONS:
            report = MigrationReport(title=f"DataForge data migration report (database at {revision})")
            report.notes.append("the data migration (0003_data) is already applied")
            for row in connection.execute(
                sql("SELECT id, name FROM scheduled_tasks WHERE task_name IS NULL ORDER BY id")
            ):
                report.add("blocked_no_task_name_or_handler_path", Item(row.id, row.name, "task_name is NULL"))
            add_schedule_checks(connection, report)
        else:
            dialect = connection.dialect.name
            stage(lambda statement: connection.execute(sql(statement)), dialect, options,
                  lambda: online_step(connection, dialect))  # fmt: skip
            report = collect_report(connection, dialect, options, include_executions=revision in BEFORE_EXPAND)
        report.notes.append(f"database at {revision or 'legacy (no Alembic version)'}")
        return report, revision


def _empty() -> MigrationReport:
    report = MigrationReport(title="DataForge data migration report")
    report.notes.append("no scheduling tables: `dataforge db upgrade` creates the schema")
    return report
