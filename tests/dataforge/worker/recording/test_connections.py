"""Kept PostgreSQL connections: replaced after a restart, bounded by their timeouts."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from dataforge.db import Database
from dataforge.worker.recording.connections import HeldConnections
from dataforge.worker.recording.statements import ATTEMPT_STATE_SQL, attempt_state


def _kill_sessions(url: str) -> None:
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )


@pytest.fixture
def held(pg_url: str) -> HeldConnections:
    from tests.conftest import create_schema

    create_schema(pg_url)
    return HeldConnections(Database(pg_url).url, synchronous_commit=False, statement_timeout=1.0)


def test_a_dead_connection_is_replaced_and_the_statement_retried(held: HeldConnections, pg_url: str) -> None:
    try:
        assert held.fetch_one(ATTEMPT_STATE_SQL, ("t", 0)) is None
        assert held.execute(attempt_state(), {"b_tid": "t", "b_attempt": 0}).first() is None
        _kill_sessions(pg_url)  # what a restart does to every kept connection
        assert held.fetch_one(ATTEMPT_STATE_SQL, ("t", 0)) is None  # no error: replaced, retried
        _kill_sessions(pg_url)
        assert held.execute(attempt_state(), {"b_tid": "t", "b_attempt": 0}).first() is None
        assert held.replaced == 2
    finally:
        held.close()


def test_the_server_cancels_a_statement_after_the_timeout(held: HeldConnections) -> None:
    try:
        with pytest.raises(OperationalError, match="statement timeout"):
            held.execute(text("SELECT pg_sleep(5)"), {})
        assert held.execute(text("SHOW synchronous_commit"), {}).scalar() == "off"
    finally:
        held.close()


def test_relaxed_commit_stays_on_the_recorders_own_connections(held: HeldConnections, pg_url: str) -> None:
    """synchronous_commit=off is for execution records only: the app's pooled connections
    (beat's dispatch, lock leases, the CLI) never have it."""
    db = Database(pg_url)
    try:
        assert held.execute(text("SHOW synchronous_commit"), {}).scalar() == "off"
        for _ in range(3):
            with db.engine.connect() as conn:
                assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        held.close()
        db.dispose()
