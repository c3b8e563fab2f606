"""The schedule service's console reads: column-named edits, and keyset pages that, followed
cursor by cursor, give exactly the filtered rows, in order, whatever the page size and scan
window (hypothesis on SQLite; the same walk on PostgreSQL)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from dataforge.db import Database
from dataforge.errors import ScheduleError
from dataforge.models import ScheduledTask, TaskExecution
from dataforge.protocol import ExecutionStatus, ScheduleStatus
from dataforge.scheduler import service
from dataforge.scheduler.service import ScheduleEdit, edit_from_columns
from tests.conftest import create_schema

T0 = datetime(2030, 1, 1)
_files = itertools.count()

# --- edit_from_columns -------------------------------------------------------------------------------


def test_columns_become_the_edit_the_cli_would_build() -> None:
    edit = edit_from_columns({"name": "n", "task_name": "t", "cron_expression": "0 3 * * *", "timezone": "UTC",
                              "handler_kwargs": {"b": 1, "a": [2]}, "description": None, "timeout_seconds": None,
                              "missed_run_policy": None, "max_retries": 3})
    assert edit == ScheduleEdit(name="n", task_name="t", cron_expression="0 3 * * *", timezone="UTC",
                                handler_kwargs='{"a": [2], "b": 1}', description="", clear_timeout=True,
                                missed_run_policy="default", max_retries=3)
    assert edit.schedule_kind() == "cron"
    assert edit_from_columns({"task_type": "interval", "interval_seconds": 5}).interval_seconds == 5
    assert edit_from_columns({}) == ScheduleEdit()


@pytest.mark.parametrize(
    ("columns", "field"),
    [
        ({"next_run_at": "x"}, "next_run_at"),
        ({"id": 3}, "id"),
        ({"name": None}, "name"),
        ({"handler_kwargs": None}, "handler_kwargs"),
        ({"task_type": "weekly"}, "task_type"),
        ({"task_type": "once", "interval_seconds": 5}, "task_type"),
        ({"task_type": "once"}, "run_at"),
        ({"interval_seconds": 5, "run_at": "2030-01-01"}, "task_type"),
    ],
)
def test_refused_columns_are_named(columns: dict[str, Any], field: str) -> None:
    with pytest.raises(ScheduleError) as info:
        edit_from_columns(columns)
    assert info.value.field == field


# --- pages --------------------------------------------------------------------------------------------


def _sqlite(tmp: Path) -> Database:
    url = f"sqlite:///{tmp / f'pages-{next(_files)}.db'}"
    create_schema(url)
    return Database(url)


def _schedules(db: Database, specs: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    rows = [{"name": f"s{next(_files)}", "task_type": "interval", "interval_seconds": 60, "task_name": task,
             "status": status, "invalid_reason": "bad" if invalid else None, "next_run_at": None if invalid else T0}
            for status, task, invalid in specs]
    if rows:
        with db.session() as session:
            ids = session.execute(insert(ScheduledTask).returning(ScheduledTask.id), rows).scalars().all()
        for row, row_id in zip(rows, ids, strict=True):
            row["id"] = row_id
    return rows


def _walk(fetch: Any, limit: int) -> Iterator[dict[str, Any]]:
    cursor = None
    for _ in range(10_000):
        page = fetch(cursor=cursor, limit=limit)
        assert len(page.items) <= limit
        yield from page.items
        if page.next_cursor is None:
            return
        assert page.next_cursor != cursor, "a cursor always moves on"
        cursor = page.next_cursor
    raise AssertionError("the walk did not end")


FILTERS = st.fixed_dictionaries({
    "statuses": st.lists(st.sampled_from(list(ScheduleStatus)), max_size=2, unique=True),
    "task_name": st.sampled_from([None, "a", "b"]),
    "invalid": st.sampled_from([None, True, False]),
})


def _expected(rows: list[dict[str, Any]], statuses: list[str], task_name: str | None,
              invalid: bool | None) -> list[int]:
    def keep(r: dict[str, Any]) -> bool:
        flagged = r["invalid_reason"] is not None and r["status"] == "active" and r["next_run_at"] is None
        return ((not statuses or r["status"] in statuses) and (task_name is None or r["task_name"] == task_name)
                and (invalid is None or flagged is invalid))
    return [r["id"] for r in rows if keep(r)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(st.tuples(st.sampled_from(list(ScheduleStatus)), st.sampled_from(["a", "b"]), st.booleans()),
                   max_size=30),
    filters=FILTERS, limit=st.integers(1, 6), window=st.integers(1, 9),
)
def test_schedule_pages_walk_to_exactly_the_filtered_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, specs: list[tuple[str, str, bool]], filters: dict[str, Any],
    limit: int, window: int,
) -> None:
    monkeypatch.setattr(service, "SCAN_WINDOW", window)
    db = _sqlite(tmp_path)
    try:
        rows = _schedules(db, specs)
        walked = [r["id"] for r in _walk(lambda **kw: service.page_schedules(db, **filters, **kw), limit)]
    finally:
        db.dispose()
    assert walked == _expected(rows, **filters)


def _executions(db: Database, specs: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
    """(seconds after T0, status, task) per row, inserted in order: ids grow with start time."""
    with db.session() as session:
        sid = session.execute(insert(ScheduledTask).values(name="x", task_type="interval", interval_seconds=1,
                                                           task_name="a").returning(ScheduledTask.id)).scalar_one()
    rows = [{"celery_task_id": f"c{i}", "task_name": task, "status": status, "attempt": 0,
             "started_at": T0 + timedelta(seconds=offset), "scheduled_task_id": sid}
            for i, (offset, status, task) in enumerate(specs)]
    if rows:
        with db.session() as session:
            ids = session.execute(insert(TaskExecution).returning(TaskExecution.id), rows).scalars().all()
        for row, row_id in zip(rows, ids, strict=True):
            row["id"] = row_id
    return rows


EXECUTION_SPECS = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(list(ExecutionStatus)),
                                     st.sampled_from(["a", "b"])), max_size=30).map(
    lambda specs: sorted(specs, key=lambda s: s[0]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=EXECUTION_SPECS, statuses=st.lists(st.sampled_from(list(ExecutionStatus)), max_size=2, unique=True),
       task=st.sampled_from([None, "a"]), since=st.sampled_from([None, 0, 2, 9]), limit=st.integers(1, 5),
       window=st.integers(1, 9))
def test_execution_pages_walk_to_exactly_the_filtered_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, specs: list[tuple[int, str, str]], statuses: list[str],
    task: str | None, since: int | None, limit: int, window: int,
) -> None:
    monkeypatch.setattr(service, "SCAN_WINDOW", window)
    # Rows here are seconds apart; the real margin is minutes.
    monkeypatch.setattr(service, "SINCE_MARGIN", timedelta(0))
    at = None if since is None else T0 + timedelta(seconds=since)
    db = _sqlite(tmp_path)
    try:
        rows = _executions(db, specs)
        walked = [r["id"] for r in _walk(
            lambda **kw: service.page_executions(db, statuses=statuses, task_name=task, since=at, **kw), limit)]
        sid = rows[0]["scheduled_task_id"] if rows else None
        per_schedule = [] if sid is None else [r["id"] for r in _walk(
            lambda **kw: service.page_schedule_executions(db, sid, statuses=statuses, **kw)[1], limit)]
    finally:
        db.dispose()
    expected = [r["id"] for r in reversed(rows) if (not statuses or r["status"] in statuses)
                and (task is None or r["task_name"] == task) and (at is None or r["started_at"] >= at)]
    assert walked == expected
    by_start = sorted(rows, key=lambda r: (r["started_at"], r["id"]), reverse=True)
    assert per_schedule == [r["id"] for r in by_start if not statuses or r["status"] in statuses]


def test_the_same_walks_on_postgresql(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "SCAN_WINDOW", 4)
    create_schema(pg_url)
    db = Database(pg_url)
    try:
        specs: list[tuple[str, str, bool]] = [
            (str(s), t, i) for s in ScheduleStatus for t in ("a", "b") for i in (False, True)] * 2
        rows = _schedules(db, specs)
        filters: dict[str, Any]
        for filters in ({"statuses": [], "task_name": None, "invalid": None},
                        {"statuses": ["paused"], "task_name": "b", "invalid": None},
                        {"statuses": [], "task_name": None, "invalid": True},
                        {"statuses": ["active"], "task_name": None, "invalid": False}):
            walked = [r["id"] for r in _walk(lambda f=filters, **kw: service.page_schedules(db, **f, **kw), 3)]
            assert walked == _expected(rows, **filters), filters
        runs = _executions(db, [(i // 3, s, "a") for i, s in enumerate(list(ExecutionStatus) * 3)])
        walked = [r["id"] for r in _walk(lambda **kw: service.page_executions(db, statuses=["failure"], **kw), 2)]
        assert walked == [r["id"] for r in reversed(runs) if r["status"] == "failure"]
        sid = runs[0]["scheduled_task_id"]
        walked = [r["id"] for r in _walk(lambda **kw: service.page_schedule_executions(db, sid, **kw)[1], 4)]
        assert walked == [r["id"] for r in sorted(runs, key=lambda r: (r["started_at"], r["id"]), reverse=True)]
        assert service.count_schedules(db) == service.Count(len(rows) + 1, True)  # + the executions' schedule
    finally:
        db.dispose()


def test_counts_are_exact_up_to_the_cap_then_estimated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "COUNT_CAP", 5)
    db = _sqlite(tmp_path)
    try:
        _schedules(db, [("active", "a", False)] * 5)
        assert service.count_schedules(db) == service.Count(5, True)
        _schedules(db, [("active", "a", False)])
        assert service.count_schedules(db) == service.Count(6, False)
    finally:
        db.dispose()


@pytest.mark.parametrize(("kwargs", "field"), [({"limit": 0}, "limit"), ({"limit": service.MAX_PAGE + 1}, "limit"),
                                               ({"cursor": "1e3"}, "cursor"), ({"statuses": ["x"]}, "status")])
def test_bad_paging_arguments_are_named(tmp_path: Path, kwargs: dict[str, Any], field: str) -> None:
    db = _sqlite(tmp_path)
    try:
        with pytest.raises(ScheduleError) as info:
            service.page_schedules(db, **kwargs)
        assert info.value.field == field
        with pytest.raises(ScheduleError):
            service.page_schedule_executions(db, 1, cursor="garbage")
    finally:
        db.dispose()
