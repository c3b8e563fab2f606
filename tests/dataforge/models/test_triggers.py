"""The triggers on scheduled_tasks, exercised with raw SQL as operators write it.

Revive (an edit clears beat's flag), realign (a timing edit or a resume clears the due time),
NOTIFY (PostgreSQL wakes beat on edits, not on beat's own or the workers' writes), the SQLite
timestamp normalisation, and installation (create_all, idempotent, drop).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from dataforge.db import Database
from dataforge.models.triggers import (
    NOTIFY_CHANNEL,
    drop_change_triggers,
    install_change_triggers,
    triggers_installed,
)
from dataforge.scheduler.changes import conninfo_for
from tests.conftest import create_schema

T0 = datetime(2024, 5, 1, 12, 0, 0)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'ddl.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    create_schema(url)
    db = Database(url)
    yield db.engine
    db.dispose()


def sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def insert(engine: Engine, **values: Any) -> int:
    row: dict[str, Any] = {
        "name": f"r{datetime.now().timestamp()}", "task_type": "interval", "task_name": "x.y",
        "interval_seconds": 60, "timezone": "UTC", "handler_kwargs": "{}", "status": "active",
        "max_retries": 0, "run_count": 0, "success_count": 0, "failure_count": 0,
        "created_at": T0, "updated_at": T0, "next_run_at": T0,
    }
    row.update(values)
    cols = ", ".join(row)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO scheduled_tasks ({cols}) VALUES ({', '.join(':' + c for c in row)})"), row)
        return int(conn.execute(text("SELECT max(id) FROM scheduled_tasks")).scalar_one())


def fetch(engine: Engine, row_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM scheduled_tasks WHERE id = :i"), {"i": row_id}).mappings().one())


def test_create_all_installs_them_and_install_is_idempotent(engine: Engine) -> None:
    with engine.connect() as conn:
        assert triggers_installed(conn)
    install_change_triggers(engine)
    install_change_triggers(engine)
    drop_change_triggers(engine)
    with engine.connect() as conn:
        assert not triggers_installed(conn)
    install_change_triggers(engine)
    with engine.connect() as conn:
        assert triggers_installed(conn)


@pytest.mark.parametrize(
    ("edit", "revived", "realigned"),
    [
        ("handler_kwargs = '{\"a\": 1}'", True, False),
        ("task_name = 'x.z'", True, False),
        ("max_retries = 3", True, False),
        ("cron_expression = '0 3 * * *', task_type = 'cron'", True, True),
        ("interval_seconds = 30", True, True),
        ("timezone = 'Europe/Berlin'", True, True),
        # Not the definition: beat's flag stays (a rename does not fix a bad cron).
        ("description = 'renamed'", False, False),
        # The workers' bookkeeping.
        ("success_count = success_count + 1, last_status = 'success'", False, False),
    ],
)
def test_edits_revive_and_realign(engine: Engine, edit: str, revived: bool, realigned: bool) -> None:
    flagged = insert(engine, invalid_reason="bad", invalid_at=T0)
    healthy = insert(engine)
    sql(engine, f"UPDATE scheduled_tasks SET {edit}")  # a bulk update: both rows at once
    f, h = fetch(engine, flagged), fetch(engine, healthy)
    assert (f["invalid_reason"] is None, f["invalid_at"] is None) == (revived, revived)
    assert (h["next_run_at"] is None) == realigned
    assert (f["next_run_at"] is None) == realigned


def test_resume_realigns_and_pause_keeps_the_due_time(engine: Engine) -> None:
    row_id = insert(engine)
    sql(engine, "UPDATE scheduled_tasks SET status = 'paused' WHERE id = :i", i=row_id)
    assert fetch(engine, row_id)["next_run_at"] is not None
    sql(engine, "UPDATE scheduled_tasks SET status = 'active' WHERE id = :i", i=row_id)
    assert fetch(engine, row_id)["next_run_at"] is None


def test_an_explicit_due_time_in_the_same_update_is_kept(engine: Engine) -> None:
    row_id = insert(engine, status="paused")
    later = datetime(2024, 6, 1, 8, 0, 0)
    sql(engine, "UPDATE scheduled_tasks SET status = 'active', interval_seconds = 5, next_run_at = :t "
                "WHERE id = :i", t=later, i=row_id)
    stored = fetch(engine, row_id)["next_run_at"]
    assert stored in (later, "2024-06-01 08:00:00.000000", "2024-06-01 08:00:00")


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_sqlite_t_separated_due_times_are_normalised(engine: Engine) -> None:
    """SQLite compares timestamps as text: 'T' sorts after ' ' and would delay a row by a day."""
    row_id = insert(engine, next_run_at="2024-05-01T12:00:00")
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT next_run_at FROM scheduled_tasks WHERE id = :i"), {"i": row_id}).scalar()
    assert raw == "2024-05-01 12:00:00"
    sql(engine, "UPDATE scheduled_tasks SET next_run_at = '2024-05-02T01:30' WHERE id = :i", i=row_id)
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT next_run_at FROM scheduled_tasks WHERE id = :i"), {"i": row_id}).scalar()
    assert raw == "2024-05-02 01:30"


# --- NOTIFY (PostgreSQL) --------------------------------------------------------------------------------------


@pytest.fixture
def listener(pg_url: str) -> Iterator[tuple[Engine, psycopg.Connection[Any]]]:
    create_schema(pg_url)
    db = Database(pg_url)
    conn = psycopg.connect(conninfo_for(db.url), autocommit=True)
    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
    yield db.engine, conn
    conn.close()
    db.dispose()


def notified(conn: psycopg.Connection[Any]) -> int:
    """Notifications received for what was committed before the call (delivery is in commit
    order on the server, so a marker NOTIFY sent last bounds the wait)."""
    with psycopg.connect(conn.info.dsn, autocommit=True) as other:
        other.execute(f"NOTIFY {NOTIFY_CHANNEL}, 'marker'")
    count = 0
    for n in conn.notifies(timeout=10):
        if n.payload == "marker":
            return count
        count += 1
    raise AssertionError("the marker NOTIFY never arrived")


def test_notify_on_every_kind_of_edit(listener: tuple[Engine, psycopg.Connection[Any]]) -> None:
    engine, conn = listener
    row_id = insert(engine)
    assert notified(conn) == 1
    sql(engine, "UPDATE scheduled_tasks SET handler_kwargs = '{}' WHERE id = :i", i=row_id)
    assert notified(conn) == 0, "an UPDATE that changes nothing must not wake beat"
    for edit in ("status = 'paused'", "status = 'active'", "next_run_at = now()", "invalid_reason = 'x'",
                 "cron_expression = '* * * * *'"):
        sql(engine, f"UPDATE scheduled_tasks SET {edit} WHERE id = :i", i=row_id)
        assert notified(conn) == 1, edit
    # A bulk edit of many rows is one wake-up (NOTIFY is deduplicated per transaction).
    for _ in range(20):
        insert(engine)
    notified(conn)
    sql(engine, "UPDATE scheduled_tasks SET interval_seconds = 30")
    assert notified(conn) == 1
    sql(engine, "DELETE FROM scheduled_tasks WHERE id = :i", i=row_id)
    assert notified(conn) == 1
    sql(engine, "TRUNCATE scheduled_tasks CASCADE")
    assert notified(conn) == 1


def test_no_notify_for_workers_counters_nor_beats_own_writes(
    listener: tuple[Engine, psycopg.Connection[Any]],
) -> None:
    engine, conn = listener
    row_id = insert(engine, invalid_reason="bad")
    notified(conn)
    sql(engine, "UPDATE scheduled_tasks SET success_count = success_count + 1, last_status = 'success', "
                "last_error = NULL, updated_at = now() WHERE id = :i", i=row_id)
    assert notified(conn) == 0
    with engine.begin() as c:
        c.execute(text("SELECT set_config('dataforge.writer', 'beat', true)"))
        c.execute(text("UPDATE scheduled_tasks SET next_run_at = now(), run_count = run_count + 1, "
                       "handler_kwargs = '{\"x\": 1}' WHERE id = :i"), {"i": row_id})
    assert notified(conn) == 0
    # Beat's writes do not revive either (it flags and unflags rows itself).
    assert fetch(engine, row_id)["invalid_reason"] == "bad"
    # The setting was transaction-local: the next writer is an operator again.
    sql(engine, "UPDATE scheduled_tasks SET handler_kwargs = '{}' WHERE id = :i", i=row_id)
    assert notified(conn) == 1
    assert fetch(engine, row_id)["invalid_reason"] is None
