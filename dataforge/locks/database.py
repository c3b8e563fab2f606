"""Run locks in the database: the ``dataforge_locks`` lease table, for setups without Redis."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Interval, Table, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from dataforge.errors import LockUnavailableError
from dataforge.locks.keys import TOKEN_RANDOM, make_token, owner_part, token_owner
from dataforge.models import LockLease, utcnow

if TYPE_CHECKING:
    from dataforge.db import Database

__all__ = ["DatabaseLockBackend"]

log = logging.getLogger(__name__)


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
        part = owner_part(owner)
        if not part:
            return False
        t = self._table
        try:
            with self.db.engine.begin() as conn:
                res = conn.execute(
                    delete(t).where(t.c.key == key, func.substr(t.c.owner, TOKEN_RANDOM + 2) == part)
                )
            return res.rowcount == 1
        except Exception as exc:
            log.warning("lock release of %s for %s failed (it expires within its TTL): %r", key, owner, exc)
            return False

    def held_by(self, key: str, owner: str) -> bool:
        """Whether a live lease of ``owner`` holds ``key`` (``False`` if unknown: never raises)."""
        part = owner_part(owner)
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

    def after_fork(self) -> None:
        """The runtime's database drops its inherited pool itself."""
