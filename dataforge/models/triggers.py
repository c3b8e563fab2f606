"""Triggers on ``scheduled_tasks`` that beat relies on, as plain SQL (PostgreSQL and SQLite).

Why triggers: schedules are edited by the CLI, by the ORM, and by people running raw SQL or
bulk updates. Only the database sees every one of those writes, so the database does three
things the moment a row changes (docs/scheduler.md, "Changes"):

1. **Revive**: an edit of any user-written column clears beat's ``invalid_reason`` /
   ``invalid_at`` flag. Beat re-validates the row on its next pass (and flags it again,
   logged once more, if the edit did not fix it).
2. **Realign**: an edit of the timing columns (``task_type``, ``interval_seconds``,
   ``cron_expression``, ``run_at``, ``timezone``, ``jitter_seconds``) or a resume (status becomes ``active``) sets
   ``next_run_at`` to NULL, so beat computes the due time again from the new definition
   instead of firing at the stale one or replaying a paused backlog. An UPDATE that sets
   ``next_run_at`` itself (the CLI, ``run-now`` by SQL) keeps its value.
3. **Wake beat** (PostgreSQL): ``pg_notify('dataforge_schedules', '')`` on inserts, deletes,
   truncates and on updates of user-written columns, ``next_run_at`` or the flag. Beat's own
   writes (it sets ``dataforge.writer = 'beat'`` for its transaction) and the counters
   (``run_count``, ``success_count``, ``missed_count``, ``skipped_count``...) do not notify,
   so a busy worker fleet never wakes beat. NOTIFY is
   delivered at commit and deduplicated per transaction: a bulk update is one wake-up.

On SQLite, which has no NOTIFY, beat re-reads the due time every ``max_interval`` instead; a
third trigger rewrites ``2024-01-01T10:00`` style ``next_run_at`` text to the space form the
ORM writes, because SQLite compares timestamps as text and ``T`` sorts after a space.

The SQL below is the single source: :func:`install_change_triggers` runs it (tests, and the
``after_create`` DDL event attached to the table, so ``metadata.create_all`` installs it), and
the Alembic revision that installs the current triggers copies these strings verbatim
(migrations never import the app; migrations/schedule_triggers.py, checked by a test). The
statements contain no ``%`` and no bind parameters, so they run unchanged through
``op.execute`` online and offline.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection, Engine, Table, event, text

__all__ = [
    "NOTIFY_CHANNEL",
    "POSTGRESQL_DROP",
    "POSTGRESQL_TRIGGERS",
    "SQLITE_DROP",
    "SQLITE_TRIGGERS",
    "TRIGGER_NAMES",
    "WRITER_SETTING",
    "attach_change_triggers",
    "drop_change_triggers",
    "install_change_triggers",
    "triggers_installed",
]

#: LISTEN channel beat waits on (PostgreSQL).
NOTIFY_CHANNEL: Final = "dataforge_schedules"
#: Transaction-local setting beat sets to ``beat`` so its own writes neither notify nor revive.
WRITER_SETTING: Final = "dataforge.writer"

TRIGGER_NAMES: Final = {
    "postgresql": ("dataforge_scheduled_tasks_on_update", "dataforge_scheduled_tasks_notify"),
    "sqlite": (
        "dataforge_scheduled_tasks_on_update",
        "dataforge_scheduled_tasks_next_run_at_insert",
        "dataforge_scheduled_tasks_next_run_at_update",
    ),
}

POSTGRESQL_TRIGGERS: Final[tuple[str, ...]] = (
    """
CREATE OR REPLACE FUNCTION dataforge_scheduled_tasks_on_update() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF current_setting('dataforge.writer', true) IS NOT DISTINCT FROM 'beat' THEN
        RETURN NEW;
    END IF;
    IF (NEW.task_type, NEW.task_name, NEW.handler_path, NEW.interval_seconds, NEW.cron_expression,
        NEW.run_at, NEW.timezone, NEW.handler_kwargs, NEW.status, NEW.timeout_seconds,
        NEW.max_retries, NEW.missed_run_policy, NEW.overlap_policy, NEW.catchup_window_seconds,
        NEW.jitter_seconds)
       IS DISTINCT FROM
       (OLD.task_type, OLD.task_name, OLD.handler_path, OLD.interval_seconds, OLD.cron_expression,
        OLD.run_at, OLD.timezone, OLD.handler_kwargs, OLD.status, OLD.timeout_seconds,
        OLD.max_retries, OLD.missed_run_policy, OLD.overlap_policy, OLD.catchup_window_seconds,
        OLD.jitter_seconds) THEN
        NEW.invalid_reason := NULL;
        NEW.invalid_at := NULL;
        IF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at AND (
               (NEW.task_type, NEW.interval_seconds, NEW.cron_expression, NEW.run_at, NEW.timezone,
                NEW.jitter_seconds)
               IS DISTINCT FROM
               (OLD.task_type, OLD.interval_seconds, OLD.cron_expression, OLD.run_at, OLD.timezone,
                OLD.jitter_seconds)
            OR (NEW.status = 'active' AND OLD.status IS DISTINCT FROM 'active')) THEN
            NEW.next_run_at := NULL;
        END IF;
        PERFORM pg_notify('dataforge_schedules', '');
    ELSIF (NEW.next_run_at, NEW.invalid_reason) IS DISTINCT FROM (OLD.next_run_at, OLD.invalid_reason) THEN
        PERFORM pg_notify('dataforge_schedules', '');
    END IF;
    RETURN NEW;
END
$fn$
""",
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_on_update ON scheduled_tasks",
    """
CREATE TRIGGER dataforge_scheduled_tasks_on_update
BEFORE UPDATE ON scheduled_tasks
FOR EACH ROW EXECUTE FUNCTION dataforge_scheduled_tasks_on_update()
""",
    """
CREATE OR REPLACE FUNCTION dataforge_scheduled_tasks_notify() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('dataforge_schedules', '');
    RETURN NULL;
END
$fn$
""",
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_notify ON scheduled_tasks",
    """
CREATE TRIGGER dataforge_scheduled_tasks_notify
AFTER INSERT OR DELETE OR TRUNCATE ON scheduled_tasks
FOR EACH STATEMENT EXECUTE FUNCTION dataforge_scheduled_tasks_notify()
""",
)

POSTGRESQL_DROP: Final[tuple[str, ...]] = (
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_notify ON scheduled_tasks",
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_on_update ON scheduled_tasks",
    "DROP FUNCTION IF EXISTS dataforge_scheduled_tasks_notify()",
    "DROP FUNCTION IF EXISTS dataforge_scheduled_tasks_on_update()",
)

# SQLite cannot assign NEW in a trigger: an AFTER trigger updates the row again (recursive
# triggers are off by default, so that inner UPDATE fires nothing). Beat's own writes touch
# only next_run_at / last_run_at / counters / the flag, plus status -> 'done' on a once row,
# for which the CASE keeps next_run_at: nothing here needs to know who wrote.
SQLITE_TRIGGERS: Final[tuple[str, ...]] = (
    """
CREATE TRIGGER IF NOT EXISTS dataforge_scheduled_tasks_on_update
AFTER UPDATE ON scheduled_tasks
FOR EACH ROW
WHEN NEW.task_type IS NOT OLD.task_type
  OR NEW.task_name IS NOT OLD.task_name
  OR NEW.handler_path IS NOT OLD.handler_path
  OR NEW.interval_seconds IS NOT OLD.interval_seconds
  OR NEW.cron_expression IS NOT OLD.cron_expression
  OR NEW.run_at IS NOT OLD.run_at
  OR NEW.timezone IS NOT OLD.timezone
  OR NEW.handler_kwargs IS NOT OLD.handler_kwargs
  OR NEW.status IS NOT OLD.status
  OR NEW.timeout_seconds IS NOT OLD.timeout_seconds
  OR NEW.max_retries IS NOT OLD.max_retries
  OR NEW.missed_run_policy IS NOT OLD.missed_run_policy
  OR NEW.overlap_policy IS NOT OLD.overlap_policy
  OR NEW.catchup_window_seconds IS NOT OLD.catchup_window_seconds
  OR NEW.jitter_seconds IS NOT OLD.jitter_seconds
BEGIN
    UPDATE scheduled_tasks SET
        invalid_reason = NULL,
        invalid_at = NULL,
        next_run_at = CASE
            WHEN NEW.next_run_at IS OLD.next_run_at AND (
                   NEW.task_type IS NOT OLD.task_type
                OR NEW.interval_seconds IS NOT OLD.interval_seconds
                OR NEW.cron_expression IS NOT OLD.cron_expression
                OR NEW.run_at IS NOT OLD.run_at
                OR NEW.timezone IS NOT OLD.timezone
                OR NEW.jitter_seconds IS NOT OLD.jitter_seconds
                OR (NEW.status = 'active' AND OLD.status IS NOT 'active'))
            THEN NULL
            ELSE next_run_at
        END
    WHERE id = NEW.id;
END
""",
    """
CREATE TRIGGER IF NOT EXISTS dataforge_scheduled_tasks_next_run_at_insert
AFTER INSERT ON scheduled_tasks
FOR EACH ROW
WHEN instr(NEW.next_run_at, 'T') > 0
BEGIN
    UPDATE scheduled_tasks SET next_run_at = replace(next_run_at, 'T', ' ') WHERE id = NEW.id;
END
""",
    """
CREATE TRIGGER IF NOT EXISTS dataforge_scheduled_tasks_next_run_at_update
AFTER UPDATE OF next_run_at ON scheduled_tasks
FOR EACH ROW
WHEN instr(NEW.next_run_at, 'T') > 0
BEGIN
    UPDATE scheduled_tasks SET next_run_at = replace(next_run_at, 'T', ' ') WHERE id = NEW.id;
END
""",
)

SQLITE_DROP: Final[tuple[str, ...]] = (
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_next_run_at_update",
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_next_run_at_insert",
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_on_update",
)

_INSTALL = {"postgresql": POSTGRESQL_TRIGGERS, "sqlite": SQLITE_TRIGGERS}
_DROP = {"postgresql": POSTGRESQL_DROP, "sqlite": SQLITE_DROP}


def _run(bind: Engine | Connection, statements: tuple[str, ...]) -> None:
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            _run(conn, statements)
        return
    for sql in statements:
        bind.execute(text(sql))


def install_change_triggers(bind: Engine | Connection) -> None:
    """Create (or replace) the triggers on ``scheduled_tasks``. Idempotent.

    Unknown dialects are refused: beat's exactly-once and revive rules depend on them.
    """
    name = bind.dialect.name
    if name not in _INSTALL:
        raise NotImplementedError(f"scheduled_tasks triggers exist for PostgreSQL and SQLite, not {name}")
    _run(bind, _INSTALL[name])


def drop_change_triggers(bind: Engine | Connection) -> None:
    """Remove the triggers (the downgrade of the revision that adds them)."""
    name = bind.dialect.name
    if name in _DROP:
        _run(bind, _DROP[name])


def triggers_installed(conn: Connection) -> bool:
    """Whether every trigger beat relies on exists (beat warns and polls when not)."""
    name = conn.dialect.name
    expected = set(TRIGGER_NAMES.get(name, ()))
    if not expected:
        return False
    if name == "postgresql":
        rows = conn.execute(
            text(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgrelid = to_regclass('scheduled_tasks')"
            )
        )
    else:
        rows = conn.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'scheduled_tasks'")
        )
    return expected <= {r[0] for r in rows}


def _after_create(target: Table, connection: Connection, **_kw: Any) -> None:
    if connection.dialect.name in _INSTALL:
        install_change_triggers(connection)


def attach_change_triggers(table: Table) -> None:
    """Install the triggers whenever ``table`` is created by ``metadata.create_all``."""
    if not event.contains(table, "after_create", _after_create):
        event.listen(table, "after_create", _after_create)
