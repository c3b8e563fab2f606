"""Run locks in Redis: ``SET NX PX`` to take, Lua compare-and-act to renew and release."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from dataforge.errors import LockUnavailableError
from dataforge.locks.keys import TOKEN_RANDOM, make_token, owner_part, token_owner

__all__ = ["ATTEMPTS", "RedisLockBackend"]

log = logging.getLogger(__name__)

#: Tries of one command: a connection gone stale (a Redis restart) costs one retry at once on a
#: new connection, not a failed lock operation; a store that stays unreachable fails after two.
ATTEMPTS = 2

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
if v and string.sub(v, {TOKEN_RANDOM + 2}) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class _Script:
    """A Lua script run by its SHA; loaded again (``EVAL``) if the server's cache lost it."""

    def __init__(self, source: str) -> None:
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisLockBackend:
    """``SET key token NX PX ttl`` to take, Lua compare-and-act to renew and release.

    Timeouts are short and there is one quick retry (a kept connection gone stale after a
    Redis restart), so an unreachable store is detected in seconds, not minutes, and the
    configured lock-unavailable policy applies instead of a hung task.

    Each thread of a process sends its commands on a connection of its own, kept for the
    process's life, instead of through the client's pool: taking and releasing a run's lock
    are the two round trips this store adds to every run, and the pool checkout, retry
    wrapper and instrumentation around each command cost more CPU than the round trip.
    """

    def __init__(self, url: str, *, socket_timeout: float = 5.0, connect_timeout: float = 2.0) -> None:
        import redis

        self.url = url
        #: The connections' settings and factory; commands do not go through its pool.
        self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout)
        self._release = _Script(_RELEASE_LUA)
        self._renew = _Script(_RENEW_LUA)
        self._release_owned = _Script(_RELEASE_OWNED_LUA)
        self._local = threading.local()
        #: Every thread's kept connection, so close() can close them all.
        self._kept: list[Any] = []
        self._kept_lock = threading.Lock()

    # -- commands on the thread's kept connection ----------------------------------------------
    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            # A connection made before a fork is the parent's socket: the child makes its own.
            conn = self._client.connection_pool.make_connection()
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._kept_lock:
                self._kept.append(conn)
        return conn

    def _command(self, *args: Any) -> Any:
        """One command and its reply. A connection or timeout error drops the connection and
        the command is sent again on a new one, up to :data:`ATTEMPTS` tries; the last error
        is raised."""
        import redis

        conn = self._connection()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                conn.send_command(*args)
                return conn.read_response()
            except (redis.ConnectionError, redis.TimeoutError):
                # The reply to a timed-out command may still arrive: never reuse the socket.
                conn.disconnect()
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _run(self, script: _Script, key: str, *args: Any) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return self._command("EVALSHA", script.sha, 1, key, *args)
        except NoScriptError:
            # A server that has not seen the script yet, or lost it (a restart, SCRIPT FLUSH):
            # EVAL runs it and caches it again.
            return self._command("EVAL", script.source, 1, key, *args)

    # -- the store contract ----------------------------------------------------------------------
    def acquire(self, key: str, ttl: float, owner: str | None = None) -> str | None:
        import redis

        token = make_token(owner)
        try:
            ok = self._command("SET", key, token, "NX", "PX", max(1, int(ttl * 1000)))
        except redis.RedisError as exc:
            raise LockUnavailableError(key, exc) from exc
        return token if ok else None

    def renew(self, key: str, token: str, ttl: float) -> bool:
        try:
            return bool(self._run(self._renew, key, token, max(1, int(ttl * 1000))))
        except Exception as exc:  # never raise: the caller is a renewal thread or a finally block
            log.warning("lock renew failed for %s: %r", key, exc)
            return False

    def release(self, key: str, token: str) -> bool:
        try:
            return bool(self._run(self._release, key, token))
        except Exception as exc:
            log.warning("lock release failed for %s (it expires on its own within its TTL): %r", key, exc)
            return False

    def release_owned_by(self, key: str, owner: str) -> bool:
        part = owner_part(owner)
        if not part:
            return False
        try:
            return bool(self._run(self._release_owned, key, part))
        except Exception as exc:
            log.warning("lock release of %s for %s failed (it expires within its TTL): %r", key, owner, exc)
            return False

    def held_by(self, key: str, owner: str) -> bool:
        """Whether a token of ``owner`` holds ``key`` now (``False`` if unknown: never raises)."""
        part = owner_part(owner)
        try:
            value = self._command("GET", key)
        except Exception as exc:
            log.warning("lock lookup of %s failed: %r", key, exc)
            return False
        if value is None or not part:
            return False
        token = value.decode() if isinstance(value, bytes) else str(value)
        return token_owner(token) == part

    def close(self) -> None:
        with self._kept_lock:
            kept, self._kept = self._kept, []
        self._local = threading.local()
        for conn in kept:
            conn.disconnect()  # shuts a socket down only in the process that opened it
        try:
            self._client.close()
        except Exception:  # closing a client to a dead server must not mask the real error
            log.debug("closing the lock store client failed", exc_info=True)

    def after_fork(self) -> None:
        # Inherited connections are the parent's sockets: forgotten here, never closed.
        with self._kept_lock:
            self._kept = []
        self._local = threading.local()
