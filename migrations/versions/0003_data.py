"""Data: handler_path -> task_name, handler_kwargs -> JSON object, every change reversible.

Set-based (see migrations/legacy_data.py for the rules and why they are safe):

1. classify every schedule row into temporary tables (migrations/data_step.py, the same
   staging `dataforge db check` runs): SQL for what SQL proves, and the handler_kwargs it
   cannot prove converted by Python in batches (migrations/python_kwargs.py): read from this
   connection online; in an offline script, literal UPDATEs read from ``-x legacy_db=URL``
   (``dataforge db sql --legacy-db URL``), else the script stops at
   ``render_with_legacy_db_to_convert_kwargs`` if any row needs them;
2. refuse, changing nothing, if an active row names no task (policy ``-x on_unmappable=refuse``,
   the default; ``pause`` pauses those rows instead). Online the refusal carries the full
   report; in an offline script a CHECK constraint named ``run_dataforge_db_check_first``
   stops it;
3. one UPDATE writes task_name, status, handler_kwargs, handler_kwargs_legacy (original text),
   invalid_reason and legacy_values (what was replaced and what was written).

The report (logged, and kept for ``dataforge db upgrade``) is the preflight's: every active
row the upgrade leaves unable to run is listed with all its reasons.

Downgrade puts task_name and status back where the row still holds what this migration wrote
(later edits win and are reported); rows created after the upgrade get a handler_path
written from their task_name, so the legacy path (compat shim) can run them.

handler_kwargs stay JSON objects at 0002_expand: that is the revision the rollback drill runs
on, and beat (new runtime) and the legacy code both read JSON, while beat refuses a Python
repr. The original texts stay in handler_kwargs_legacy (with their record in legacy_values)
and 0002's downgrade, to the legacy schema, puts them back byte for byte.

Revision ID: 0003_data
Revises: 0002_expand
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import context, op

from migrations.data_report import collect_report
from migrations.data_step import stage, unstage
from migrations.errors import MigrationRefusedError
from migrations.legacy_data import (
    INVALID_PREFIX,
    MIGRATION_ROWS,
    handler_path_for_task_sql,
    lv_carry_kwargs,
    lv_get,
    lv_has,
    lv_kwargs_only,
    now_utc,
    restorable,
)
from migrations.options import REPORTS_KEY, current_options
from migrations.python_kwargs import offline_step, online_step
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
    offline = context.is_offline_mode()
    if offline:
        stage(execute, dialect, options, lambda: offline_step(options.legacy_db, dialect))
    else:
        stage(execute, dialect, options, lambda: online_step(op.get_bind(), dialect))
        report = collect_report(op.get_bind(), dialect, options, source=MIGRATION_ROWS, include_executions=False)
        context.config.attributes.setdefault(REPORTS_KEY, []).append(report)
        if report.blocking:
            raise MigrationRefusedError(revision, "active rows name no task (see the report)", report)
        if report.stops_rows:
            log.warning("%s", report.render())
        elif report.groups:
            log.info("%s", report.render())
    guard("run_dataforge_db_check_first", f"SELECT count(*) FROM {MIGRATION_ROWS} WHERE blocking = 1")
    execute(
        "UPDATE scheduled_tasks SET "
        "task_name = m.new_task_name, "
        "status = m.new_status, "
        "handler_kwargs = m.new_kwargs, "
        # A previous up/down cycle may have kept an original already (0003's downgrade leaves
        # kwargs converted, see below): keep it unless this run converts again.
        "handler_kwargs_legacy = CASE WHEN m.kwargs_changed = 1 THEN m.handler_kwargs "
        "ELSE scheduled_tasks.handler_kwargs_legacy END, "
        "invalid_reason = COALESCE(m.invalid_reason, scheduled_tasks.invalid_reason), "
        f"invalid_at = CASE WHEN m.invalid_reason IS NOT NULL THEN {now_utc(dialect)} "
        "ELSE scheduled_tasks.invalid_at END, "
        "legacy_values = CASE WHEN m.kwargs_changed = 0 AND "
        f"{lv_has('handler_kwargs', dialect, 'scheduled_tasks.legacy_values')} THEN "
        f"{lv_carry_kwargs('m.legacy_values', 'scheduled_tasks.legacy_values', dialect)} ELSE m.legacy_values END "
        f"FROM {MIGRATION_ROWS} AS m WHERE scheduled_tasks.id = m.id"
    )
    unstage(execute, dialect)


def _report_downgrade(dialect: str, options_sql: str) -> None:
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    report = MigrationReport(title="0003_data downgrade report")
    for column in ("task_name", "status"):
        edited = (
            f"SELECT id, name FROM scheduled_tasks WHERE legacy_values IS NOT NULL AND {lv_has(column, dialect)} "
            f"AND NOT {restorable(column, dialect)} ORDER BY id"
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
            f"{column} = CASE WHEN {restorable(column, dialect)} THEN {lv_get((column, 'legacy'), dialect)} "
            f"ELSE {column} END"
        )
    prefix = lit(INVALID_PREFIX)
    execute(
        f"UPDATE scheduled_tasks SET {', '.join(restore)}, "
        f"invalid_at = CASE WHEN substr(invalid_reason, 1, {len(INVALID_PREFIX)}) = {prefix} THEN NULL "
        "ELSE invalid_at END, "
        f"invalid_reason = CASE WHEN substr(invalid_reason, 1, {len(INVALID_PREFIX)}) = {prefix} THEN NULL "
        "ELSE invalid_reason END, "
        f"legacy_values = {lv_kwargs_only(dialect)} "
        "WHERE legacy_values IS NOT NULL"
    )
