"""Beat's SQL on ``scheduled_tasks``: the few statements a tick runs, all index-backed.

* :func:`fetch_due`: ``status = 'active' AND next_run_at <= now ORDER BY next_run_at LIMIT n``
  and :func:`fetch_next_due`: the earliest ``next_run_at`` of an active row. Both are range
  scans of ``ix_scheduled_tasks_status_next_run_at``: their cost depends on how many rows are
  due, not on how many schedules exist.
* :func:`fetch_unscheduled`: active rows with ``next_run_at IS NULL`` (new, resumed, edited,
  flagged), the ``NULL`` end of the same index.
* :func:`advance`: the compare-and-set that makes a run happen once:
  ``UPDATE ... SET next_run_at = :new ... WHERE id = :id AND status = 'active' AND
  next_run_at = :seen``. Of two beats that read the same due row, one updates it; the other's
  statement matches nothing (on PostgreSQL it first waits for the winner's row lock, then
  re-reads the row), so it never publishes that run.

Beat's writes leave ``updated_at`` alone (the model's ``onupdate`` would bump it on every run):
it keeps meaning "last edited by someone".

Timestamps read by beat are compared back *raw* (``type_coerce(..., NullType)``): on SQLite a
raw-SQL edit may have written ``2024-01-01 10:00:00`` where the ORM writes ``...00.000000``; a
compare-and-set against the re-formatted value would never match.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    column,
    func,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.types import NullType

from dataforge.models import ScheduledTask
from dataforge.models.triggers import WRITER_SETTING
from dataforge.protocol import ScheduleStatus
from dataforge.scheduler.dispatch import RowSnapshot

__all__ = [
    "DEFINITION_COLUMNS",
    "advance",
    "advance_many",
    "fetch_due",
    "fetch_next_due",
    "fetch_row",
    "fetch_unscheduled",
    "flag",
    "mark_beat_writer",
    "reschedule",
    "revert",
]

TABLE: Final[Table] = ScheduledTask.__table__  # type: ignore[assignment]
c = TABLE.c

#: The user-written columns. A flag is only written if none of them changed since beat read
#: the row (a fix that lands meanwhile is never flagged by a stale read). Same list as the
#: revive trigger's in ddl.py.
DEFINITION_COLUMNS: Final = (
    "task_type", "task_name", "handler_path", "interval_seconds", "cron_expression", "run_at",
    "timezone", "handler_kwargs", "status", "timeout_seconds", "max_retries", "missed_run_policy",
)  # fmt: skip
_RAW: Final[TypeEngine[Any]] = NullType()
_RAW_TIMESTAMPS: Final = ("run_at", "last_run_at", "next_run_at")


def _raw(column: Column[Any]) -> ColumnElement[Any]:
    return type_coerce(column, _RAW).label(column.key)


_SNAPSHOT_COLUMNS: Final = [
    _raw(c[name]) if name in _RAW_TIMESTAMPS else c[name] for name in RowSnapshot.__slots__
]


def _snapshots(conn: Connection, stmt: Any) -> list[RowSnapshot]:
    return [RowSnapshot.from_mapping(dict(m)) for m in conn.execute(stmt).mappings()]


def mark_beat_writer(conn: Connection) -> None:
    """Tag this transaction's writes as beat's (PostgreSQL): the triggers then neither
    notify nor revive (see ddl.py). SQLite's triggers do not need to know."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT set_config(:name, 'beat', true)"), {"name": WRITER_SETTING})


def fetch_due(conn: Connection, now: datetime, limit: int) -> list[RowSnapshot]:
    stmt = (
        select(*_SNAPSHOT_COLUMNS)
        .where(c.status == ScheduleStatus.ACTIVE, c.next_run_at <= bindparam("now", now, type_=DateTime))
        .order_by(c.next_run_at, c.id)
        .limit(limit)
    )
    return _snapshots(conn, stmt)


def fetch_next_due(conn: Connection) -> tuple[int, Any] | None:
    """``(id, raw next_run_at)`` of the active row due first, or ``None``."""
    stmt = (
        select(c.id, _raw(c.next_run_at))
        .where(c.status == ScheduleStatus.ACTIVE, c.next_run_at.is_not(None))
        .order_by(c.next_run_at)
        .limit(1)
    )
    row = conn.execute(stmt).first()
    return None if row is None else (row[0], row[1])


def fetch_row(conn: Connection, row_id: int) -> RowSnapshot | None:
    rows = _snapshots(conn, select(*_SNAPSHOT_COLUMNS).where(c.id == row_id))
    return rows[0] if rows else None


def fetch_unscheduled(conn: Connection, *, after_id: int, limit: int, include_flagged: bool) -> list[RowSnapshot]:
    """Active rows without a due time, by id from ``after_id`` (flagged ones only if asked)."""
    where = [c.status == ScheduleStatus.ACTIVE, c.next_run_at.is_(None), c.id > after_id]
    if not include_flagged:
        where.append(c.invalid_reason.is_(None))
    stmt = select(*_SNAPSHOT_COLUMNS).where(*where).order_by(c.id).limit(limit)
    return _snapshots(conn, stmt)


def _raw_value(value: Any) -> ColumnElement[Any]:
    """A value written back exactly as it was read (a bare NullType bind would take the
    column's type, and SQLite's DateTime refuses the text SQLite gave us)."""
    return type_coerce(bindparam(None, value, type_=_RAW), _RAW)


def _seen(column: Column[Any], value: Any) -> ColumnElement[bool]:
    """``column`` still holds exactly ``value``, as read by beat (NULL-safe, raw for timestamps)."""
    if value is None:
        return column.is_(None)
    if column.key in _RAW_TIMESTAMPS:
        raw: ColumnElement[bool] = type_coerce(column, _RAW) == bindparam(None, value, type_=_RAW)
        return raw
    same: ColumnElement[bool] = column == value
    return same


def advance(conn: Connection, row: RowSnapshot, *, next_run_at: datetime | None, now: datetime) -> bool:
    """The dispatch compare-and-set: record the run and move the due time. ``True`` if won."""
    values: dict[str, Any] = {
        "next_run_at": next_run_at,
        "last_run_at": now,
        "run_count": c.run_count + 1,
        "invalid_reason": None,
        "invalid_at": None,
        "updated_at": c.updated_at,
    }
    if next_run_at is None:
        values["status"] = ScheduleStatus.DONE
    stmt = (
        TABLE.update()
        .where(c.id == row.id, c.status == ScheduleStatus.ACTIVE, _seen(c.next_run_at, row.next_run_at))
        .values(**values)
    )
    return conn.execute(stmt).rowcount == 1


def advance_many(
    conn: Connection, items: list[tuple[RowSnapshot, datetime | None]], *, now: datetime
) -> set[int]:
    """:func:`advance` for a whole batch; the ids whose compare-and-set won.

    PostgreSQL: ONE ``UPDATE ... FROM unnest(:ids, :seen, :next) ... RETURNING id`` (a
    thousand single-row updates would cost a thousand round trips). The batch travels as three
    array parameters, so the statement text is the same for every batch size and SQLAlchemy
    compiles it once per process (a ``VALUES`` list of N rows is a new statement per N, and
    compiling one of a thousand rows cost more than running it). Elsewhere (SQLite,
    in-process): row by row.
    """
    if conn.dialect.name != "postgresql":
        return {row.id for row, nxt in items if advance(conn, row, next_run_at=nxt, now=now)}
    if not items:
        return set()
    params = {
        "ids": [row.id for row, _ in items],
        "seen": [row.next_run_at for row, _ in items],
        "next": [nxt for _, nxt in items],
        "now": now,
    }
    return set(conn.execute(_ADVANCE_MANY_PG, params).scalars())


def _advance_many_pg() -> Any:
    batch = (
        func.unnest(
            bindparam("ids", type_=ARRAY(Integer)),
            bindparam("seen", type_=ARRAY(DateTime)),
            bindparam("next", type_=ARRAY(DateTime)),
        )
        .table_valued(column("id", Integer), column("seen", DateTime), column("next", DateTime))
        .render_derived(name="batch", with_types=False)
    )
    return (
        TABLE.update()
        .where(c.id == batch.c.id, c.status == ScheduleStatus.ACTIVE, c.next_run_at == batch.c.seen)
        .values(
            next_run_at=batch.c.next,
            last_run_at=bindparam("now", type_=DateTime),
            run_count=c.run_count + 1,
            status=case((batch.c.next.is_(None), ScheduleStatus.DONE.value), else_=c.status),
            invalid_reason=None,
            invalid_at=None,
            updated_at=c.updated_at,
        )
        .returning(c.id)
    )


_ADVANCE_MANY_PG: Final = _advance_many_pg()


def revert(conn: Connection, row: RowSnapshot, *, next_run_at: datetime | None) -> None:
    """Undo :func:`advance` for a run whose publish failed, in the same transaction (the row
    is still locked by it), so the run is due again on the next tick: never lost."""
    written = c.next_run_at.is_(None) if next_run_at is None else c.next_run_at == next_run_at
    stmt = (
        TABLE.update()
        .where(c.id == row.id, written)
        .values(
            next_run_at=_raw_value(row.next_run_at),
            last_run_at=_raw_value(row.last_run_at),
            run_count=row.run_count,
            status=row.status,
            invalid_reason=row.invalid_reason,
            updated_at=c.updated_at,
        )
    )
    conn.execute(stmt)


def _unchanged(row: RowSnapshot) -> list[ColumnElement[bool]]:
    """The row still holds what beat read: same due time and same user-written columns."""
    return [
        c.id == row.id,
        _seen(c.next_run_at, row.next_run_at),
        *(_seen(c[name], getattr(row, name)) for name in DEFINITION_COLUMNS),
    ]


def reschedule(conn: Connection, row: RowSnapshot, *, next_run_at: datetime | None) -> bool:
    """Set a due time without a run (first due time, realign, skipped missed run) and clear
    any flag; a row with no further run is marked ``done``. Only if the row is as beat read
    it: a due time computed from a definition edited meanwhile is never written."""
    values: dict[str, Any] = {
        "next_run_at": next_run_at, "invalid_reason": None, "invalid_at": None, "updated_at": c.updated_at,
    }
    if next_run_at is None:
        values["status"] = ScheduleStatus.DONE
    stmt = TABLE.update().where(and_(*_unchanged(row))).values(**values)
    return conn.execute(stmt).rowcount == 1


def flag(conn: Connection, row: RowSnapshot, *, reason: str, now: datetime) -> bool:
    """Mark a bad row: ``invalid_reason``/``invalid_at`` set, due time cleared (so the due
    query never returns it again), only if nobody edited the row since beat read it."""
    stmt = (
        TABLE.update()
        .where(and_(*_unchanged(row)))
        .values(invalid_reason=reason, invalid_at=now, next_run_at=None, updated_at=c.updated_at)
    )
    return conn.execute(stmt).rowcount == 1
