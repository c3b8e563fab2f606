"""Kept PostgreSQL connections: replaced after a restart, bounded by their timeouts."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from dataforge.db import Database
from dataforge.runtime import Runtime
from dataforge.settings import Settings
from dataforge.worker.recording.connections import HeldConnections
from dataforge.worker.recording.recorder import READ_TIMEOUT, WRITE_TIMEOUT, Recorder
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


@pytest.fixture
def pg_runtime(pg_url: str, tmp_path: Path) -> Iterator[Runtime]:
    from tests.conftest import create_schema

    create_schema(pg_url)
    rt = Runtime(Settings.from_env({"DATAFORGE_DATABASE_URL": pg_url}, cwd=tmp_path))
    yield rt
    rt.close()


def _held(recorder: Recorder) -> tuple[HeldConnections, HeldConnections]:
    assert recorder.reads is not None and recorder.writes is not None
    return recorder.reads, recorder.writes


def test_the_recorders_connections_carry_the_documented_time_bounds(pg_runtime: Runtime) -> None:
    """The read on a run's path is cancelled by the server after 1 s, a flush after 10 s; a
    new connection of either gives up after 2 s."""
    assert (READ_TIMEOUT, WRITE_TIMEOUT) == (1.0, 10.0)
    reads, writes = _held(pg_runtime.recorder)
    assert (reads.connect_timeout, writes.connect_timeout) == (2, 2)
    assert reads.fetch_one("SHOW statement_timeout", ()) == ("1s",)
    assert writes.execute(text("SHOW statement_timeout"), {}).scalar() == "10s"
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
        reads.fetch_one("SELECT pg_sleep(30)", ())
    assert time.monotonic() - started < 30  # cancelled, not finished (its bound is the setting above)


def test_a_new_connection_to_a_server_that_never_answers_gives_up_after_2s() -> None:
    """A listening socket nobody accepts on: TCP connects, the server's reply never comes."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        held = HeldConnections(f"postgresql://nobody@127.0.0.1:{port}/none", synchronous_commit=False,
                               statement_timeout=READ_TIMEOUT)  # fmt: skip
        assert held.connect_timeout == 2
        started = time.monotonic()
        with pytest.raises(OperationalError):
            held.fetch_one(ATTEMPT_STATE_SQL, ("t", 0))
        waited = time.monotonic() - started
        held.close()
    assert 1.9 <= waited < 2 + 3, f"gave up after {waited:.1f}s, not after the 2 s connect timeout"


@pytest.mark.parametrize(("value", "expected"), [("1", "on"), ("0", "off")])
def test_the_synchronous_commit_setting_decides_the_recorders_commits_whatever_the_server_default(
    pg_url: str, tmp_path: Path, value: str, expected: str
) -> None:
    """``DATAFORGE_RECORDER_SYNCHRONOUS_COMMIT=1``: every recorder commit waits for its WAL
    flush, even where the server (here: the database) defaults to ``off``; ``0``: none does."""
    from tests.conftest import create_schema

    create_schema(pg_url)
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    settings = Settings.from_env({"DATAFORGE_DATABASE_URL": pg_url, "DATAFORGE_RECORDER_SYNCHRONOUS_COMMIT": value},
                                 cwd=tmp_path)  # fmt: skip
    assert settings.recorder_synchronous_commit is (value == "1")
    rt = Runtime(settings)
    try:
        reads, writes = _held(rt.recorder)
        assert reads.fetch_one("SHOW synchronous_commit", ()) == (expected,)
        assert writes.execute(text("SHOW synchronous_commit"), {}).scalar() == expected
    finally:
        rt.close()
