"""Drop the (status, started_at) index of task_executions: closing a run can be a HOT update.

Every run writes its task_executions row twice: the worker's prerun INSERT (status
``running``) and, when it ends, an UPDATE of status, finished_at, duration_ms, result, error,
traceback (dataforge/celery_signals.py). With ``status`` in an index, PostgreSQL cannot make
that UPDATE a HOT (heap-only) update, so every close writes a new entry into every index of
the table. No query reads executions by status alone (the history filter is per schedule and
uses ix_task_executions_scheduled_task_id_started_at; closes find their row by the unique
(celery_task_id, attempt)), so the index cost every run and served nothing; without it the
close statement takes about half the time on PostgreSQL. A partial index
``WHERE status = 'running'`` would not help: a column in the predicate blocks HOT as well.
SQLite has no HOT; there it is one index less to maintain per write.

0002_expand (already applied in the field) still creates the index; this revision drops it.
``DROP INDEX`` is a catalog change, no table scan; on PostgreSQL its ACCESS EXCLUSIVE lock on
task_executions is held until the run's one transaction commits (a moment when 0006 runs
alone). Not ``CONCURRENTLY``: that cannot run inside a transaction.

Downgrade: recreates the index exactly as 0002_expand created it (same name, columns, order),
so ``pg_dump`` / ``sqlite_master`` at 0005_change_triggers is what it was. On a large table this
builds the index (a SHARE lock: writers wait until it is built).

Revision ID: 0006_executions_hot_close
Revises: 0005_change_triggers
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from migrations.sql import dialect_name

revision: str = "0006_executions_hot_close"
down_revision: str | Sequence[str] | None = "0005_change_triggers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Created by 0002_expand (its IX_EXEC_STATUS).
IX_EXEC_STATUS = "ix_task_executions_status_started_at"
IX_EXEC_STATUS_COLUMNS = ["status", "started_at"]


def upgrade() -> None:
    dialect_name()  # refuses an unsupported database before any change
    op.drop_index(IX_EXEC_STATUS, table_name="task_executions")


def downgrade() -> None:
    dialect_name()
    op.create_index(IX_EXEC_STATUS, "task_executions", IX_EXEC_STATUS_COLUMNS)
