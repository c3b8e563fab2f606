"""DatabaseScheduler's real publish path: real brokers, no capturing seam.

test_celery_scheduler.py replaces the publish seam to watch decisions; here the scheduler
publishes for real, so what is checked is what a worker would receive: every due row as one
Celery message with the run's deterministic id, across several database batches and several
broker flushes, and nothing lost or doubled when a flush fails. Redis is the buffered path
(kombu's ``Producer.batch``: one pipeline per flush); RabbitMQ and the embedded SQL broker
get each message at once.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import celery.schedules
import pytest
import redis
from celery import Celery

from dataforge.db import Database
from dataforge.models import utcnow
from dataforge.protocol import PUBLISH_RETRY_POLICY
from dataforge.scheduler.beat import DatabaseScheduler, PublishBatch
from dataforge.scheduler.dispatch import run_task_id
from dataforge.scheduler.schedules import parse_db_datetime
from tests.conftest import create_schema
from tests.dataforge.scheduler.support import TEST_TASK, TcpProxy, add_row, get_row, make_app, settings_for


class Broker:
    """One app on one database and broker, and a way to read back what beat published."""

    def __init__(self, tmp_path: Path, database_url: str, broker_url: str | None, queue: str = "celery") -> None:
        env = {} if broker_url is None else {"DATAFORGE_BROKER_URL": broker_url}
        self.settings = settings_for(tmp_path, database_url, **env)
        create_schema(self.settings.database_url)
        self.app: Celery = make_app(self.settings)
        self.queue = queue
        self.app.conf.task_default_queue = queue
        self.db: Database = self.app.runtime.db
        self.schedulers: list[DatabaseScheduler] = []

    def scheduler(self, cls: type[DatabaseScheduler] = DatabaseScheduler) -> DatabaseScheduler:
        sch = cls(app=self.app)
        # Small batches and flushes, so a few dozen rows cross several of each.
        sch.batch_size = 20
        sch.flush_every = 7
        self.schedulers.append(sch)
        return sch

    def due_rows(self, count: int) -> dict[int, datetime]:
        """``count`` interval rows due a second ago: {id: due time}."""
        due = (utcnow() - timedelta(seconds=1)).replace(microsecond=0)
        return {add_row(self.db, interval_seconds=3600, next_run_at=due): due for _ in range(count)}

    def drain(self) -> list[dict[str, Any]]:
        """Every message in the queue, as (headers, kwargs) a worker would get."""
        out: list[dict[str, Any]] = []
        with self.app.connection_for_read() as conn:
            queue = conn.SimpleQueue(self.queue)
            try:
                while True:
                    try:
                        msg = queue.get(block=False)
                    except queue.Empty:
                        return out
                    _args, kwargs, _embed = msg.decode()
                    out.append({"headers": msg.headers, "kwargs": kwargs})
                    msg.ack()
            finally:
                queue.close()

    def close(self) -> None:
        for sch in self.schedulers:
            sch.close()
        if self.settings.broker_url.startswith("amqp"):
            with self.app.connection_for_write() as conn:  # no durable queue left on the shared broker
                conn.default_channel.queue_delete(self.queue)
        self.app.runtime.close()


@pytest.fixture(params=["redis", "embedded", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    sqlite_url = f"sqlite:///{tmp_path / 'dataforge.db'}"
    if request.param == "redis":
        pg_url: str = request.getfixturevalue("pg_url")
        b = Broker(tmp_path, pg_url, request.getfixturevalue("redis_url"))
    elif request.param == "rabbitmq":
        # Its own queue: other suites share the broker's default vhost.
        b = Broker(tmp_path, sqlite_url, request.getfixturevalue("rabbitmq_url"), f"df-beat-{uuid.uuid4().hex[:8]}")
    else:
        b = Broker(tmp_path, sqlite_url, None)
    yield b
    b.close()


def expected_ids(rows: dict[int, datetime]) -> dict[int, str]:
    return {sid: run_task_id(sid, 1, due) for sid, due in rows.items()}


def test_every_due_row_is_one_message_with_its_run_id(broker: Broker) -> None:
    rows = broker.due_rows(47)  # 3 database batches of 20, 3 flushes per full batch
    sch = broker.scheduler()
    with sch.producer_for_batch() as batch:
        # Redis takes the pipelined path; the SQL broker publishes at once.
        assert batch.buffered is broker.settings.broker_url.startswith("redis")

    sch.tick_once()

    messages = broker.drain()
    got = {m["kwargs"]["scheduled_task_id"]: m["headers"] for m in messages}
    assert len(messages) == len(rows), f"{len(messages)} messages for {len(rows)} due rows"
    assert {sid: h["id"] for sid, h in got.items()} == expected_ids(rows)
    assert {h["task"] for h in got.values()} == {TEST_TASK}
    assert sch.stats["sent"] == len(rows)
    for sid in rows:
        assert get_row(broker.db, sid)["run_count"] == 1


@pytest.mark.redis
@pytest.mark.postgres
def test_a_failed_flush_is_sent_again_with_the_same_ids_and_nothing_is_lost(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """The broker connection drops just before the second flush of the first batch: the first
    flush's 7 messages stay sent (their rows advanced), the unsent ones are rolled back, and the
    next tick sends exactly those, with the ids they had."""
    base = redis.Redis.from_url(redis_url)
    proxy = TcpProxy("127.0.0.1", base.connection_pool.connection_kwargs["port"])
    db_number = base.connection_pool.connection_kwargs["db"]
    b = Broker(tmp_path, pg_url, f"redis://127.0.0.1:{proxy.port}/{db_number}")
    flushes = 0

    class CutBeforeSecondFlush(DatabaseScheduler):
        @contextmanager
        def producer_for_batch(self) -> Iterator[PublishBatch]:
            with super().producer_for_batch() as real:

                def flush() -> None:
                    nonlocal flushes
                    flushes += 1
                    if flushes == 2:
                        proxy.cut()
                    real.flush()

                yield PublishBatch(real.producer, real.buffered, flush)

    try:
        rows = b.due_rows(20)
        before = {sid: get_row(b.db, sid) for sid in rows}
        sch = b.scheduler(CutBeforeSecondFlush)
        assert sch.tick_once() == sch.retry_after_failure
        assert sch.stats["sent"] == 7 and sch.stats["publish_failed"] == 13

        proxy.restore()
        first = b.drain()
        assert len(first) == 7, f"{len(first)} messages after the first flush, expected 7"
        sent_first = {m["kwargs"]["scheduled_task_id"] for m in first}
        for sid in rows:
            row = get_row(b.db, sid)
            if sid in sent_first:
                assert row["run_count"] == 1
            else:  # rolled back exactly: due again, same run number, same due time
                assert row == before[sid], f"schedule {sid} was not rolled back"

        sch.tick_once()
        second = b.drain()
        sent_second = {m["kwargs"]["scheduled_task_id"]: m["headers"]["id"] for m in second}
        assert set(sent_second) == set(rows) - sent_first, "each unsent run sent once, nothing repeated"
        ids = expected_ids(rows)
        assert all(sent_second[sid] == ids[sid] for sid in sent_second)
        assert all(parse_db_datetime(get_row(b.db, sid)["last_run_at"]) for sid in rows)
    finally:
        b.close()
        proxy.close()
        base.close()


class ResettingBroker:
    """A broker that is down: it accepts each connection and resets it at once, and counts the
    attempts (a closed port would refuse them uncounted)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.attempts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.attempts += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.mark.parametrize("scheme", ["redis://127.0.0.1:{port}/0", "amqp://guest:guest@127.0.0.1:{port}//"])
def test_a_publish_to_a_dead_broker_gives_up_after_about_a_second(tmp_path: Path, scheme: str) -> None:
    """``PUBLISH_RETRY_POLICY`` bounds the whole publish, connecting included: its sleeps add up
    to at most a second, beat connects as many times as the policy says (not kombu's default
    of tries 2 and 4 s apart, ~6 s per tick), and the tick then rolls back and asks for its
    1 s retry. The wall-clock bound leaves a loaded machine more than twice the policy's time
    and stays below kombu's 4 s connect timeout."""
    policy = PUBLISH_RETRY_POLICY
    retries = int(policy["max_retries"])
    sleeps = [min(policy["interval_start"] + k * policy["interval_step"], policy["interval_max"])
              for k in range(retries)]  # fmt: skip
    assert sum(sleeps) <= 1.0
    dead = ResettingBroker()
    b = Broker(tmp_path, f"sqlite:///{tmp_path / 'dataforge.db'}", scheme.format(port=dead.port))
    try:
        rows = b.due_rows(1)
        before = {sid: get_row(b.db, sid) for sid in rows}
        sch = b.scheduler()
        started = time.monotonic()
        assert sch.tick_once() == 1.0
        took = time.monotonic() - started
        assert dead.attempts == 1 + retries, f"{dead.attempts} connection attempts"
        assert took < 2.5, f"beat was stuck {took:.1f}s on a dead broker"
        assert sch.stats["publish_failed"] == 1
        assert {sid: get_row(b.db, sid) for sid in rows} == before, "the unsent run was not rolled back"
    finally:
        for opened in b.schedulers:
            opened.close()
        b.app.runtime.close()  # not Broker.close: there is no broker to delete a queue on
        dead.close()


@pytest.mark.redis
def test_no_task_sent_event_unless_task_send_sent_event_is_on(tmp_path: Path, redis_url: str) -> None:
    """The app's default is off; beat's publish then sends no ``task-sent`` event, and with it
    on it does. Events are fanned out to whoever listens: a receiver listens first (it has
    seen a probe event), then a run is sent with the default and one with the setting on; when
    the second run's event has arrived, the first run's would have arrived before it."""
    b = Broker(tmp_path, f"sqlite:///{tmp_path / 'dataforge.db'}", redis_url)
    assert b.app.conf.task_send_sent_event is False
    seen: list[dict[str, Any]] = []
    with b.app.connection_for_read() as conn:
        receiver = b.app.events.Receiver(conn, handlers={"*": seen.append})
        listening = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=None, wakeup=False),
                                     daemon=True)
        listening.start()
        try:
            with b.app.events.default_dispatcher() as dispatcher:
                deadline = time.monotonic() + 10
                while not any(e["type"] == "df-probe" for e in seen):
                    assert time.monotonic() < deadline, "the event receiver never got a probe event"
                    dispatcher.send("df-probe")
                    time.sleep(0.1)
            default_run = b.due_rows(1)
            first = b.scheduler()
            first.tick_once()
            first.close()  # releases the lease: the next scheduler leads at once
            b.app.conf.task_send_sent_event = True
            on_run = b.due_rows(1)
            b.scheduler().tick_once()
            [(on_id, on_due)] = on_run.items()
            [(default_id, default_due)] = default_run.items()
            on_task, default_task = run_task_id(on_id, 1, on_due), run_task_id(default_id, 1, default_due)
            deadline = time.monotonic() + 10
            while not any(e["type"] == "task-sent" and e["uuid"] == on_task for e in seen):
                assert time.monotonic() < deadline, "no task-sent event with task_send_sent_event on"
                time.sleep(0.05)
            sent = [e["uuid"] for e in seen if e["type"] == "task-sent"]
            assert sent == [on_task], f"task-sent events for {sent}; {default_task} was sent with the default (off)"
            assert {m["headers"]["id"] for m in b.drain()} == {on_task, default_task}
        finally:
            receiver.should_stop = True
            listening.join(10)
    b.close()


# --- static entries: Celery's beat_schedule, run by the leader ---------------------------------------


def test_backend_cleanup_is_installed_only_where_results_do_not_expire_by_themselves(
    broker: Broker, tmp_path: Path
) -> None:
    sch = broker.scheduler()
    sch.tick_once()  # an entry naming an unregistered task would be dropped here
    database_results = broker.settings.result_backend.startswith("db+")
    assert database_results, "both fixtures keep results in the database (the settings' default)"
    assert "celery.backend_cleanup" in sch.schedule, sorted(sch.schedule)
    assert broker.drain() == [], "not due before 04:00 the day after beat started"

    (tmp_path / "other").mkdir()
    with_redis_results = Broker(tmp_path / "other", broker.settings.database_url, None)
    with_redis_results.app.conf.result_backend = "redis://127.0.0.1:1/0"  # never contacted
    try:
        assert "celery.backend_cleanup" not in with_redis_results.scheduler().schedule
    finally:
        with_redis_results.close()


class BrokenSchedule(celery.schedules.schedule):  # type: ignore[misc]
    """A schedule whose evaluation raises, as a buggy custom schedule class would."""

    def __init__(self) -> None:
        super().__init__(run_every=60.0)

    def is_due(self, last_run_at: datetime) -> Any:
        raise ZeroDivisionError("bug in a custom schedule")


def test_static_entries_are_sent_by_the_leader_when_due_and_unregistered_ones_dropped(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    broker.app.conf.beat_schedule = {
        "static-echo": {"task": TEST_TASK, "schedule": 30.0, "kwargs": {"source": "beat_schedule"}},
        "typo": {"task": "no.such.task", "schedule": 1.0},
        "broken": {"task": TEST_TASK, "schedule": BrokenSchedule()},
    }
    leader = broker.scheduler()
    standby = broker.scheduler()
    leader.schedule["static-echo"].last_run_at = leader.schedule["static-echo"].last_run_at - timedelta(seconds=31)
    standby.schedule["static-echo"].last_run_at = leader.schedule["static-echo"].last_run_at

    with caplog.at_level("ERROR"):
        leader.tick_once()
        standby.tick_once()  # not the leader: sends nothing
        delay = leader.tick_once()
    messages = broker.drain()

    assert [(m["headers"]["task"], m["kwargs"]) for m in messages] == [(TEST_TASK, {"source": "beat_schedule"})]
    assert messages[0]["headers"].get("celery_beat_task") is True
    assert 0 < delay <= 30
    assert "typo" not in leader.schedule and "broken" not in leader.schedule
    assert caplog.text.count("'no.such.task', which is not registered") == 1
    assert caplog.text.count("static entry 'broken': its schedule cannot be evaluated; dropped") == 1
