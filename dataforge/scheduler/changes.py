"""How beat learns that ``scheduled_tasks`` changed, without asking on every tick.

* :class:`PostgresChangeFeed`: ``LISTEN dataforge_schedules`` on a dedicated autocommit
  connection, fed by the triggers of :mod:`dataforge.models.triggers` (raw SQL and bulk updates
  included). Beat blocks on the socket between ticks, so a committed change wakes it within
  milliseconds, and an idle tick is a ``select()`` on that socket: no query.
* :class:`PollingChangeFeed`: SQLite (no NOTIFY), or PostgreSQL without the triggers. It
  never reports a change; beat re-reads the due time every ``max_interval`` instead, so an
  edit takes effect within that bound.

A feed that loses its connection says "changed" (it may have missed notifications) and is not
``live`` until it reconnects, so beat falls back to polling meanwhile.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any, Protocol

from sqlalchemy.engine import make_url

from dataforge.models.triggers import NOTIFY_CHANNEL

__all__ = ["ChangeFeed", "PollingChangeFeed", "PostgresChangeFeed", "conninfo_for"]

log = logging.getLogger(__name__)


class ChangeFeed(Protocol):
    """What beat needs from a change source."""

    @property
    def live(self) -> bool:
        """Changes are pushed: no periodic re-read is needed while this holds."""
        ...

    def poll(self) -> bool:
        """Non-blocking: whether something may have changed since the last call."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a change (only called while :attr:`live`)."""
        ...

    def close(self) -> None: ...


class PollingChangeFeed:
    """No push: beat re-reads on its own schedule."""

    live = False

    def poll(self) -> bool:
        return False

    def wait(self, timeout: float) -> bool:
        time.sleep(max(0.0, timeout))
        return False

    def close(self) -> None:
        pass


def conninfo_for(sqlalchemy_url: str) -> str:
    """A libpq URL for psycopg from a SQLAlchemy one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PostgresChangeFeed:
    """``LISTEN`` on its own connection; reconnects at most every ``retry_every`` seconds."""

    def __init__(self, url: str, *, retry_every: float = 5.0, connect_timeout: int = 5) -> None:
        self._conninfo = conninfo_for(url)
        self._retry_every = retry_every
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        self._next_connect = 0.0
        self._down_logged = False

    @property
    def live(self) -> bool:
        return self._conn is not None

    def _connect(self) -> bool:
        import psycopg

        now = time.monotonic()
        if now < self._next_connect:
            return False
        self._next_connect = now + self._retry_every
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout)
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as exc:
            if not self._down_logged:
                log.warning("beat: cannot LISTEN for schedule changes (%s); re-reading every max_interval", exc)
                self._down_logged = True
            return False
        if self._down_logged:
            log.info("beat: listening for schedule changes again")
            self._down_logged = False
        self._conn = conn
        return True

    def _drain(self) -> bool:
        import psycopg

        try:
            return any(True for _ in self._conn.notifies(timeout=0))
        except psycopg.Error as exc:
            log.warning("beat: the LISTEN connection broke (%s); reconnecting", exc)
            self._drop()
            return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken socket may fail to close; it is gone either way
                log.debug("closing the LISTEN connection failed", exc_info=True)

    def _readable(self, timeout: float) -> bool:
        try:
            ready, _, _ = select.select([self._conn.fileno()], [], [], max(0.0, timeout))
        except (OSError, ValueError):
            return True  # closed socket: let _drain find out and reconnect
        return bool(ready)

    def poll(self) -> bool:
        if self._conn is None:
            # (Re)connected: anything may have happened while we were not listening.
            return self._connect()
        return self._readable(0.0) and self._drain()

    def wait(self, timeout: float) -> bool:
        if self._conn is None:
            time.sleep(max(0.0, timeout))
            return self.poll()
        return self._readable(timeout) and self._drain()

    def close(self) -> None:
        self._drop()
