"""Change triggers on scheduled_tasks that beat relies on.

Revive (an edit clears beat's invalid_reason), realign (an edit of the timing columns or a
resume clears next_run_at) and, on PostgreSQL, NOTIFY beat. See dataforge/models/triggers.py and
docs/scheduler.md. The SQL is migrations/schedule_triggers.py: a verbatim copy of that
module's strings at the time of this revision (migrations never import the app);
tests/migrations checks it is current.

Why last, after the data and contract steps: the triggers would rewrite the data step's own
writes (clear the invalid_reason it sets, clear next_run_at when its downgrade re-activates a
row, breaking the byte-exact restore), and SQLite drops a table's triggers whenever a batch
rebuild replaces the table. Rolled back to 0002_expand, beat runs without them (it polls).

Revision ID: 0005_change_triggers
Revises: 0004_contract
"""

from __future__ import annotations

from collections.abc import Sequence

from migrations.schedule_triggers import POSTGRESQL_DROP, POSTGRESQL_TRIGGERS, SQLITE_DROP, SQLITE_TRIGGERS
from migrations.sql import dialect_name, execute

revision: str = "0005_change_triggers"
down_revision: str | Sequence[str] | None = "0004_contract"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSTALL = {"postgresql": POSTGRESQL_TRIGGERS, "sqlite": SQLITE_TRIGGERS}
_DROP = {"postgresql": POSTGRESQL_DROP, "sqlite": SQLITE_DROP}


def upgrade() -> None:
    for statement in _INSTALL[dialect_name()]:
        execute(statement)


def downgrade() -> None:
    for statement in _DROP[dialect_name()]:
        execute(statement)
