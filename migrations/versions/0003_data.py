"""Data: handler_path -> task_name, handler_kwargs -> JSON object, every change reversible.

All SQL (see migrations/legacy_data.py for the rules and why they are safe):

1. classify every schedule row into a temporary table (the same SELECT `dataforge db check`
   runs);
2. refuse, changing nothing, if an active row names no task (policy ``-x on_unmappable=refuse``,
   the default; ``pause`` pauses those rows instead). Online the refusal carries the full
   report; in an offline script a CHECK constraint named ``run_dataforge_db_check_first``
   stops it;
3. one UPDATE writes task_name, status, handler_kwargs, handler_kwargs_legacy (original text),
   invalid_reason and legacy_values (what was replaced and what was written).

Downgrade puts the legacy values back where the row still holds what this migration wrote
(later edits win and are reported); rows created after the upgrade get a handler_path
written from their task_name, so the legacy path (compat shim) can run them.

Revision ID: 0003_data
Revises: 0002_expand
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import context, op

from migrations.errors import MigrationRefusedError
from migrations.legacy_data import (
    INVALID_PREFIX,
    MIGRATION_ROWS,
    classification_sql,
    cleanup_statements,
    collect_report,
    handler_path_for_task_sql,
    now_utc,
    prepare_statements,
)
from migrations.options import REPORTS_KEY, current_options
from migrations.report import Item, MigrationReport
from migrations.sql import dialect_name, execute, guard, lit, sql

revision: str = "0003_data"
down_revision: str | Sequence[str] | None = "0002_expand"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("dataforge.migrations")


def upgrade() -> None:
    dialect = dialect_name()
    options = current_options()
    for statement in prepare_statements(dialect):
        execute(statement)
    execute(f"CREATE TEMPORARY TABLE {MIGRATION_ROWS} AS {classification_sql(dialect, options)}")
    if not context.is_offline_mode():
        report = collect_report(op.get_bind(), dialect, options, source=MIGRATION_ROWS, include_executions=False)
        context.config.attributes.setdefault(REPORTS_KEY, []).append(report)
        if report.blocking:
            raise MigrationRefusedError(revision, "active rows name no task (see the report)", report)
        if report.groups:
            log.info("%s", report.render())
    guard("run_dataforge_db_check_first", f"SELECT count(*) FROM {MIGRATION_ROWS} WHERE blocking = 1")
    execute(
        "UPDATE scheduled_tasks SET "
        "task_name = m.new_task_name, "
        "status = m.new_status, "
        "handler_kwargs = m.new_kwargs, "
        "handler_kwargs_legacy = CASE WHEN m.kwargs_changed = 1 THEN m.handler_kwargs END, "
        "invalid_reason = COALESCE(m.invalid_reason, scheduled_tasks.invalid_reason), "
        f"invalid_at = CASE WHEN m.invalid_reason IS NOT NULL THEN {now_utc(dialect)} "
        "ELSE scheduled_tasks.invalid_at END, "
        "legacy_values = m.legacy_values "
        f"FROM {MIGRATION_ROWS} AS m WHERE scheduled_tasks.id = m.id"
    )
    execute(f"DROP TABLE {MIGRATION_ROWS}")
    for statement in cleanup_statements(dialect):
        execute(statement)


def _lv_has(key: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"jsonb_exists(CAST(legacy_values AS jsonb), {lit(key)})"
    return f"json_type(legacy_values, {lit('$.' + key)}) IS NOT NULL"


def _lv_get(path: tuple[str, str], dialect: str) -> str:
    if dialect == "postgresql":
        return f"(CAST(legacy_values AS jsonb) #>> {lit('{' + ','.join(path) + '}')})"
    return f"json_extract(legacy_values, {lit('$.' + '.'.join(path))})"


def _restorable(column: str, dialect: str) -> str:
    """The row still holds what the migration wrote into ``column``."""
    return f"({_lv_has(column, dialect)} AND {column} = {_lv_get((column, 'migrated'), dialect)})"


def _report_downgrade(dialect: str, options_sql: str) -> None:
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    report = MigrationReport(title="0003_data downgrade report")
    for column in ("task_name", "status", "handler_kwargs"):
        edited = (
            f"SELECT id, name FROM scheduled_tasks WHERE legacy_values IS NOT NULL AND {_lv_has(column, dialect)} "
            f"AND NOT {_restorable(column, dialect)} ORDER BY id"
        )
        for row in bind.execute(sql(edited)):
            report.add("restore_skipped_edited", Item(row.id, row.name, f"{column} changed after the upgrade: kept"))
    created = bind.execute(
        sql(
            f"SELECT id, name, task_name, {options_sql} AS written FROM scheduled_tasks "
            "WHERE legacy_values IS NULL AND handler_path IS NULL ORDER BY id"
        )
    )
    for row in created:
        if row.written is None:
            report.add("no_legacy_handler_path", Item(row.id, row.name, f"task_name={row.task_name!r}"))
        else:
            report.add("handler_path_written", Item(row.id, row.name, f"{row.task_name!r} -> {row.written!r}"))
    if report.groups:
        log.warning("%s", report.render())
    context.config.attributes.setdefault(REPORTS_KEY, []).append(report)


def downgrade() -> None:
    dialect = dialect_name()
    options = current_options()
    written = handler_path_for_task_sql("task_name", options, dialect)
    _report_downgrade(dialect, written)
    # Rows created after the upgrade: give them a handler_path the legacy path can run.
    execute(f"UPDATE scheduled_tasks SET handler_path = {written} WHERE legacy_values IS NULL AND handler_path IS NULL")
    restore = []
    for column in ("task_name", "status"):
        restore.append(
            f"{column} = CASE WHEN {_restorable(column, dialect)} THEN {_lv_get((column, 'legacy'), dialect)} "
            f"ELSE {column} END"
        )
    restore.append(
        "handler_kwargs = CASE WHEN handler_kwargs_legacy IS NOT NULL AND "
        f"{_restorable('handler_kwargs', dialect)} THEN handler_kwargs_legacy ELSE handler_kwargs END"
    )
    prefix = lit(INVALID_PREFIX)
    execute(
        f"UPDATE scheduled_tasks SET {', '.join(restore)}, "
        f"invalid_at = CASE WHEN substr(invalid_reason, 1, {len(INVALID_PREFIX)}) = {prefix} THEN NULL "
        "ELSE invalid_at END, "
        f"invalid_reason = CASE WHEN substr(invalid_reason, 1, {len(INVALID_PREFIX)}) = {prefix} THEN NULL "
        "ELSE invalid_reason END, "
        "handler_kwargs_legacy = NULL, legacy_values = NULL "
        "WHERE legacy_values IS NOT NULL"
    )
