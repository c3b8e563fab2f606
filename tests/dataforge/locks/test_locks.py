"""Run locks: the key function, both backends on real stores, renewal, unreachable stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text

from dataforge.db import Database
from dataforge.errors import LockUnavailableError
from dataforge.locks import (
    DatabaseLockBackend,
    LockBackend,
    LockRenewer,
    RedisLockBackend,
    lock_key,
    make_token,
    token_owner,
)
from dataforge.locks import redis as redis_locks
from dataforge.models import LockLease, utcnow
from dataforge.runtime import Runtime
from dataforge.scheduler.schedules import parse_db_datetime
from dataforge.settings import Settings
from tests.conftest import create_schema
from tests.dataforge.worker.helpers import noted
from tests.support.servers import PrivateRedis

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_PG = "postgresql://nobody@127.0.0.1:1/nothing"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.05)


# -- lock_key ---------------------------------------------------------------------------------


def test_key_of_a_scheduled_run_is_task_and_schedule() -> None:
    assert lock_key("dataforge.sync", {"scheduled_task_id": 12, "days": 1}) == "dataforge:lock:dataforge.sync:12"
    # Other kwargs do not matter: two runs of one schedule always exclude each other.
    assert lock_key("dataforge.sync", {"scheduled_task_id": 12, "days": 2}) == "dataforge:lock:dataforge.sync:12"


def test_key_without_schedule_hashes_canonical_kwargs() -> None:
    a = lock_key("t", {"a": 1, "b": [1, 2]})
    assert a.startswith("dataforge:lock:t:kwargs-") and len(a.rsplit("-", 1)[1]) == 64
    assert a == lock_key("t", {"b": [1, 2], "a": 1})  # key order does not matter
    assert a == lock_key("t", {"a": 1, "b": [1, 2], "_lock_key": "old"})  # internal keys do not matter
    assert a != lock_key("t", {"a": 2, "b": [1, 2]})
    assert lock_key("t", {"scheduled_task_id": None, "a": 1}) != lock_key("t", {"scheduled_task_id": 3, "a": 1})


def test_very_long_keys_fit_the_lease_table() -> None:
    key = lock_key("x" * 300, {"scheduled_task_id": 1})
    assert len(key) <= 255 and key.startswith("dataforge:lock:sha256-")
    assert key == lock_key("x" * 300, {"scheduled_task_id": 1})


def test_token_carries_its_owner() -> None:
    token = make_token("3f1c-task-id")
    assert token_owner(token) == "3f1c-task-id"
    assert make_token("3f1c-task-id") != token
    assert token_owner(make_token(None)) == ""
    assert len(make_token("x" * 500)) <= 64  # dataforge_locks.owner is VARCHAR(64)


# -- backends on real stores -----------------------------------------------------------------


@pytest.fixture(params=["redis", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[LockBackend]:
    if request.param == "redis":
        b: LockBackend = RedisLockBackend(request.getfixturevalue("redis_url"))
        yield b
        b.close()
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    create_schema(url)
    db = Database(url)
    yield DatabaseLockBackend(db)
    db.dispose()


def test_acquire_is_exclusive_and_release_compares_the_token(backend: LockBackend) -> None:
    token = backend.acquire("k", 30)
    assert token is not None
    assert backend.acquire("k", 30) is None
    assert backend.acquire("other", 30) is not None
    assert backend.release("k", "not-the-token") is False
    assert backend.acquire("k", 30) is None
    assert backend.release("k", token) is True
    assert backend.release("k", token) is False  # idempotent: already gone
    assert backend.acquire("k", 30) is not None


def test_an_expired_lease_can_be_taken_over_and_the_old_token_is_dead(backend: LockBackend) -> None:
    old = backend.acquire("k", 0.3)
    assert old is not None
    new: list[str | None] = []
    taken_over = lambda: noted(new, backend.acquire("k", 30), lambda: new[-1] is not None)  # noqa: E731
    wait_until(taken_over, 10, "expired lease taken over")
    assert backend.renew("k", old, 30) is False
    assert backend.release("k", old) is False
    assert backend.acquire("k", 30) is None  # the new holder still holds it


def test_renew_extends_the_lease(backend: LockBackend) -> None:
    token = backend.acquire("k", 0.5)
    assert token is not None
    assert backend.renew("k", token, 60) is True
    time.sleep(1.0)  # longer than the original lease: only the renewal can keep it
    assert backend.acquire("k", 30) is None
    assert backend.renew("k", "wrong", 60) is False


def test_release_owned_by_frees_only_the_owners_lock(backend: LockBackend) -> None:
    assert backend.acquire("k", 30, owner="task-1") is not None
    assert backend.release_owned_by("k", "task-2") is False
    assert backend.release_owned_by("k", "") is False
    assert backend.acquire("k", 30) is None
    assert backend.release_owned_by("k", "task-1") is True
    long_owner = "celery-task-" + "x" * 100
    assert backend.acquire("k", 30, owner=long_owner) is not None
    assert backend.release_owned_by("k", long_owner) is True


def test_held_by_names_the_owner_of_a_live_lock_only(backend: LockBackend) -> None:
    assert backend.held_by("k", "task-1") is False  # free
    token = backend.acquire("k", 0.5, owner="task-1")
    assert token is not None
    assert backend.held_by("k", "task-1") is True
    assert backend.held_by("k", "task-2") is False
    assert backend.held_by("k", "") is False
    wait_until(lambda: not backend.held_by("k", "task-1"), 10, "an expired lease is not held by anyone")
    long_owner = "celery-task-" + "x" * 100
    assert backend.acquire("k", 30, owner=long_owner) is not None
    assert backend.held_by("k", long_owner) is True


def test_concurrent_acquirers_get_one_token(backend: LockBackend) -> None:
    barrier = threading.Barrier(8)
    tokens: list[str | None] = []

    def grab() -> None:
        barrier.wait()
        tokens.append(backend.acquire("contended", 30))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(tokens) == 8
    assert len([t for t in tokens if t]) == 1


@pytest.mark.postgres
def test_database_expiry_uses_the_database_clock(pg_url: str) -> None:
    create_schema(pg_url)
    db = Database(pg_url)
    backend = DatabaseLockBackend(db)
    assert backend.acquire("k", 3600) is not None
    with db.session() as s:
        expires = s.scalar(select(LockLease.expires_at).where(LockLease.key == "k"))
    assert expires is not None
    # Naive UTC, one hour ahead (the database's clock, so within a generous margin of ours).
    assert abs((expires - utcnow()) - timedelta(hours=1)) < timedelta(minutes=5)
    db.dispose()


# -- unreachable stores ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [lambda: RedisLockBackend(UNREACHABLE_REDIS), lambda: DatabaseLockBackend(Database(UNREACHABLE_PG))],
    ids=["redis", "postgres"],
)
def test_unreachable_store_raises_on_acquire_and_never_on_release(make: Callable[[], LockBackend]) -> None:
    backend = make()
    with pytest.raises(LockUnavailableError) as info:
        backend.acquire("dataforge:lock:t:1", 30)
    assert info.value.key == "dataforge:lock:t:1" and info.value.cause is not None
    assert backend.release("dataforge:lock:t:1", "token") is False
    assert backend.renew("dataforge:lock:t:1", "token", 30) is False
    assert backend.release_owned_by("dataforge:lock:t:1", "task") is False
    assert backend.held_by("dataforge:lock:t:1", "task") is False
    backend.close()


#: The production Redis lock store's connections: connect timeout, socket timeout, tries per command.
REDIS_STORE_TIMEOUTS = (2.0, 5.0, 2)


def test_the_runtimes_redis_lock_store_has_short_timeouts_and_one_retry(tmp_path: Path) -> None:
    """docs/runtime.md: "short socket timeouts and one retry, so an unreachable store is noticed
    in seconds": the client the runtime builds gives up on a connect after 2 s and on an answer
    after 5 s, and retries once (at worst about 14 s, never the OS's minutes). The next test
    shows an acquisition honours these values against a store that never answers."""
    runtime = Runtime(Settings.from_env({"DATAFORGE_REDIS_URL": UNREACHABLE_REDIS}, cwd=tmp_path))
    try:
        backend = runtime.locks
        assert isinstance(backend, RedisLockBackend)
        client: redis.Redis = backend._client
        options = client.connection_pool.connection_kwargs
        assert (options["socket_connect_timeout"], options["socket_timeout"], redis_locks.ATTEMPTS) \
            == REDIS_STORE_TIMEOUTS
    finally:
        runtime.close()


@pytest.mark.slow
def test_a_frozen_redis_lock_store_fails_an_acquisition_after_its_timeouts(tmp_path: Path) -> None:
    """A Redis that accepts connections and never answers (SIGSTOP: the kernel still completes
    the handshake) is the case no "connection refused" reveals. The acquisition must raise
    ``LockUnavailableError`` after its two attempts of one socket timeout each, not hang.
    Short timeouts keep the test quick; the defaults are pinned by the test above."""
    timeout = 0.5
    with PrivateRedis.running(tmp_path / "redis") as server:
        backend = RedisLockBackend(server.url(), socket_timeout=timeout, connect_timeout=timeout)
        try:
            assert backend.acquire("warm", 5) is not None  # connected while it still answered
            server.freeze()
            outcome: list[BaseException | str | None] = []

            def acquire() -> None:
                try:
                    outcome.append(backend.acquire("dataforge:lock:t:1", 30))
                except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                    outcome.append(exc)

            started = time.monotonic()
            worker = threading.Thread(target=acquire, daemon=True)
            worker.start()
            # Two attempts of one socket timeout each, plus a second for a loaded machine.
            bound = 2 * timeout + 1.0
            worker.join(bound + 10)
            took = time.monotonic() - started
            assert outcome, f"the acquisition still hung {took:.1f}s after the store froze"
            assert isinstance(outcome[0], LockUnavailableError), outcome
            assert took <= bound, f"noticed after {took:.1f}s, not within 2 x {timeout}s (+1 s)"
        finally:
            server.thaw()
            backend.close()


def test_a_redis_restart_costs_a_lock_operation_nothing(tmp_path: Path) -> None:
    """A restart leaves every kept connection dead and empties the server's script cache. The
    next acquisition is retried once on a new connection, and the release, whose script the
    server no longer knows (``NOSCRIPT``), loads it again: neither fails."""
    with PrivateRedis.running(tmp_path / "redis") as server:
        backend = RedisLockBackend(server.url())
        try:
            token = backend.acquire("before", 30)
            assert token is not None and backend.release("before", token)
            server.kill()
            server.start()
            token = backend.acquire("after", 30)
            assert token is not None, "the key is new on a fresh server: the acquisition must succeed"
            assert backend.renew("after", token, 30)
            assert backend.release("after", token), "the release must load its script again"
            assert backend.acquire("after", 30) is not None, "the lock is free after its release"
        finally:
            backend.close()


def _client_id(backend: RedisLockBackend) -> int:
    return int(backend._command("CLIENT", "ID"))


def test_each_thread_sends_on_a_connection_of_its_own(redis_url: str) -> None:
    """A renewal thread and the task thread never share a socket (a reply could reach the
    wrong caller); each keeps one connection across its commands."""
    backend = RedisLockBackend(redis_url)
    try:
        mine = _client_id(backend)
        assert _client_id(backend) == mine, "a thread keeps its connection between commands"
        theirs: list[int] = []
        other = threading.Thread(target=lambda: theirs.append(_client_id(backend)))
        other.start()
        other.join(10)
        assert theirs and theirs[0] != mine
    finally:
        backend.close()


def test_a_forked_child_never_sends_on_its_parents_connection(redis_url: str) -> None:
    """A prefork child inherits the parent's socket; it must open its own, and the parent's
    connection keeps working after the child is gone."""
    import os

    backend = RedisLockBackend(redis_url)
    try:
        parent = _client_id(backend)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report the connection it used, then leave without cleanup
            code = 1
            try:
                os.write(write, str(_client_id(backend)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as pipe:
            child = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0 and child, "the child could not use the store"
        assert int(child) != parent, "the child sent its command on the parent's connection"
        assert _client_id(backend) == parent, "the parent's connection broke when the child used the store"
    finally:
        backend.close()


# -- renewal ---------------------------------------------------------------------------------


def lease_left(backend: LockBackend, key: str) -> float:
    """Seconds the store will keep ``key`` (its own clock), read from the store itself."""
    if isinstance(backend, RedisLockBackend):
        client = redis.Redis.from_url(backend.url)
        try:
            return float(client.pttl(key)) / 1000
        finally:
            client.close()
    assert isinstance(backend, DatabaseLockBackend)
    with backend.db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            sql = "SELECT EXTRACT(EPOCH FROM expires_at - timezone('utc', now())) FROM dataforge_locks WHERE key = :k"
            return float(conn.execute(text(sql), {"k": key}).scalar_one())
        expires = conn.execute(text("SELECT expires_at FROM dataforge_locks WHERE key = :k"), {"k": key}).scalar_one()
    return (parse_db_datetime(expires) - utcnow()).total_seconds()  # type: ignore[operator]


def test_a_lease_lasts_its_ttl_and_a_renewal_its_new_ttl(backend: LockBackend) -> None:
    """docs/runtime.md: a killed worker's lock frees itself within one DATAFORGE_LOCK_TTL. The
    store must keep a lease for the TTL asked, not longer (read from the store, no waiting)."""
    token = backend.acquire("ttl", 30)
    assert token is not None
    assert 29.0 < lease_left(backend, "ttl") <= 30.0
    assert backend.renew("ttl", token, 45)
    assert 44.0 < lease_left(backend, "ttl") <= 45.0


def test_renewer_keeps_a_lock_beyond_its_ttl(backend: LockBackend) -> None:
    # Renewed every ttl/3: a 1.5 s lease leaves a second of slack for a loaded machine.
    ttl = 1.5
    token = backend.acquire("long-run", ttl)
    assert token is not None
    renewer = LockRenewer()
    try:
        renewer.hold(backend, "long-run", token, ttl)
        end = time.monotonic() + 2 * ttl
        while time.monotonic() < end:
            assert backend.acquire("long-run", ttl) is None, "the lock expired while its run was going"
            time.sleep(ttl / 4)
        assert renewer.lost == 0
    finally:
        renewer.drop("long-run", token)
        renewer.close()
    assert backend.release("long-run", token) is True


def test_renewer_drops_a_lock_it_can_no_longer_renew(redis_url: str) -> None:
    backend = RedisLockBackend(redis_url)
    token = backend.acquire("k", 0.6)
    assert token is not None
    redis.Redis.from_url(redis_url).set("k", "someone-else")  # taken over behind our back
    renewer = LockRenewer()
    try:
        renewer.hold(backend, "k", token, 0.6)
        wait_until(lambda: renewer.lost == 1, 10, "renewer noticed the lost lock")
        assert renewer.holding() == []
    finally:
        renewer.close()
        backend.close()


def test_one_renewer_thread_for_many_locks(redis_url: str) -> None:
    backend = RedisLockBackend(redis_url)
    renewer = LockRenewer()
    try:
        before = threading.active_count()
        for i in range(20):
            key = f"k{i}"
            token = backend.acquire(key, 30)
            assert token is not None
            renewer.hold(backend, key, token, 30)
        assert threading.active_count() == before + 1
        assert len(renewer.holding()) == 20
    finally:
        renewer.close()
        backend.close()


def test_the_runtimes_lock_store_follows_the_settings(tmp_path: object, redis_url: str) -> None:
    embedded = Runtime(Settings.from_env({}, cwd=tmp_path))  # type: ignore[arg-type]
    server = Runtime(Settings.from_env({"DATAFORGE_REDIS_URL": redis_url}, cwd=tmp_path))  # type: ignore[arg-type]
    try:
        assert isinstance(embedded.locks, DatabaseLockBackend)
        assert isinstance(server.locks, RedisLockBackend)
        assert server.locks is server.locks  # one per process
    finally:
        embedded.close()
        server.close()
