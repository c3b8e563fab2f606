"""Beat's SQL (dataforge.scheduler.store) on a real PostgreSQL: the batch compare-and-set."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from dataforge.db import Database
from dataforge.models import utcnow
from dataforge.scheduler import store
from tests.conftest import create_schema
from tests.dataforge.scheduler.support import add_row, get_row

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_url: str) -> Database:
    create_schema(pg_url)
    return Database(pg_url)


def _snapshots(db: Database, ids: list[int]) -> list[Any]:
    with db.engine.connect() as conn:
        rows = store.fetch_due(conn, utcnow() + timedelta(days=1), 10_000)
    by_id = {r.id: r for r in rows}
    return [by_id[i] for i in ids]


def test_advance_many_is_one_statement_whatever_the_batch_size(db: Database) -> None:
    """The batch travels as arrays: one statement text for 1 row and for 300 (compiled once),
    not a VALUES list per size."""
    due = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    ids = [add_row(db, next_run_at=due) for _ in range(301)]
    statements: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", capture)
    snaps = _snapshots(db, ids)
    later = due + timedelta(minutes=1)
    with db.engine.begin() as conn:
        won_one = store.advance_many(conn, [(snaps[0], later)], now=due)
        won_many = store.advance_many(conn, [(s, later) for s in snaps[1:]], now=due)
    event.remove(db.engine, "before_cursor_execute", capture)

    assert won_one == {ids[0]} and won_many == set(ids[1:])
    assert len(statements) == 2 and statements[0] == statements[1], statements
    assert "unnest(" in statements[0]
    assert {get_row(db, i)["run_count"] for i in ids} == {1}


def test_advance_many_fences_stale_reads_and_finishes_once_rows(db: Database) -> None:
    due = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    interval, once, moved = (add_row(db, next_run_at=due) for _ in range(3))
    snaps = _snapshots(db, [interval, once, moved])
    # Someone else advanced `moved` after beat read it: beat's CAS must not match it.
    with db.engine.begin() as conn:
        store.advance(conn, snaps[2], next_run_at=due + timedelta(hours=1), now=due)
    nxt: list[datetime | None] = [due + timedelta(minutes=1), None, due + timedelta(minutes=1)]
    with db.engine.begin() as conn:
        won = store.advance_many(conn, list(zip(snaps, nxt, strict=True)), now=due)

    assert won == {interval, once}
    assert get_row(db, once)["status"] == "done" and get_row(db, once)["next_run_at"] is None
    assert get_row(db, interval)["status"] == "active"
    assert get_row(db, interval)["next_run_at"] == due + timedelta(minutes=1)
    assert get_row(db, moved)["run_count"] == 1  # the other writer's run only
    assert get_row(db, moved)["next_run_at"] == due + timedelta(hours=1)
