"""Beat's SQL (dataforge.scheduler.store) on a real PostgreSQL: the batch compare-and-set, the
counters it moves, and the table without the policy columns (a database rolled back below
0008_schedule_policies)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from dataforge.db import Database
from dataforge.models import utcnow
from dataforge.scheduler.store import Advance, ScheduleStore, store_for
from migrations.schedule_triggers import POSTGRESQL_DROP, POSTGRESQL_TRIGGERS
from tests.conftest import create_schema
from tests.dataforge.scheduler.support import add_row, get_row

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_url: str) -> Database:
    create_schema(pg_url)
    return Database(pg_url)


STORE = ScheduleStore()


def _snapshots(db: Database, ids: list[int], table: ScheduleStore = STORE) -> list[Any]:
    with db.engine.connect() as conn:
        rows = table.fetch_due(conn, utcnow() + timedelta(days=1), 10_000)
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
        won_one = STORE.advance_many(conn, [Advance(snaps[0], later)], now=due)
        won_many = STORE.advance_many(conn, [Advance(s, later, runs=2, missed=3) for s in snaps[1:]], now=due)
    event.remove(db.engine, "before_cursor_execute", capture)

    assert won_one == {ids[0]} and won_many == set(ids[1:])
    assert len(statements) == 2 and statements[0] == statements[1], statements
    assert "unnest(" in statements[0]
    assert (get_row(db, ids[0])["run_count"], get_row(db, ids[0])["missed_count"]) == (1, 0)
    assert {(get_row(db, i)["run_count"], get_row(db, i)["missed_count"]) for i in ids[1:]} == {(2, 3)}


def test_advance_many_fences_stale_reads_and_finishes_once_rows(db: Database) -> None:
    due = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    interval, once, moved = (add_row(db, next_run_at=due) for _ in range(3))
    snaps = _snapshots(db, [interval, once, moved])
    # Someone else advanced `moved` after beat read it: beat's CAS must not match it.
    with db.engine.begin() as conn:
        STORE.advance(conn, Advance(snaps[2], due + timedelta(hours=1)), now=due)
    nxt: list[datetime | None] = [due + timedelta(minutes=1), None, due + timedelta(minutes=1)]
    with db.engine.begin() as conn:
        won = STORE.advance_many(conn, [Advance(s, n) for s, n in zip(snaps, nxt, strict=True)], now=due)

    assert won == {interval, once}
    assert get_row(db, once)["status"] == "done" and get_row(db, once)["next_run_at"] is None
    assert get_row(db, interval)["status"] == "active"
    assert get_row(db, interval)["next_run_at"] == due + timedelta(minutes=1)
    assert get_row(db, moved)["run_count"] == 1  # the other writer's run only
    assert get_row(db, moved)["next_run_at"] == due + timedelta(hours=1)


def test_revert_and_reschedule_keep_the_missed_count_exact(db: Database) -> None:
    due = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    sent, skipped = add_row(db, next_run_at=due), add_row(db, next_run_at=due)
    snap_sent, snap_skipped = _snapshots(db, [sent, skipped])
    before = get_row(db, sent)
    later = due + timedelta(minutes=1)
    with db.engine.begin() as conn:
        item = Advance(snap_sent, later, runs=3, missed=4)
        assert STORE.advance_many(conn, [item], now=due) == {sent}
        STORE.revert(conn, item)  # its publish failed
        assert STORE.reschedule(conn, snap_skipped, next_run_at=later, missed=2)
    assert get_row(db, sent) == before
    assert (get_row(db, skipped)["missed_count"], get_row(db, skipped)["run_count"]) == (2, 0)


def test_a_table_without_the_policy_columns_is_read_and_written_without_them(db: Database) -> None:
    """What the new beat meets on a database rolled back to 0002_expand..0006: the columns of
    0008 do not exist; the rows read as the defaults and beat writes none of them."""
    with db.engine.begin() as conn:
        assert store_for(conn).policies
        for statement in POSTGRESQL_DROP:
            conn.execute(text(statement))
        for name in ("overlap_policy", "catchup_window_seconds", "jitter_seconds", "missed_count",
                     "skipped_count", "expired_count", "lost_count"):
            conn.execute(text(f"ALTER TABLE scheduled_tasks DROP COLUMN {name}"))
        for statement in POSTGRESQL_TRIGGERS:  # those of 0005, which know none of the columns
            conn.execute(text(statement))
    due = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    with db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, "
                 "status, max_retries, run_count, success_count, failure_count, created_at, updated_at, next_run_at) "
                 "VALUES ('old', 'interval', 'x', 60, 'UTC', '{}', 'active', 0, 0, 0, 0, :t, :t, :t)"),
            {"t": due},
        )
    with db.engine.begin() as conn:
        table = store_for(conn)
        assert not table.policies
        (row,) = table.fetch_due(conn, utcnow(), 10)
        assert (row.overlap_policy, row.catchup_window_seconds, row.jitter_seconds, row.missed_count) == (
            None, None, None, 0,
        )
        item = Advance(row, due + timedelta(minutes=1), missed=5)
        assert table.advance_many(conn, [item], now=due) == {row.id}
        table.revert(conn, item)
        assert table.reschedule(conn, row, next_run_at=due + timedelta(minutes=2), missed=1)
        (moved,) = table.fetch_due(conn, utcnow() + timedelta(minutes=5), 10)
        assert table.flag(conn, moved, reason="test", now=due)
    db.dispose()
