"""The lock store contract, and the choice of store for a process.

Run locks and beat's leader lease need the same five operations from a store; both stores
(:mod:`dataforge.locks.redis`, :mod:`dataforge.locks.database`) implement them with one
compare-and-act round trip each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from dataforge.db import Database
    from dataforge.settings import Settings

__all__ = ["LockBackend", "backend_for"]


@runtime_checkable
class LockBackend(Protocol):
    """What run locks and the beat leader lease need from a store."""

    def acquire(self, key: str, ttl: float, owner: str | None = None) -> str | None: ...

    def renew(self, key: str, token: str, ttl: float) -> bool: ...

    def release(self, key: str, token: str) -> bool: ...

    def release_owned_by(self, key: str, owner: str) -> bool: ...

    def held_by(self, key: str, owner: str) -> bool: ...

    def close(self) -> None: ...

    def after_fork(self) -> None: ...


def backend_for(settings: Settings, db: Database) -> LockBackend:
    """Redis when ``redis_url`` is set, else the database's lease table (the embedded default)."""
    # Imported here: each store's module imports this one for the protocol.
    if settings.redis_url:
        from dataforge.locks.redis import RedisLockBackend

        return RedisLockBackend(settings.redis_url)
    from dataforge.locks.database import DatabaseLockBackend

    return DatabaseLockBackend(db)
