"""Optional: drop the deprecated scheduled_tasks.handler_path.

Not part of ``head``: it lives in migrations/optional and runs only when asked for
(``dataforge db upgrade --optional 0007_drop_handler_path``, or
``alembic -n optional upgrade 0007_drop_handler_path``). Run it after the compat shim is gone.

It follows the main line's head (0008_schedule_policies): a database at this revision has
every main-line revision applied, so a plain ``upgrade head`` never has two heads to choose
from. Until 0006_executions_hot_close existed this revision was ``0006_drop_handler_path``
(after 0005_change_triggers); a database stamped with that id is moved by hand
(docs/migrations.md, "Renamed revision"). It followed 0006_executions_hot_close until
0008_schedule_policies came after it; a database that ran it then lacks 0008's columns
(docs/migrations.md, "Revision numbers", says how to add them).

Refuses, changing nothing, while the legacy switch is on (dataforge_flags row ``legacy_tasks``,
or DATAFORGE_LEGACY_TASKS=1 in the migrating process): the shim needs handler_path. Offline, a
CHECK constraint named ``legacy_switch_is_on`` stops the script (the environment variable of
the processes that will run it cannot be seen from here: check it yourself).

The change triggers (0008's) read handler_path: they are replaced by the same triggers without
it, and put back by the downgrade.

Lossless: each row's handler_path is saved in legacy_values (with the previous legacy_values
text) and the downgrade writes both back. The column comes back after task_name on SQLite, at the end of the
table on PostgreSQL (``ALTER TABLE ADD COLUMN`` cannot place it).

Revision ID: 0007_drop_handler_path
Revises: 0008_schedule_policies
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from migrations.errors import MigrationRefusedError
from migrations.legacy_schema import sqlite_tables
from migrations.options import current_options
from migrations.schedule_triggers import (
    POSTGRESQL_DROP,
    POSTGRESQL_POLICY_TRIGGERS,
    SQLITE_DROP,
    SQLITE_POLICY_TRIGGERS,
    without_handler_path,
)
from migrations.sql import dialect_name, execute, guard, sql, sqlite_keep_sequences

revision: str = "0007_drop_handler_path"
down_revision: str | Sequence[str] | None = "0008_schedule_policies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: A row's handler_path is kept as {"dropped_handler_path": <handler_path>, "legacy_values": <the
#: previous legacy_values text>}: the downgrade gives both back byte for byte.
_KEY = "dropped_handler_path"
_TRIGGERS = {
    "postgresql": (POSTGRESQL_POLICY_TRIGGERS, POSTGRESQL_DROP),
    "sqlite": (SQLITE_POLICY_TRIGGERS, SQLITE_DROP),
}


def _triggers(dialect: str, *, install: tuple[str, ...] | None = None) -> None:
    """Drop the change triggers, then install ``install`` (if given)."""
    for statement in _TRIGGERS[dialect][1]:
        execute(statement)
    for statement in install or ():
        execute(statement)


def _switch_on_in_db() -> bool:
    value = op.get_bind().execute(sql("SELECT enabled FROM dataforge_flags WHERE name = 'legacy_tasks'")).scalar()
    return bool(value)


def upgrade() -> None:
    dialect = dialect_name()
    if not context.is_offline_mode():
        if current_options().legacy_switch_env or _switch_on_in_db():
            raise MigrationRefusedError(
                revision,
                "the legacy switch is on (dataforge_flags or DATAFORGE_LEGACY_TASKS=1); the compat shim needs "
                "handler_path. Run `dataforge legacy disable` and unset DATAFORGE_LEGACY_TASKS first",
            )
    guard("legacy_switch_is_on", "SELECT count(*) FROM dataforge_flags WHERE name = 'legacy_tasks' AND enabled")
    _triggers(dialect)
    if dialect == "postgresql":
        execute(
            f"UPDATE scheduled_tasks SET legacy_values = json_build_object('{_KEY}', handler_path, "
            "'legacy_values', legacy_values)::text WHERE handler_path IS NOT NULL"
        )
        op.drop_column("scheduled_tasks", "handler_path")
        _triggers(dialect, install=without_handler_path(POSTGRESQL_POLICY_TRIGGERS))
        return
    execute(
        f"UPDATE scheduled_tasks SET legacy_values = json_object('{_KEY}', handler_path, "
        "'legacy_values', legacy_values) WHERE handler_path IS NOT NULL"
    )
    schedules, _ = sqlite_tables("policies")
    with sqlite_keep_sequences("scheduled_tasks"):
        with op.batch_alter_table("scheduled_tasks", copy_from=schedules, recreate="always") as batch:
            batch.drop_column("handler_path")
    _triggers(dialect, install=without_handler_path(SQLITE_POLICY_TRIGGERS))


def downgrade() -> None:
    dialect = dialect_name()
    _triggers(dialect)
    if dialect == "postgresql":
        op.add_column("scheduled_tasks", sa.Column("handler_path", sa.String(255)))
        execute(
            f"UPDATE scheduled_tasks SET handler_path = CAST(legacy_values AS jsonb) ->> '{_KEY}', "
            "legacy_values = CAST(legacy_values AS jsonb) ->> 'legacy_values' "
            f"WHERE legacy_values IS NOT NULL AND jsonb_exists(CAST(legacy_values AS jsonb), '{_KEY}')"
        )
        _triggers(dialect, install=POSTGRESQL_POLICY_TRIGGERS)
        return
    schedules, _ = sqlite_tables("dropped")
    with sqlite_keep_sequences("scheduled_tasks"):
        with op.batch_alter_table("scheduled_tasks", copy_from=schedules, recreate="always") as batch:
            batch.add_column(sa.Column("handler_path", sa.String(255)), insert_after="task_name")
    execute(
        f"UPDATE scheduled_tasks SET handler_path = json_extract(legacy_values, '$.{_KEY}'), "
        "legacy_values = json_extract(legacy_values, '$.legacy_values') "
        f"WHERE json_type(legacy_values, '$.{_KEY}') IS NOT NULL"
    )
    _triggers(dialect, install=SQLITE_POLICY_TRIGGERS)
