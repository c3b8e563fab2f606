"""The change triggers of ``scheduled_tasks``, frozen as the revisions install them.

Migrations never import the app, so each revision that installs triggers gets its own frozen
copy here: ``*_TRIGGERS`` as revision 0005 installed them (never edited: a database at 0005
has exactly these), ``*_POLICY_TRIGGERS`` as 0008_schedule_policies installs them (they also
watch the policy columns it adds). The newest copy is a verbatim copy of
dataforge/models/triggers.py; tests/migrations checks they match, so a change of the triggers
there fails until a new revision ships it. The function and trigger names never change, so one
set of DROP statements removes any version.
"""

from __future__ import annotations

__all__ = [
    "POSTGRESQL_DROP",
    "POSTGRESQL_POLICY_TRIGGERS",
    "POSTGRESQL_TRIGGERS",
    "SQLITE_DROP",
    "SQLITE_POLICY_TRIGGERS",
    "SQLITE_TRIGGERS",
    "without_handler_path",
]

POSTGRESQL_TRIGGERS: tuple[str, ...] = (
    """
CREATE OR REPLACE FUNCTION dataforge_scheduled_tasks_on_update() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF current_setting('dataforge.writer', true) IS NOT DISTINCT FROM 'beat' THEN
        RETURN NEW;
    END IF;
    IF (NEW.task_type, NEW.task_name, NEW.handler_path, NEW.interval_seconds, NEW.cron_expression,
        NEW.run_at, NEW.timezone, NEW.handler_kwargs, NEW.status, NEW.timeout_seconds,
        NEW.max_retries, NEW.missed_run_policy)
       IS DISTINCT FROM
       (OLD.task_type, OLD.task_name, OLD.handler_path, OLD.interval_seconds, OLD.cron_expression,
        OLD.run_at, OLD.timezone, OLD.handler_kwargs, OLD.status, OLD.timeout_seconds,
        OLD.max_retries, OLD.missed_run_policy) THEN
        NEW.invalid_reason := NULL;
        NEW.invalid_at := NULL;
        IF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at AND (
               (NEW.task_type, NEW.interval_seconds, NEW.cron_expression, NEW.run_at, NEW.timezone)
               IS DISTINCT FROM
               (OLD.task_type, OLD.interval_seconds, OLD.cron_expression, OLD.run_at, OLD.timezone)
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
POSTGRESQL_DROP: tuple[str, ...] = (
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_notify ON scheduled_tasks",
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_on_update ON scheduled_tasks",
    "DROP FUNCTION IF EXISTS dataforge_scheduled_tasks_notify()",
    "DROP FUNCTION IF EXISTS dataforge_scheduled_tasks_on_update()",
)
SQLITE_TRIGGERS: tuple[str, ...] = (
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
SQLITE_DROP: tuple[str, ...] = (
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_next_run_at_update",
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_next_run_at_insert",
    "DROP TRIGGER IF EXISTS dataforge_scheduled_tasks_on_update",
)

POSTGRESQL_POLICY_TRIGGERS: tuple[str, ...] = (
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
SQLITE_POLICY_TRIGGERS: tuple[str, ...] = (
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


def without_handler_path(statements: tuple[str, ...]) -> tuple[str, ...]:
    """The same triggers for a table without ``handler_path`` (optional revision 0007_drop_handler_path).

    Every reference is removed explicitly; a statement that still mentions the column after
    that is an error here, not a broken trigger at runtime.
    """
    out = []
    for statement in statements:
        fixed = (
            statement.replace("NEW.handler_path, ", "")
            .replace("OLD.handler_path, ", "")
            .replace("  OR NEW.handler_path IS NOT OLD.handler_path\n", "")
        )
        if "handler_path" in fixed:
            raise ValueError(f"trigger statement still references handler_path:\n{fixed}")
        out.append(fixed)
    return tuple(out)
