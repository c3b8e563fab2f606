"""Per-schedule policies and counters on scheduled_tasks; the change triggers learn the policies.

Adds, at the end of the table (``ADD COLUMN``: no table rewrite on either database, the
defaults are constants):

* ``overlap_policy`` VARCHAR(16) NOT NULL DEFAULT 'skip', ``catchup_window_seconds`` INTEGER
  (NULL: the global setting), ``jitter_seconds`` INTEGER NOT NULL DEFAULT 0: what a schedule
  does when its previous run still runs, how old a missed run may be and still be sent, and how
  far its sends are spread (docs/scheduler.md);
* ``missed_count``, ``skipped_count``, ``expired_count``, ``lost_count`` INTEGER NOT NULL
  DEFAULT 0: runs not sent by beat, skipped by the run lock, expired in the queue, lost with
  their worker.

The change triggers (0005) are replaced by the same triggers that also watch the three policy
columns (an edit of them revives a flagged row and wakes beat; an edit of ``jitter_seconds``
realigns the due time like the timing columns). The counters are statistics: no trigger
watches them.

Downgrade, lossless: each row whose new columns hold anything but their defaults keeps them in
``legacy_values`` under ``schedule_policies`` (with the exact previous ``legacy_values`` text),
and the upgrade writes them back. The key is added to the JSON object 0003_data keeps there, so
0003's downgrade still finds its own keys (and drops this one, as everything the legacy schema
cannot hold). 0003's downgrade recognises rows created after the data step by their NULL
``legacy_values``, to give them a ``handler_path``; a row that gets its first ``legacy_values``
here gets that ``handler_path`` here instead (the same expression, 0003's), and the upgrade
takes it away again if nobody changed it.

Numbered 0008 though it comes before the optional 0007_drop_handler_path: revision ids are
never renamed (a stamped database would no longer be recognised), and 0007 follows the main
line's head (docs/migrations.md, "Revision numbers").

Revision ID: 0008_schedule_policies
Revises: 0006_executions_hot_close
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import context, op

from migrations.legacy_data import handler_path_for_task_sql
from migrations.legacy_schema import policy_schedule_columns
from migrations.options import current_options
from migrations.schedule_triggers import (
    POSTGRESQL_DROP,
    POSTGRESQL_POLICY_TRIGGERS,
    POSTGRESQL_TRIGGERS,
    SQLITE_DROP,
    SQLITE_POLICY_TRIGGERS,
    SQLITE_TRIGGERS,
)
from migrations.sql import dialect_name, execute, sql

revision: str = "0008_schedule_policies"
down_revision: str | Sequence[str] | None = "0006_executions_hot_close"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("dataforge.migrations")

#: The key of legacy_values that holds a row's values while the database is below this revision.
SAVED = "schedule_policies"
#: Column -> its default, as SQL (what a row that never set it holds).
DEFAULTS = {
    "overlap_policy": "'skip'",
    "catchup_window_seconds": "NULL",
    "jitter_seconds": "0",
    "missed_count": "0",
    "skipped_count": "0",
    "expired_count": "0",
    "lost_count": "0",
}
_TEXT = ("overlap_policy",)
_DROP = {"postgresql": POSTGRESQL_DROP, "sqlite": SQLITE_DROP}


def _run(statements: tuple[str, ...]) -> None:
    for statement in statements:
        execute(statement)


# -- the saved record ------------------------------------------------------------------------------


def _record(dialect: str) -> str:
    """SQL: a JSON object of the row's non-default new columns (``{}`` when all are defaults)."""
    pairs = ", ".join(
        f"'{name}', {name}" if default == "NULL" else f"'{name}', NULLIF({name}, {default})"
        for name, default in DEFAULTS.items()
    )
    if dialect == "postgresql":
        return f"jsonb_strip_nulls(jsonb_build_object({pairs}))"
    return f"json_patch('{{}}', json_object({pairs}))"  # a JSON null in a patch removes the key


#: A row 0003's downgrade would take for one created after the data step.
_NEW_ROW = "legacy_values IS NULL AND handler_path IS NULL"


def _save(dialect: str) -> None:
    written = handler_path_for_task_sql("task_name", current_options(), dialect)
    new_row = _NEW_ROW
    record = _record(dialect)
    if dialect == "postgresql":
        saved = (
            f"{record} || jsonb_build_object('legacy_values', legacy_values) || CASE WHEN {new_row} "
            f"THEN jsonb_build_object('handler_path_written', {written}) ELSE '{{}}'::jsonb END"
        )
        merged = (
            f"(COALESCE(CAST(legacy_values AS jsonb), '{{}}'::jsonb) || jsonb_build_object('{SAVED}', {saved}))::text"
        )
        nondefault = f"{record} <> '{{}}'::jsonb"
    else:
        with_text = f"json_set({record}, '$.legacy_values', legacy_values)"
        saved = (
            f"CASE WHEN {new_row} THEN json_set({with_text}, '$.handler_path_written', {written}) "
            f"ELSE {with_text} END"
        )
        merged = f"json_set(COALESCE(legacy_values, '{{}}'), '$.{SAVED}', json({saved}))"
        nondefault = f"{record} <> '{{}}'"
    execute(
        f"UPDATE scheduled_tasks SET handler_path = CASE WHEN {new_row} THEN {written} ELSE handler_path END, "
        f"legacy_values = {merged} WHERE {nondefault}"
    )


def _restore(dialect: str) -> None:
    if dialect == "postgresql":
        def get(key: str) -> str:
            return f"(CAST(legacy_values AS jsonb) -> '{SAVED}' ->> '{key}')"

        has_saved = f"legacy_values IS NOT NULL AND jsonb_exists(CAST(legacy_values AS jsonb), '{SAVED}')"
        wrote = f"jsonb_exists(CAST(legacy_values AS jsonb) -> '{SAVED}', 'handler_path_written')"
    else:
        def get(key: str) -> str:
            return f"json_extract(legacy_values, '$.{SAVED}.{key}')"

        has_saved = f"json_type(legacy_values, '$.{SAVED}') IS NOT NULL"
        wrote = f"json_type(legacy_values, '$.{SAVED}.handler_path_written') IS NOT NULL"
    values = []
    for name, default in DEFAULTS.items():
        value = get(name) if name in _TEXT else f"CAST({get(name)} AS INTEGER)"
        values.append(f"{name} = COALESCE({value}, {default})" if default != "NULL" else f"{name} = {value}")
    # handler_path goes back to NULL only if it still holds what the downgrade wrote.
    values.append(
        f"handler_path = CASE WHEN {wrote} AND handler_path IS NOT DISTINCT FROM {get('handler_path_written')} "
        "THEN NULL ELSE handler_path END"
        if dialect == "postgresql"
        else f"handler_path = CASE WHEN {wrote} AND handler_path IS {get('handler_path_written')} "
        "THEN NULL ELSE handler_path END"
    )
    values.append(f"legacy_values = {get('legacy_values')}")
    execute(f"UPDATE scheduled_tasks SET {', '.join(values)} WHERE {has_saved}")


def _report_saved() -> None:
    if context.is_offline_mode():
        return
    rows = op.get_bind().execute(
        sql(f"SELECT id FROM scheduled_tasks WHERE {_record_condition()} ORDER BY id")
    ).scalars().all()
    if rows:
        shown = ", ".join(str(i) for i in rows[:50]) + (" ..." if len(rows) > 50 else "")
        log.info("%s downgrade: %d schedule(s) keep their policies and counters in legacy_values.%s "
                 "until the next upgrade (ids %s)", revision, len(rows), SAVED, shown)


def _record_condition() -> str:
    return " OR ".join(
        f"{name} IS NOT NULL" if default == "NULL" else f"{name} <> {default}" for name, default in DEFAULTS.items()
    )


# -- the revision ------------------------------------------------------------------------------------


def upgrade() -> None:
    dialect = dialect_name()
    # No triggers while the rows are rewritten: they would take the restore for an edit (and
    # clear invalid_reason); SQLite also refuses to change a table's columns under them.
    _run(_DROP[dialect])
    for column in policy_schedule_columns():
        op.add_column("scheduled_tasks", column)
    _restore(dialect)
    _run(POSTGRESQL_POLICY_TRIGGERS if dialect == "postgresql" else SQLITE_POLICY_TRIGGERS)


def downgrade() -> None:
    dialect = dialect_name()
    _report_saved()
    _run(_DROP[dialect])
    _save(dialect)
    for column in reversed(policy_schedule_columns()):
        op.drop_column("scheduled_tasks", column.name)
    _run(POSTGRESQL_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS)
