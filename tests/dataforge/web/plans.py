"""A million schedules and executions on PostgreSQL, and the plans of the console's queries.

:func:`fill` writes the rows server-side (``generate_series``: seconds, not minutes);
:func:`captured` records every statement a service call sends; :func:`explain` runs each with
``EXPLAIN (ANALYZE, FORMAT JSON)`` and reduces the plan to what bounds its cost: which
relations were read how (sequential or by index) and how many rows the scans produced.
Used by tests/dataforge/web/test_query_plans.py (plan assertions) and
benchmarks/console_queries.py (timings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event, text

__all__ = ["HOT_SCHEDULE", "RARE_TASK", "Plan", "captured", "explain", "fill"]

RARE_TASK = "rare.task"
#: The schedule every 5th execution belongs to (200,000 runs for a million executions).
HOT_SCHEDULE = 7

_SCHEDULES = """
INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, status,
    max_retries, next_run_at, invalid_reason, run_count, success_count, failure_count, created_at, updated_at)
SELECT 'schedule-' || g, 'interval',
       CASE WHEN g % 997 = 0 THEN :rare ELSE 'dataforge.example_cleanup' END,
       60 + g % 3600, 'UTC', '{}',
       CASE WHEN g % 50 = 0 THEN 'paused' WHEN g % 201 = 0 THEN 'disabled' WHEN g % 199 = 0 THEN 'done'
            ELSE 'active' END,
       0,
       CASE WHEN g % 1009 = 0 THEN NULL ELSE timezone('utc', now()) + (g % 86400) * interval '1 second' END,
       CASE WHEN g % 1009 = 0 THEN 'cron_expression: out of range' END,
       0, 0, 0, timezone('utc', now()), timezone('utc', now())
FROM generate_series(1, :n) AS g
"""

_EXECUTIONS = """
INSERT INTO task_executions (scheduled_task_id, celery_task_id, task_name, status, started_at, finished_at,
    duration_ms, attempt, worker)
SELECT CASE WHEN g % 5 = 0 THEN :hot ELSE 1 + g % :schedules END, 'task-' || g,
       CASE WHEN g % 1013 = 0 THEN :rare ELSE 'dataforge.example_cleanup' END,
       CASE WHEN g % 100 = 0 THEN 'failure' WHEN g % 333 = 0 THEN 'skipped' ELSE 'success' END,
       timezone('utc', now()) - (:n - g) * interval '1 second',
       timezone('utc', now()) - (:n - g) * interval '1 second' + interval '120 milliseconds',
       120, 0, 'w1@host'
FROM generate_series(1, :n) AS g
"""


def fill(engine: Engine, schedules: int, executions: int) -> None:
    """``schedules`` rows (2% paused, ~0.5% disabled/done, 0.1% flagged invalid, a rare task
    every 997th) and ``executions`` rows one second apart ending now (1% failures, a rare
    task, every 5th on :data:`HOT_SCHEDULE`), then ANALYZE as autovacuum would."""
    with engine.begin() as conn:
        conn.execute(text(_SCHEDULES), {"n": schedules, "rare": RARE_TASK})
        conn.execute(text(_EXECUTIONS), {"n": executions, "rare": RARE_TASK, "hot": HOT_SCHEDULE,
                                         "schedules": schedules})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE scheduled_tasks"))
        conn.execute(text("VACUUM ANALYZE task_executions"))


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, parameters) sent through ``engine`` inside the block."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@dataclass
class Plan:
    statement: str
    ms: float
    #: (relation, node type) of every scan, e.g. ("scheduled_tasks", "Index Scan").
    scans: list[tuple[str, str]] = field(default_factory=list)
    #: Rows the scans produced (actual rows x loops), plus rows their filters removed.
    rows_read: int = 0

    @property
    def sequential(self) -> list[str]:
        return [relation for relation, kind in self.scans if kind == "Seq Scan"]


def _walk(node: dict[str, Any], plan: Plan) -> None:
    kind = node.get("Node Type", "")
    if "Scan" in kind and "Relation Name" in node:
        plan.scans.append((node["Relation Name"], kind))
        loops = int(node.get("Actual Loops", 1))
        plan.rows_read += int(node.get("Actual Rows", 0)) * loops + int(node.get("Rows Removed by Filter", 0))
    for child in node.get("Plans", ()):
        _walk(child, plan)


def explain(engine: Engine, statements: list[tuple[str, Any]]) -> list[Plan]:
    plans = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            raw = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar_one()
            top = raw[0]
            plan = Plan(statement=" ".join(statement.split()), ms=float(top["Execution Time"]))
            _walk(top["Plan"], plan)
            plans.append(plan)
        conn.rollback()
    return plans


Call = Callable[[], Any]
