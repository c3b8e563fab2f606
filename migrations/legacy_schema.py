"""The legacy schema, frozen: the legacy DDL text (schema.sqlite.sql / schema.postgresql.sql) and its table shapes.

This is the input contract. 0001 creates exactly these statements on an empty database, and
the SQLite downgrade of 0002 rebuilds both tables from the same text, so a database that went
legacy → head → legacy has the very ``sqlite_master`` text it started with. Never edit it:
a legacy database in production was made from this text.
"""

from __future__ import annotations

from sqlalchemy import (
    TIMESTAMP,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "EXECUTION_COLUMNS",
    "LEGACY_INDEX",
    "POSTGRESQL_DDL",
    "SCHEDULE_COLUMNS",
    "SQLITE_DDL",
    "expand_execution_columns",
    "expand_schedule_columns",
    "policy_schedule_columns",
    "sqlite_tables",
]

SCHEDULE_COLUMNS = (
    "id", "name", "description", "task_type", "task_name", "handler_path", "interval_seconds",
    "cron_expression", "run_at", "timezone", "handler_kwargs", "status", "timeout_seconds", "max_retries",
    "last_run_at", "next_run_at", "run_count", "success_count", "failure_count", "last_status", "last_error",
    "created_at", "updated_at",
)  # fmt: skip
EXECUTION_COLUMNS = (
    "id", "scheduled_task_id", "celery_task_id", "task_name", "handler_path", "status", "started_at",
    "finished_at", "duration_ms", "result", "error",
)  # fmt: skip

#: The one legacy index (replaced by a composite one in 0002, restored by its downgrade).
LEGACY_INDEX = "CREATE INDEX ix_task_executions_scheduled_task_id ON task_executions (scheduled_task_id)"

POSTGRESQL_DDL = {
    "scheduled_tasks": """CREATE TABLE scheduled_tasks (
    id               SERIAL PRIMARY KEY,
    name             VARCHAR(128) NOT NULL UNIQUE,
    description      TEXT,
    task_type        VARCHAR(16)  NOT NULL,
    task_name        VARCHAR(255),
    handler_path     VARCHAR(255),
    interval_seconds INTEGER,
    cron_expression  VARCHAR(128),
    run_at           TIMESTAMP,
    timezone         VARCHAR(64)  NOT NULL DEFAULT 'UTC',
    handler_kwargs   TEXT         NOT NULL DEFAULT '{}',
    status           VARCHAR(16)  NOT NULL DEFAULT 'active',
    timeout_seconds  INTEGER,
    max_retries      INTEGER      NOT NULL DEFAULT 0,
    last_run_at      TIMESTAMP,
    next_run_at      TIMESTAMP,
    run_count        INTEGER      NOT NULL DEFAULT 0,
    success_count    INTEGER      NOT NULL DEFAULT 0,
    failure_count    INTEGER      NOT NULL DEFAULT 0,
    last_status      VARCHAR(16),
    last_error       TEXT,
    created_at       TIMESTAMP    NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at       TIMESTAMP    NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
)""",
    "task_executions": """CREATE TABLE task_executions (
    id                SERIAL PRIMARY KEY,
    scheduled_task_id INTEGER REFERENCES scheduled_tasks(id) ON DELETE SET NULL,
    celery_task_id    VARCHAR(64),
    task_name         VARCHAR(255),
    handler_path      VARCHAR(255),
    status            VARCHAR(16) NOT NULL,
    started_at        TIMESTAMP,
    finished_at       TIMESTAMP,
    duration_ms       INTEGER,
    result            TEXT,
    error             TEXT
)""",
}

#: Byte for byte the statements of schema.sqlite.sql (SQLite stores this text in sqlite_master).
SQLITE_DDL = {
    "scheduled_tasks": """CREATE TABLE scheduled_tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             VARCHAR(128) NOT NULL UNIQUE,
    description      TEXT,
    task_type        VARCHAR(16)  NOT NULL,
    task_name        VARCHAR(255),
    handler_path     VARCHAR(255),
    interval_seconds INTEGER,
    cron_expression  VARCHAR(128),
    run_at           TIMESTAMP,
    timezone         VARCHAR(64)  NOT NULL DEFAULT 'UTC',
    handler_kwargs   TEXT         NOT NULL DEFAULT '{}',
    status           VARCHAR(16)  NOT NULL DEFAULT 'active',
    timeout_seconds  INTEGER,
    max_retries      INTEGER      NOT NULL DEFAULT 0,
    last_run_at      TIMESTAMP,
    next_run_at      TIMESTAMP,
    run_count        INTEGER      NOT NULL DEFAULT 0,
    success_count    INTEGER      NOT NULL DEFAULT 0,
    failure_count    INTEGER      NOT NULL DEFAULT 0,
    last_status      VARCHAR(16),
    last_error       TEXT,
    created_at       TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at       TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP
)""",
    "task_executions": """CREATE TABLE task_executions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    scheduled_task_id INTEGER REFERENCES scheduled_tasks(id) ON DELETE SET NULL,
    celery_task_id    VARCHAR(64),
    task_name         VARCHAR(255),
    handler_path      VARCHAR(255),
    status            VARCHAR(16) NOT NULL,
    started_at        TIMESTAMP,
    finished_at       TIMESTAMP,
    duration_ms       INTEGER,
    result            TEXT,
    error             TEXT
)""",
}

_STAGES = ("legacy", "expand", "contract", "hot_close", "policies", "dropped")


def sqlite_tables(stage: str) -> tuple[Table, Table]:
    """``(scheduled_tasks, task_executions)`` as they are on SQLite after ``stage``.

    Used as ``copy_from`` of SQLite batch rebuilds, so a rebuild never depends on reflection
    and the offline script (``--sql``) can render it. ``expand`` is the state after 0002,
    ``contract`` after 0004 (and 0005, which only adds triggers), ``hot_close`` after 0006
    (task_executions without its (status, started_at) index), ``policies`` after
    0008_schedule_policies (its columns at the end of scheduled_tasks, where ``ADD COLUMN`` puts
    them), ``dropped`` after the optional 0007.
    """
    if stage not in _STAGES:
        raise ValueError(f"unknown schema stage {stage!r}; expected one of {_STAGES}")
    level = _STAGES.index(stage)
    md = MetaData()
    schedules = Table(
        "scheduled_tasks", md,
        Column("id", Integer, primary_key=True),
        Column("name", String(128), nullable=False),
        Column("description", Text),
        Column("task_type", String(16), nullable=False),
        Column("task_name", String(255), nullable=level < 2),
        *([] if level >= 5 else [Column("handler_path", String(255))]),
        Column("interval_seconds", Integer),
        Column("cron_expression", String(128)),
        Column("run_at", TIMESTAMP),
        Column("timezone", String(64), nullable=False, server_default=text("'UTC'")),
        Column("handler_kwargs", Text, nullable=False, server_default=text("'{}'")),
        Column("status", String(16), nullable=False, server_default=text("'active'")),
        Column("timeout_seconds", Integer),
        Column("max_retries", Integer, nullable=False, server_default=text("0")),
        Column("last_run_at", TIMESTAMP),
        Column("next_run_at", TIMESTAMP),
        Column("run_count", Integer, nullable=False, server_default=text("0")),
        Column("success_count", Integer, nullable=False, server_default=text("0")),
        Column("failure_count", Integer, nullable=False, server_default=text("0")),
        Column("last_status", String(16)),
        Column("last_error", Text),
        Column("created_at", TIMESTAMP, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
        Column("updated_at", TIMESTAMP, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
        # Unnamed in the legacy DDL; 0004's rebuild gives it the models' conventional name.
        UniqueConstraint("name", name="uq_scheduled_tasks_name" if level >= 2 else None),
        sqlite_autoincrement=True,
    )  # fmt: skip
    executions = Table(
        "task_executions", md,
        Column("id", Integer, primary_key=True),
        Column("scheduled_task_id", Integer, ForeignKey("scheduled_tasks.id", ondelete="SET NULL")),
        Column("celery_task_id", String(64)),
        Column("task_name", String(255)),
        Column("handler_path", String(255)),
        Column("status", String(16), nullable=False),
        Column("started_at", TIMESTAMP),
        Column("finished_at", TIMESTAMP),
        Column("duration_ms", Integer),
        Column("result", Text),
        Column("error", Text),
        sqlite_autoincrement=True,
    )  # fmt: skip
    if level == 0:
        Index("ix_task_executions_scheduled_task_id", executions.c.scheduled_task_id)
        return schedules, executions
    for column in expand_schedule_columns():
        schedules.append_column(column)
    if level >= 4:
        for column in policy_schedule_columns():
            schedules.append_column(column)
    Index("ix_scheduled_tasks_status_next_run_at", schedules.c.status, schedules.c.next_run_at)
    for column in expand_execution_columns():
        executions.append_column(column)
    executions.append_constraint(
        UniqueConstraint("celery_task_id", "attempt", name="uq_task_executions_celery_task_id_attempt")
    )
    Index("ix_task_executions_scheduled_task_id_started_at", executions.c.scheduled_task_id, executions.c.started_at)
    if level < 3:
        # Created by 0002, dropped by 0006_executions_hot_close (it made every close non-HOT).
        Index("ix_task_executions_status_started_at", executions.c.status, executions.c.started_at)
    return schedules, executions


def expand_schedule_columns() -> list[Column[object]]:
    """The columns 0002 adds to ``scheduled_tasks`` (fresh objects on each call)."""
    return [
        Column("handler_kwargs_legacy", Text),
        Column("missed_run_policy", String(16)),
        Column("invalid_reason", Text),
        Column("invalid_at", DateTime),
        Column("legacy_values", Text),
    ]


def policy_schedule_columns() -> list[Column[object]]:
    """The columns 0008_schedule_policies adds to ``scheduled_tasks`` (fresh objects on each
    call): the schedule's policies, then its counters."""
    return [
        Column("overlap_policy", String(16), nullable=False, server_default=text("'skip'")),
        Column("catchup_window_seconds", Integer),
        Column("jitter_seconds", Integer, nullable=False, server_default=text("0")),
        Column("missed_count", Integer, nullable=False, server_default=text("0")),
        Column("skipped_count", Integer, nullable=False, server_default=text("0")),
        Column("expired_count", Integer, nullable=False, server_default=text("0")),
        Column("lost_count", Integer, nullable=False, server_default=text("0")),
    ]


def expand_execution_columns() -> list[Column[object]]:
    """The columns 0002 adds to ``task_executions`` (fresh objects on each call)."""
    return [
        Column("attempt", Integer, nullable=False, server_default=text("0")),
        Column("worker", String(255)),
        Column("traceback", Text),
    ]
