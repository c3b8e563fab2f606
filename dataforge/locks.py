"""Run locks: one key per schedule (or per kwargs), held by at most one run at a time.

The contract every backend implements (:class:`LockBackend`):

* ``acquire(key, ttl, owner=None) -> token | None``: take the lock for ``ttl`` seconds, or
  ``None`` when someone else holds it. Raises :class:`~dataforge.errors.LockUnavailableError`
  when the store cannot be reached (the caller applies ``Settings.lock_unavailable``).
* ``renew(key, token, ttl) -> bool`` and ``release(key, token) -> bool``: compare-and-act on
  the owner token; they never raise (``False`` = not ours any more, or the store is down).
* ``release_owned_by(key, owner) -> bool``: free the lock only if it is held by a token made
  for ``owner`` (a Celery task id). The worker's *parent* process uses it when a child died
  (it cannot know the child's random token, but it knows the task id), so it can never free
  a lock that another, live run holds.

Two backends: :class:`RedisLockBackend` (``SET NX PX`` + Lua compare-and-delete) when
``DATAFORGE_REDIS_URL`` is set, and :class:`DatabaseLockBackend` (the ``dataforge_locks``
lease table) otherwise, so the embedded default needs no Redis. :class:`LockRenewer` keeps
every lock a worker process holds alive from ONE background thread; a process that dies
stops renewing and its locks expire within one TTL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sqlalchemy import Interval, Table, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from dataforge.errors import LockUnavailableError
from dataforge.models import LockLease, utcnow
from dataforge.protocol import INTERNAL_PREFIX, SCHEDULE_ID_KWARG

if TYPE_CHECKING:
    from dataforge.db import Database
    from dataforge.runtime import Runtime

__all__ = [
    "KEY_PREFIX",
    "DatabaseLockBackend",
    "LockBackend",
    "LockRenewer",
    "RedisLockBackend",
    "canonical_kwargs",
    "lock_backend_for",
    "lock_key",
    "lock_renewer_for",
    "make_token",
    "token_owner",
]

log = logging.getLogger(__name__)

KEY_PREFIX = "dataforge:lock:"
#: ``dataforge_locks.key`` is VARCHAR(255); longer keys are hashed to stay within it.
_MAX_KEY = 255
#: ``dataforge_locks.owner`` is VARCHAR(64): 16 hex + "@" + at most 47 characters of owner.
_TOKEN_RANDOM = 16
_MAX_OWNER = 47


def canonical_kwargs(kwargs: Mapping[str, Any]) -> str:
    """Canonical JSON of the job parameters (internal keys dropped), the input of the hash."""
    public = {k: v for k, v in kwargs.items() if not str(k).startswith(INTERNAL_PREFIX)}
    return json.dumps(public, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def lock_key(task_name: str, kwargs: Mapping[str, Any]) -> str:
    """The run lock key of ``task_name`` called with ``kwargs``.

    ``dataforge:lock:<task_name>:<scheduled_task_id>`` for a scheduled run (two runs of the
    same schedule exclude each other whatever their kwargs), else
    ``dataforge:lock:<task_name>:kwargs-<sha256 of canonical JSON>`` (two manual calls with the
    same parameters exclude each other). ``task_name`` is whatever the task's ``lock_name``
    says (see :class:`dataforge.worker.task.DataForgeTask`), so the legacy compat shim can take
    the same key as the new task for the same schedule.
    """
    schedule_id = kwargs.get(SCHEDULE_ID_KWARG)
    if schedule_id is not None and str(schedule_id) != "":
        key = f"{KEY_PREFIX}{task_name}:{schedule_id}"
    else:
        digest = hashlib.sha256(canonical_kwargs(kwargs).encode("utf-8")).hexdigest()
        key = f"{KEY_PREFIX}{task_name}:kwargs-{digest}"
    if len(key) > _MAX_KEY:
        key = f"{KEY_PREFIX}sha256-{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return key


def _owner_part(owner: str | None) -> str:
    if not owner:
        return ""
    if len(owner) <= _MAX_OWNER:
        return owner
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:_MAX_OWNER]


def make_token(owner: str | None = None) -> str:
    """A fresh owner token: 16 random hex characters, ``@``, then the owner (a task id).

    The random part makes every acquisition distinct (a redelivered message never shares a
    token with the run it replaces); the owner part lets :meth:`LockBackend.release_owned_by`
    recognise the holder without knowing the random part.
    """
    return f"{secrets.token_hex(_TOKEN_RANDOM // 2)}@{_owner_part(owner)}"


def token_owner(token: str) -> str:
    """The owner part of a token made by :func:`make_token` ("" when it had none)."""
    return token[_TOKEN_RANDOM + 1 :]


@runtime_checkable
class LockBackend(Protocol):
    """What run locks and the beat leader lease need from a store."""

    def acquire(self, key: str, ttl: float, owner: str | None = None) -> str | None: ...

    def renew(self, key: str, token: str, ttl: float) -> bool: ...

    def release(self, key: str, token: str) -> bool: ...

    def release_owned_by(self, key: str, owner: str) -> bool: ...

    def held_by(self, key: str, owner: str) -> bool: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_OWNED_LUA = f"""
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, {_TOKEN_RANDOM + 2}) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLockBackend:
    """``SET key token NX PX ttl`` to take, Lua compare-and-act to renew and release.

    Timeouts are short and there is one quick retry (a pooled connection gone stale after a
    Redis restart), so an unreachable store is detected in seconds, not minutes, and the
    configured lock-unavailable policy applies instead of a hung task.
    """

    def __init__(self, url: str, *, socket_timeout: float = 5.0, connect_timeout: float = 2.0) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 1),
        )
        # register_script runs EVALSHA and falls back to EVAL once if the script cache was
        # flushed: one round trip per release in the steady state.
        self._release = self._client.register_script(_RELEASE_LUA)
        self._renew = self._client.register_script(_RENEW_LUA)
        self._release_owned = self._client.register_script(_RELEASE_OWNED_LUA)

    def acquire(self, key: str, ttl: float, owner: str | None = None) -> str | None:
        import redis

        token = make_token(owner)
        try:
            ok = self._client.set(key, token, nx=True, px=max(1, int(ttl * 1000)))
        except redis.RedisError as exc:
            raise LockUnavailableError(key, exc) from exc
        return token if ok else None

    def renew(self, key: str, token: str, ttl: float) -> bool:
        try:
            return bool(self._renew(keys=[key], args=[token, max(1, int(ttl * 1000))]))
        except Exception as exc:  # never raise: the caller is a renewal thread or a finally block
            log.warning("lock renew failed for %s: %r", key, exc)
            return False

    def release(self, key: str, token: str) -> bool:
        try:
            return bool(self._release(keys=[key], args=[token]))
        except Exception as exc:
            log.warning("lock release failed for %s (it expires on its own within its TTL): %r", key, exc)
            return False

    def release_owned_by(self, key: str, owner: str) -> bool:
        part = _owner_part(owner)
        if not part:
            return False
        try:
            return bool(self._release_owned(keys=[key], args=[part]))
        except Exception as exc:
            log.warning("lock release of %s for %s failed (it expires within its TTL): %r", key, owner, exc)
            return False

    def held_by(self, key: str, owner: str) -> bool:
        """Whether a token of ``owner`` holds ``key`` now (``False`` if unknown: never raises)."""
        part = _owner_part(owner)
        try:
            value = self._client.get(key)
        except Exception as exc:
            log.warning("lock lookup of %s failed: %r", key, exc)
            return False
        if value is None or not part:
            return False
        token = value.decode() if isinstance(value, bytes) else str(value)
        return token_owner(token) == part

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a client to a dead server must not mask the real error
            log.debug("closing the lock store client failed", exc_info=True)

    def after_fork(self) -> None:
        # redis-py pools notice the pid change themselves; dropping the client is enough.
        pass


# --------------------------------------------------------------------------------------------
# Database lease table
# --------------------------------------------------------------------------------------------


class DatabaseLockBackend:
    """The same contract on the ``dataforge_locks`` lease table (PostgreSQL or SQLite).

    Acquisition is ONE statement: ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE the lease
    expired RETURNING owner``; a row comes back only if we inserted or took over an expired
    lease. On PostgreSQL expiry is computed with the database clock (workers on hosts with
    skewed clocks still agree); SQLite is one machine, so Python's clock is the clock.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._table: Table = LockLease.__table__  # type: ignore[assignment]

    def _clock(self, dialect: str, ttl: float) -> tuple[Any, Any]:
        if dialect == "postgresql":
            now = func.timezone("utc", func.now())
            return now, now + bindparam("ttl", timedelta(seconds=ttl), type_=Interval)
        current = utcnow()
        return current, current + timedelta(seconds=ttl)

    def acquire(self, key: str, ttl: float, owner: str | None = None) -> str | None:
        token = make_token(owner)
        t = self._table
        try:
            engine = self.db.engine
            dialect = engine.dialect.name
            now, expires = self._clock(dialect, ttl)
            if dialect == "postgresql":
                ins: Any = postgresql.insert(t)
            elif dialect == "sqlite":
                ins = sqlite.insert(t)
            else:
                raise NotImplementedError(f"DatabaseLockBackend supports PostgreSQL and SQLite, not {dialect}")
            stmt = (
                ins.values(key=key, owner=token, expires_at=expires)
                .on_conflict_do_update(
                    index_elements=[t.c.key],
                    set_={"owner": ins.excluded.owner, "expires_at": ins.excluded.expires_at},
                    where=t.c.expires_at < now,
                )
                .returning(t.c.owner)
            )
            with engine.begin() as conn:
                row = conn.execute(stmt).first()
        except SQLAlchemyError as exc:
            raise LockUnavailableError(key, exc) from exc
        return token if row is not None and row[0] == token else None

    def renew(self, key: str, token: str, ttl: float) -> bool:
        t = self._table
        try:
            engine = self.db.engine
            _, expires = self._clock(engine.dialect.name, ttl)
            with engine.begin() as conn:
                res = conn.execute(update(t).where(t.c.key == key, t.c.owner == token).values(expires_at=expires))
            return res.rowcount == 1
        except Exception as exc:
            log.warning("lock renew failed for %s: %r", key, exc)
            return False

    def release(self, key: str, token: str) -> bool:
        t = self._table
        try:
            with self.db.engine.begin() as conn:
                res = conn.execute(delete(t).where(t.c.key == key, t.c.owner == token))
            return res.rowcount == 1
        except Exception as exc:
            log.warning("lock release failed for %s (it expires on its own within its TTL): %r", key, exc)
            return False

    def release_owned_by(self, key: str, owner: str) -> bool:
        part = _owner_part(owner)
        if not part:
            return False
        t = self._table
        try:
            with self.db.engine.begin() as conn:
                res = conn.execute(
                    delete(t).where(t.c.key == key, func.substr(t.c.owner, _TOKEN_RANDOM + 2) == part)
                )
            return res.rowcount == 1
        except Exception as exc:
            log.warning("lock release of %s for %s failed (it expires within its TTL): %r", key, owner, exc)
            return False

    def held_by(self, key: str, owner: str) -> bool:
        """Whether a live lease of ``owner`` holds ``key`` (``False`` if unknown: never raises)."""
        part = _owner_part(owner)
        if not part:
            return False
        t = self._table
        try:
            engine = self.db.engine
            now, _ = self._clock(engine.dialect.name, 0)
            with engine.connect() as conn:
                token = conn.execute(select(t.c.owner).where(t.c.key == key, t.c.expires_at >= now)).scalar()
        except Exception as exc:
            log.warning("lock lookup of %s failed: %r", key, exc)
            return False
        return token is not None and token_owner(token) == part

    def close(self) -> None:
        """The engine belongs to the runtime's :class:`~dataforge.db.Database`; nothing to close."""


def lock_backend_for(runtime: Runtime) -> LockBackend:
    """The process's lock backend: Redis when ``redis_url`` is set, else the lease table."""

    def build(rt: Runtime) -> LockBackend:
        if rt.settings.redis_url:
            return RedisLockBackend(rt.settings.redis_url)
        return DatabaseLockBackend(rt.db)

    backend: LockBackend = runtime.component("lock_backend", build)
    return backend


# --------------------------------------------------------------------------------------------
# Renewal
# --------------------------------------------------------------------------------------------


@dataclass
class _Held:
    backend: LockBackend
    key: str
    token: str
    ttl: float
    due: float


class LockRenewer:
    """Renews every lock this process holds, every ttl/3, from ONE daemon thread.

    A thread per task would double the threads of a busy worker and cost a thread start per
    run; one thread that sleeps until the earliest renewal is due costs a dict insert per
    run. The thread starts on first use (so it is created in the prefork child, never
    inherited across a fork). A renewal that fails (lock taken over, store down) drops the
    lock from the set and logs a warning: the run goes on, but is no longer exclusive.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], _Held] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._wake_at = 0.0
        #: How many locks this process lost while their run was still going.
        self.lost = 0

    def hold(self, backend: LockBackend, key: str, token: str, ttl: float) -> None:
        """Keep ``key`` alive until :meth:`drop`."""
        due = time.monotonic() + ttl / 3
        with self._cond:
            self._held[(key, token)] = _Held(backend, key, token, ttl, due)
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name="dataforge-lock-renewer", daemon=True)
                self._thread.start()
            elif due < self._wake_at:
                # Wake the thread only if this lock is due before its current sleep ends (with
                # one TTL for all runs, never): no thread switch per run in the steady state.
                self._cond.notify()

    def drop(self, key: str, token: str) -> None:
        with self._cond:
            self._held.pop((key, token), None)

    def holding(self) -> list[str]:
        with self._cond:
            return [h.key for h in self._held.values()]

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [h for h in self._held.values() if h.due <= now]
                if not due:
                    self._wake_at = min((h.due for h in self._held.values()), default=now + 60.0)
                    self._cond.wait(max(self._wake_at - now, 0.01))
                    continue
                for h in due:
                    h.due = now + h.ttl / 3
            for h in due:
                if h.backend.renew(h.key, h.token, h.ttl):
                    continue
                with self._cond:
                    still_held = self._held.pop((h.key, h.token), None) is not None
                if still_held:
                    self.lost += 1
                    log.warning("lost lock %s while its run was still going (taken over or store down)", h.key)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._held.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def after_fork(self) -> None:
        # The thread did not survive the fork; forget the parent's bookkeeping.
        self._thread = None
        self._held.clear()


def lock_renewer_for(runtime: Runtime) -> LockRenewer:
    renewer: LockRenewer = runtime.component("lock_renewer", lambda _rt: LockRenewer())
    return renewer
