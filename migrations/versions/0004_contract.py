"""Contract: task_name is required on every row (handler_path stays, deprecated).

Refuses, changing nothing, while a row has no task_name (a legacy writer added one after
0003; run `dataforge db check`, or downgrade to 0002_expand and upgrade again). Offline, the
ALTER itself fails on such a row (NOT NULL violation).

Revision ID: 0004_contract
Revises: 0003_data
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from migrations.errors import MigrationRefusedError
from migrations.legacy_schema import sqlite_tables
from migrations.report import Item, MigrationReport
from migrations.sql import dialect_name, sql, sqlite_keep_sequences

revision: str = "0004_contract"
down_revision: str | Sequence[str] | None = "0003_data"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _set_nullable(nullable: bool) -> None:
    if dialect_name() == "sqlite":
        # Rebuild to the exact shape of the target stage (copy_from, no reflection): this also
        # gives the unique constraint on name its conventional name (unnamed in the legacy DDL).
        schedules, _ = sqlite_tables("expand" if nullable else "contract")
        with sqlite_keep_sequences("scheduled_tasks"):
            with op.batch_alter_table("scheduled_tasks", copy_from=schedules, recreate="always"):
                pass
        return
    op.alter_column("scheduled_tasks", "task_name", existing_type=sa.String(255), nullable=nullable)


def upgrade() -> None:
    if not context.is_offline_mode():
        missing = list(op.get_bind().execute(sql("SELECT id, name FROM scheduled_tasks WHERE task_name IS NULL")))
        if missing:
            report = MigrationReport(title="0004_contract: rows without task_name")
            for row in missing:
                report.add("blocked_no_task_name_or_handler_path", Item(row.id, row.name, "task_name is NULL"))
            raise MigrationRefusedError(
                revision,
                f"{len(missing)} rows have no task_name (written after 0003_data?): downgrade to 0002_expand and "
                "upgrade again, or set task_name",
                report,
            )
    _set_nullable(False)


def downgrade() -> None:
    _set_nullable(True)
