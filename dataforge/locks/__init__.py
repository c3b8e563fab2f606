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

from dataforge.locks.backend import LockBackend, backend_for
from dataforge.locks.database import DatabaseLockBackend
from dataforge.locks.keys import KEY_PREFIX, canonical_kwargs, lock_key, make_token, token_owner
from dataforge.locks.redis import RedisLockBackend
from dataforge.locks.renewer import LockRenewer

__all__ = [
    "KEY_PREFIX",
    "DatabaseLockBackend",
    "LockBackend",
    "LockRenewer",
    "RedisLockBackend",
    "backend_for",
    "canonical_kwargs",
    "lock_key",
    "make_token",
    "token_owner",
]
