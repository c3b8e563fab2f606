"""Run locks in Redis: ``SET NX PX`` to take, Lua compare-and-act to renew and release."""

from __future__ import annotations

import logging

from dataforge.errors import LockUnavailableError
from dataforge.locks.keys import TOKEN_RANDOM, make_token, owner_part, token_owner

__all__ = ["RedisLockBackend"]

log = logging.getLogger(__name__)

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
        part = owner_part(owner)
        if not part:
            return False
        try:
            return bool(self._release_owned(keys=[key], args=[part]))
        except Exception as exc:
            log.warning("lock release of %s for %s failed (it expires within its TTL): %r", key, owner, exc)
            return False

    def held_by(self, key: str, owner: str) -> bool:
        """Whether a token of ``owner`` holds ``key`` now (``False`` if unknown: never raises)."""
        part = owner_part(owner)
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
