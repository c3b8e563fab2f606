"""Legacy baseline: exactly the legacy DDL text (migrations/legacy_schema.py).

On an empty database this creates the two legacy tables from the legacy DDL text. On a legacy
database that never saw Alembic (the production case) it finds the tables, checks that they
are the legacy shape, and adopts them: `alembic upgrade head` needs no manual `stamp`.

Revision ID: 0001_legacy_baseline
Revises:
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import context, op
from sqlalchemy import inspect

from migrations.errors import MigrationRefusedError
from migrations.legacy_schema import EXECUTION_COLUMNS, LEGACY_INDEX, POSTGRESQL_DDL, SCHEDULE_COLUMNS, SQLITE_DDL
from migrations.options import current_options
from migrations.sql import dialect_name, execute

revision: str = "0001_legacy_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("dataforge.migrations")

_LEGACY = {"scheduled_tasks": SCHEDULE_COLUMNS, "task_executions": EXECUTION_COLUMNS}


def _existing_legacy_tables() -> bool:
    """True when the legacy tables exist (and are the legacy shape); False when neither does."""
    if context.is_offline_mode():
        # No database to look at: the caller says (-x legacy_tables=adopt), see docs/migrations.md.
        return current_options().adopt_legacy_tables
    inspector = inspect(op.get_bind())
    present = {t for t in _LEGACY if inspector.has_table(t)}
    if not present:
        return False
    if present != set(_LEGACY):
        raise MigrationRefusedError(
            revision,
            f"only {sorted(present)} of the legacy tables exist; restore the missing one or start from an "
            "empty database",
        )
    for table, expected in _LEGACY.items():
        actual = {c["name"] for c in inspector.get_columns(table)}
        if actual != set(expected):
            extra = sorted(actual - set(expected))
            missing = sorted(set(expected) - actual)
            raise MigrationRefusedError(
                revision,
                f"table {table} exists but is not the legacy schema (extra columns {extra}, missing {missing}). "
                "If it was created from the models (create_all), mark it migrated with `alembic stamp head`; "
                "otherwise compare it with the legacy DDL in migrations/legacy_schema.py",
            )
    return True


def upgrade() -> None:
    dialect = dialect_name()
    if _existing_legacy_tables():
        log.info("legacy tables found: adopting them as %s (nothing created)", revision)
        return
    ddl = POSTGRESQL_DDL if dialect == "postgresql" else SQLITE_DDL
    execute(ddl["scheduled_tasks"])
    execute(ddl["task_executions"])
    execute(LEGACY_INDEX)


def downgrade() -> None:
    dialect_name()
    if not context.is_offline_mode() and not current_options().allow_drop_data:
        bind = op.get_bind()
        for table in ("task_executions", "scheduled_tasks"):
            rows = bind.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
            if rows:
                raise MigrationRefusedError(
                    revision,
                    f"downgrading below the baseline drops {table}, which holds {rows} rows; "
                    "pass -x allow_drop_data=1 if that is really meant",
                )
    execute("DROP TABLE task_executions")
    execute("DROP TABLE scheduled_tasks")
