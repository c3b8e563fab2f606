"""Expand: everything the unified runtime adds, nothing removed, nothing rewritten.

scheduled_tasks: handler_kwargs_legacy, missed_run_policy, invalid_reason, invalid_at,
legacy_values; the due-time index (status, next_run_at).
task_executions: attempt (legacy retries that share a celery_task_id are numbered 0, 1, ... by
id first, so the new unique (celery_task_id, attempt) holds), worker, traceback; the composite
(scheduled_task_id, started_at) index replaces the legacy single-column one; (status,
started_at). New tables: dataforge_locks (lock leases), dataforge_flags (the legacy switch).

Old code keeps working on this schema (new columns are nullable or defaulted): this is the
revision the rollback drill returns to (docs/rollback-notes.md).

Downgrade: first the original handler_kwargs texts that 0003 converted are put back (they
are kept in handler_kwargs_legacy, which goes away here). Then, on PostgreSQL, the added
objects are dropped and the legacy index is recreated with its original definition. On SQLite
both tables are rebuilt from the legacy DDL text itself (0001's), so sqlite_master is
byte-identical to a legacy database; AUTOINCREMENT sequences are kept.

Revision ID: 0002_expand
Revises: 0001_legacy_baseline
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from migrations.legacy_data import attempt_numbering_sql, lv_has, now_utc, restorable
from migrations.legacy_schema import (
    EXECUTION_COLUMNS,
    LEGACY_INDEX,
    SCHEDULE_COLUMNS,
    SQLITE_DDL,
    expand_execution_columns,
    expand_schedule_columns,
    sqlite_tables,
)
from migrations.options import REPORTS_KEY
from migrations.report import Item, MigrationReport
from migrations.sql import dialect_name, execute, sql, sqlite_keep_sequences

revision: str = "0002_expand"
down_revision: str | Sequence[str] | None = "0001_legacy_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("dataforge.migrations")

UQ_ATTEMPT = "uq_task_executions_celery_task_id_attempt"
UQ_NAME = "uq_scheduled_tasks_name"
#: What PostgreSQL called the legacy ``name VARCHAR(128) NOT NULL UNIQUE`` constraint.
PG_LEGACY_UQ_NAME = "scheduled_tasks_name_key"
IX_DUE = "ix_scheduled_tasks_status_next_run_at"
IX_EXEC_SCHEDULE = "ix_task_executions_scheduled_task_id_started_at"
IX_EXEC_STATUS = "ix_task_executions_status_started_at"
LEGACY_STATUSES = ("active", "paused", "disabled")
LEGACY_EXECUTION_STATUSES = ("running", "success", "failure")


def upgrade() -> None:
    dialect = dialect_name()
    for column in expand_schedule_columns():
        op.add_column("scheduled_tasks", column)
    op.create_index(IX_DUE, "scheduled_tasks", ["status", "next_run_at"])
    if dialect == "postgresql":
        # The models name constraints by convention; PostgreSQL named the legacy one itself.
        # (SQLite's is unnamed until 0004 rebuilds the table with the conventional name.)
        execute(f"ALTER TABLE scheduled_tasks RENAME CONSTRAINT {_pg_name_unique()} TO {UQ_NAME}")

    for column in expand_execution_columns():
        op.add_column("task_executions", column)
    execute(attempt_numbering_sql())
    op.drop_index("ix_task_executions_scheduled_task_id", table_name="task_executions")
    if dialect == "sqlite":
        # SQLite cannot add a constraint in place: rebuild from the known shape (no reflection,
        # so --sql renders it too), keeping AUTOINCREMENT and its sequence.
        _, executions = sqlite_tables("legacy")
        executions.indexes.clear()
        for column in expand_execution_columns():
            executions.append_column(column)
        with sqlite_keep_sequences("task_executions"):
            with op.batch_alter_table(
                "task_executions", copy_from=executions, recreate="always",
                table_kwargs={"sqlite_autoincrement": True},
            ) as batch:  # fmt: skip
                batch.create_unique_constraint(UQ_ATTEMPT, ["celery_task_id", "attempt"])
    else:
        op.create_unique_constraint(UQ_ATTEMPT, "task_executions", ["celery_task_id", "attempt"])
    op.create_index(IX_EXEC_SCHEDULE, "task_executions", ["scheduled_task_id", "started_at"])
    op.create_index(IX_EXEC_STATUS, "task_executions", ["status", "started_at"])

    op.create_table(
        "dataforge_locks",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_dataforge_locks"),
    )
    op.create_table(
        "dataforge_flags",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("hits", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_hit_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255)),
        sa.PrimaryKeyConstraint("name", name="pk_dataforge_flags"),
    )
    # The legacy switch exists from here on, off (dataforge.legacy reads it).
    execute(
        "INSERT INTO dataforge_flags (name, enabled, hits, updated_at, updated_by) "
        f"VALUES ('legacy_tasks', {'false' if dialect == 'postgresql' else '0'}, 0, {now_utc(dialect)}, "
        "'migration 0002_expand')"
    )


def _pg_name_unique() -> str:
    """The legacy unique constraint on ``name`` as this database named it (offline: PostgreSQL's
    default name, which the legacy DDL produces)."""
    if context.is_offline_mode():
        return PG_LEGACY_UQ_NAME
    found = (
        op.get_bind()
        .execute(
            sql(
                "SELECT c.conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
                "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (c.conkey) "
                "WHERE t.relname = 'scheduled_tasks' AND t.relnamespace = to_regnamespace(current_schema()) "
                "AND c.contype = 'u' AND a.attname = 'name' AND array_length(c.conkey, 1) = 1"
            )
        )
        .scalar()
    )
    return str(found or PG_LEGACY_UQ_NAME)


def _report_losses() -> None:
    """What the legacy schema cannot hold (online only; the downgrade itself loses no row)."""
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    report = MigrationReport(title="0002_expand downgrade: what the legacy schema cannot express")
    dialect = dialect_name()
    edited = (
        "SELECT id, name FROM scheduled_tasks WHERE handler_kwargs_legacy IS NOT NULL AND legacy_values IS NOT NULL "
        f"AND {lv_has('handler_kwargs', dialect)} AND NOT {restorable('handler_kwargs', dialect)} ORDER BY id"
    )
    for row in bind.execute(sql(edited)):
        report.add("restore_skipped_edited", Item(row.id, row.name, "handler_kwargs changed after the upgrade: kept"))
    statuses = ", ".join(f"'{s}'" for s in LEGACY_STATUSES)
    for row in bind.execute(sql(f"SELECT id, name, status FROM scheduled_tasks WHERE status NOT IN ({statuses})")):
        report.add("status_unknown_to_legacy", Item(row.id, row.name, f"status={row.status!r}"))
    exec_statuses = ", ".join(f"'{s}'" for s in LEGACY_EXECUTION_STATUSES)
    total = bind.execute(sql(f"SELECT count(*) FROM task_executions WHERE status NOT IN ({exec_statuses})")).scalar()
    if total:
        sample = bind.execute(
            sql(f"SELECT id, status FROM task_executions WHERE status NOT IN ({exec_statuses}) ORDER BY id LIMIT 100")
        )
        report.add_total(
            "execution_status_unknown_to_legacy", int(total), [Item(r.id, "", f"status={r.status!r}") for r in sample]
        )
    details = bind.execute(
        sql("SELECT count(*) FROM task_executions WHERE worker IS NOT NULL OR traceback IS NOT NULL")
    ).scalar()
    if details:
        report.totals["execution_details_dropped"] = int(details)
        report.groups["execution_details_dropped"] = []
    if report.groups:
        log.warning("%s", report.render())
    context.config.attributes.setdefault(REPORTS_KEY, []).append(report)


def _sqlite_rebuild_legacy(table: str, columns: Sequence[str]) -> None:
    """Rebuild ``table`` from the legacy DDL text, copying the legacy columns.

    ``legacy_alter_table=ON`` keeps the rename from rewriting the other table's
    ``REFERENCES scheduled_tasks`` (SQLite >= 3.26 would follow the rename otherwise).
    """
    cols = ", ".join(columns)
    execute(f"ALTER TABLE {table} RENAME TO _df_old_{table}")
    execute(SQLITE_DDL[table])
    execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _df_old_{table} ORDER BY id")
    execute(f"DROP TABLE _df_old_{table}")


def downgrade() -> None:
    dialect = dialect_name()
    _report_losses()
    # The original handler_kwargs texts (Python repr, '', 'null'...) go back with the column
    # that kept them, where the row still holds what 0003 wrote (see 0003's downgrade).
    execute(
        "UPDATE scheduled_tasks SET handler_kwargs = handler_kwargs_legacy "
        "WHERE handler_kwargs_legacy IS NOT NULL AND legacy_values IS NOT NULL "
        f"AND {restorable('handler_kwargs', dialect)}"
    )
    op.drop_table("dataforge_flags")
    op.drop_table("dataforge_locks")
    if dialect == "sqlite":
        execute("PRAGMA legacy_alter_table = ON")
        with sqlite_keep_sequences("scheduled_tasks", "task_executions"):
            _sqlite_rebuild_legacy("scheduled_tasks", SCHEDULE_COLUMNS)
            _sqlite_rebuild_legacy("task_executions", EXECUTION_COLUMNS)
            execute(LEGACY_INDEX)
        execute("PRAGMA legacy_alter_table = OFF")
        return
    execute(LEGACY_INDEX)
    op.drop_index(IX_EXEC_STATUS, table_name="task_executions")
    op.drop_index(IX_EXEC_SCHEDULE, table_name="task_executions")
    op.drop_constraint(UQ_ATTEMPT, "task_executions", type_="unique")
    for column in reversed(expand_execution_columns()):
        op.drop_column("task_executions", column.name)
    op.drop_index(IX_DUE, table_name="scheduled_tasks")
    execute(f"ALTER TABLE scheduled_tasks RENAME CONSTRAINT {UQ_NAME} TO {PG_LEGACY_UQ_NAME}")
    for column in reversed(expand_schedule_columns()):
        op.drop_column("scheduled_tasks", column.name)
