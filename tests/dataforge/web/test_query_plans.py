"""The console at a million schedules and a million executions on PostgreSQL: every query a
page or API call sends reads an index, never the whole table, and reads a bounded number of
rows whatever the table size (EXPLAIN ANALYZE of the real statements, captured as sent)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from dataforge.db import Database
from dataforge.models import utcnow
from dataforge.scheduler import service
from dataforge.settings import Settings
from dataforge.web.metrics import ConsoleCollector, counter_columns
from tests.conftest import create_schema
from tests.dataforge.web.plans import HOT_SCHEDULE, RARE_TASK, Plan, captured, explain, fill

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MILLION = 1_000_000
#: What one page may read: a scan window, its edge probe, and a page (plus the cap of a count).
BOUND = 2 * service.SCAN_WINDOW + 2 * service.MAX_PAGE


@pytest.fixture(scope="module")
def big() -> Iterator[Database]:
    from tests.support.services import fresh_postgres_database

    with fresh_postgres_database() as url:
        create_schema(url)
        db = Database(url)
        fill(db.engine, MILLION, MILLION)
        yield db
        db.dispose()


CALLS: dict[str, Callable[[Database], Any]] = {
    "list": lambda db: service.page_schedules(db),
    "list from the middle": lambda db: service.page_schedules(db, cursor=str(MILLION // 2)),
    "list the last page": lambda db: service.page_schedules(db, cursor=str(MILLION - 10)),
    "paused": lambda db: service.page_schedules(db, statuses=["paused"]),
    "paused, deep": lambda db: service.page_schedules(db, statuses=["paused"], cursor=str(MILLION - 1000)),
    "done or disabled": lambda db: service.page_schedules(db, statuses=["done", "disabled"]),
    "active": lambda db: service.page_schedules(db, statuses=["active"], limit=service.MAX_PAGE),
    "invalid": lambda db: service.page_schedules(db, invalid=True),
    "valid": lambda db: service.page_schedules(db, invalid=False),
    "rare task": lambda db: service.page_schedules(db, task_name=RARE_TASK),
    "absent task": lambda db: service.page_schedules(db, task_name="no.such.task"),
    "count": lambda db: service.count_schedules(db),
    "one schedule": lambda db: service.get_schedule(db, MILLION // 3),
    "feed": lambda db: service.page_executions(db),
    "feed, deep": lambda db: service.page_executions(db, cursor=str(MILLION // 2)),
    "feed failures": lambda db: service.page_executions(db, statuses=["failure"]),
    "feed rare task": lambda db: service.page_executions(db, task_name=RARE_TASK),
    "feed last hour": lambda db: service.page_executions(db, since=utcnow() - timedelta(hours=1)),
    "feed since a week": lambda db: service.page_executions(db, since=utcnow() - timedelta(days=7)),
    "hot schedule runs": lambda db: service.page_schedule_executions(db, HOT_SCHEDULE),
    "hot schedule failures": lambda db: service.page_schedule_executions(db, HOT_SCHEDULE, statuses=["failure"]),
    "hot schedule, deep": lambda db: service.page_schedule_executions(
        db, HOT_SCHEDULE, cursor=f"{(utcnow() - timedelta(days=5)).isoformat()},0"),
}


def plans_of(db: Database, call: Callable[[Database], Any]) -> list[Plan]:
    with captured(db.engine) as statements:
        call(db)
    assert statements
    return explain(db.engine, statements)


@pytest.mark.parametrize("name", list(CALLS))
def test_console_queries_read_an_index_and_a_bounded_number_of_rows(big: Database, name: str) -> None:
    for plan in plans_of(big, CALLS[name]):
        assert plan.sequential == [], f"{name}: sequential scan in {plan.statement}"
        assert plan.rows_read <= BOUND, f"{name}: {plan.rows_read} rows read by {plan.statement}"


def test_the_metrics_scrape_reads_indexes(big: Database, tmp_path: Any) -> None:
    """Runs, lag and lease on every scrape are index probes; the per-status counts and the
    per-schedule counters are re-read at most every refresh_every seconds."""
    settings = Settings.from_env({"DATAFORGE_DATABASE_URL": big.url}, cwd=tmp_path)
    collector = ConsoleCollector(big, settings, refresh_every=0)
    list(collector.collect())  # sets the follower's cursor
    throttled = [f"scheduled_tasks.{name}" for name in counter_columns(collector.table)]
    assert throttled, "the schema has per-schedule counters to export"
    for plan in plans_of(big, lambda db: list(collector.collect())):
        if "GROUP BY" in plan.statement or any(column in plan.statement for column in throttled):
            # The status counts and the per-schedule counters: full reads of the table, re-read
            # at most every refresh_every seconds (docs/web.md).
            continue
        assert plan.sequential == [], plan.statement
        assert plan.rows_read <= BOUND, plan.statement
