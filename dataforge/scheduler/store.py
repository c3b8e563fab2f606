"""Beat's SQL on ``scheduled_tasks``: the few statements a tick runs, all index-backed.

One :class:`ScheduleStore` per table shape (:func:`store_for` looks at the table once per
leadership term): the new beat keeps running on a database rolled back below
``0008_schedule_policies`` (the rollback runs at ``0002_expand``), where the policy and counter
columns do not exist; it then reads their defaults and writes none of them.

* :meth:`~ScheduleStore.fetch_due`: ``status = 'active' AND next_run_at <= now ORDER BY next_run_at LIMIT n``
  and :meth:`~ScheduleStore.fetch_next_due`: the earliest ``next_run_at`` of an active row. Both are range
  scans of ``ix_scheduled_tasks_status_next_run_at``: their cost depends on how many rows are
  due, not on how many schedules exist.
* :meth:`~ScheduleStore.fetch_unscheduled`: active rows with ``next_run_at IS NULL`` (new, resumed, edited,
  flagged), the ``NULL`` end of the same index.
* :meth:`~ScheduleStore.advance`: the compare-and-set that makes a run happen once:
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

from collections.abc import Sequence
from dataclasses import dataclass
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
    inspect,
    literal,
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
    "POLICY_COLUMNS",
    "Advance",
    "ScheduleStore",
    "mark_beat_writer",
    "missing_policy_columns",
    "store_for",
]

TABLE: Final[Table] = ScheduledTask.__table__  # type: ignore[assignment]
c = TABLE.c

#: The columns revision 0008_schedule_policies adds (a database rolled back below it lacks them).
POLICY_COLUMNS: Final = (
    "overlap_policy", "catchup_window_seconds", "jitter_seconds",
    "missed_count", "skipped_count", "expired_count", "lost_count",
)  # fmt: skip
#: The user-written columns. A flag is only written if none of them changed since beat read
#: the row (a fix that lands meanwhile is never flagged by a stale read). Same list as the
#: revive trigger's (dataforge/models/triggers.py).
DEFINITION_COLUMNS: Final = (
    "task_type", "task_name", "handler_path", "interval_seconds", "cron_expression", "run_at",
    "timezone", "handler_kwargs", "status", "timeout_seconds", "max_retries", "missed_run_policy",
    "overlap_policy", "catchup_window_seconds", "jitter_seconds",
)  # fmt: skip
_RAW: Final[TypeEngine[Any]] = NullType()
_RAW_TIMESTAMPS: Final = ("run_at", "last_run_at", "next_run_at")
#: What a row of a table without the policy columns reads as.
_ABSENT_DEFAULTS: Final[dict[str, Any]] = {"overlap_policy": None, "catchup_window_seconds": None,
                                           "jitter_seconds": None, "missed_count": 0}


def _raw(col: Column[Any]) -> ColumnElement[Any]:
    return type_coerce(col, _RAW).label(col.key)


def _raw_value(value: Any) -> ColumnElement[Any]:
    """A value written back exactly as it was read (a bare NullType bind would take the
    column's type, and SQLite's DateTime refuses the text SQLite gave us)."""
    return type_coerce(bindparam(None, value, type_=_RAW), _RAW)


def _seen(col: Column[Any], value: Any) -> ColumnElement[bool]:
    """``col`` still holds exactly ``value``, as read by beat (NULL-safe, raw for timestamps)."""
    if value is None:
        return col.is_(None)
    if col.key in _RAW_TIMESTAMPS:
        raw: ColumnElement[bool] = type_coerce(col, _RAW) == bindparam(None, value, type_=_RAW)
        return raw
    same: ColumnElement[bool] = col == value
    return same


def mark_beat_writer(conn: Connection) -> None:
    """Tag this transaction's writes as beat's (PostgreSQL): the triggers then neither
    notify nor revive (dataforge/models/triggers.py). SQLite's triggers do not need to know."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT set_config(:name, 'beat', true)"), {"name": WRITER_SETTING})


@dataclass(frozen=True, slots=True)
class Advance:
    """One row's dispatch: ``runs`` runs sent, ``missed`` counted, next due ``next_run_at``
    (``None``: a once row, marked done)."""

    row: RowSnapshot
    next_run_at: datetime | None
    runs: int = 1
    missed: int = 0


class ScheduleStore:
    """Beat's statements for one shape of the table (with or without the policy columns)."""

    def __init__(self, *, policies: bool = True) -> None:
        self.policies = policies
        snapshot: list[ColumnElement[Any]] = []
        for name in RowSnapshot.__slots__:
            if not policies and name in POLICY_COLUMNS:
                snapshot.append(literal(_ABSENT_DEFAULTS[name], type_=_RAW).label(name))
            elif name in _RAW_TIMESTAMPS:
                snapshot.append(_raw(c[name]))
            else:
                snapshot.append(c[name])
        self._snapshot = snapshot
        self._definition = tuple(n for n in DEFINITION_COLUMNS if policies or n not in POLICY_COLUMNS)
        self._advance_many_pg = self._build_advance_many_pg()

    # -- reading ------------------------------------------------------------------------------
    def _snapshots(self, conn: Connection, stmt: Any) -> list[RowSnapshot]:
        # Positional: the select lists RowSnapshot's fields in order (no dict per row).
        return [RowSnapshot(*row) for row in conn.execute(stmt)]

    def fetch_due(self, conn: Connection, now: datetime, limit: int, *, lock: bool = False) -> list[RowSnapshot]:
        """Active rows due by ``now``, earliest first. ``lock`` (PostgreSQL): lock them for this
        transaction and skip rows another transaction holds, so concurrent dispatch batches
        (beat's own, or a second beat's) read disjoint rows instead of waiting for each other."""
        stmt = (
            select(*self._snapshot)
            .where(c.status == ScheduleStatus.ACTIVE, c.next_run_at <= bindparam("now", now, type_=DateTime))
            # Index order alone (no tie-break on id): the scan then stops after `limit` rows. With
            # `id` added, rows sharing a due time (a top-of-the-hour burst) need a sort of all
            # of them, and PostgreSQL reads the whole table for each batch.
            .order_by(c.next_run_at)
            .limit(limit)
        )
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return self._snapshots(conn, stmt)

    def fetch_next_due(self, conn: Connection) -> tuple[int, Any] | None:
        """``(id, raw next_run_at)`` of the active row due first, or ``None``."""
        stmt = (
            select(c.id, _raw(c.next_run_at))
            .where(c.status == ScheduleStatus.ACTIVE, c.next_run_at.is_not(None))
            .order_by(c.next_run_at)
            .limit(1)
        )
        row = conn.execute(stmt).first()
        return None if row is None else (row[0], row[1])

    def fetch_row(self, conn: Connection, row_id: int) -> RowSnapshot | None:
        rows = self._snapshots(conn, select(*self._snapshot).where(c.id == row_id))
        return rows[0] if rows else None

    def fetch_unscheduled(
        self, conn: Connection, *, after_id: int, limit: int, include_flagged: bool
    ) -> list[RowSnapshot]:
        """Active rows without a due time, by id from ``after_id`` (flagged ones only if asked)."""
        where = [c.status == ScheduleStatus.ACTIVE, c.next_run_at.is_(None), c.id > after_id]
        if not include_flagged:
            where.append(c.invalid_reason.is_(None))
        stmt = select(*self._snapshot).where(*where).order_by(c.id).limit(limit)
        return self._snapshots(conn, stmt)

    # -- dispatch -------------------------------------------------------------------------------
    def advance(self, conn: Connection, item: Advance, *, now: datetime) -> bool:
        """The dispatch compare-and-set: record the run(s) and move the due time. ``True`` if won."""
        row = item.row
        values: dict[str, Any] = {
            "next_run_at": item.next_run_at,
            "last_run_at": now,
            "run_count": c.run_count + item.runs,
            "invalid_reason": None,
            "invalid_at": None,
            "updated_at": c.updated_at,
        }
        if self.policies and item.missed:
            values["missed_count"] = c.missed_count + item.missed
        if item.next_run_at is None:
            values["status"] = ScheduleStatus.DONE
        stmt = (
            TABLE.update()
            .where(c.id == row.id, c.status == ScheduleStatus.ACTIVE, _seen(c.next_run_at, row.next_run_at))
            .values(**values)
        )
        return conn.execute(stmt).rowcount == 1

    def advance_many(self, conn: Connection, items: Sequence[Advance], *, now: datetime) -> set[int]:
        """:meth:`advance` for a whole batch; the ids whose compare-and-set won.

        PostgreSQL: ONE ``UPDATE ... FROM unnest(:ids, :seen, :next, :runs, :missed) ...
        RETURNING id`` (a thousand single-row updates would cost a thousand round trips). The
        batch travels as array parameters, so the statement text is the same for every batch
        size and SQLAlchemy compiles it once per process (a ``VALUES`` list of N rows is a new
        statement per N, and compiling one of a thousand rows cost more than running it).
        Elsewhere (SQLite, in-process): row by row.
        """
        if conn.dialect.name != "postgresql":
            return {item.row.id for item in items if self.advance(conn, item, now=now)}
        if not items:
            return set()
        params = {
            "ids": [item.row.id for item in items],
            "seen": [item.row.next_run_at for item in items],
            "next": [item.next_run_at for item in items],
            "runs": [item.runs for item in items],
            "missed": [item.missed for item in items],
            "now": now,
        }
        return set(conn.execute(self._advance_many_pg, params).scalars())

    def _build_advance_many_pg(self) -> Any:
        batch = (
            func.unnest(
                bindparam("ids", type_=ARRAY(Integer)),
                bindparam("seen", type_=ARRAY(DateTime)),
                bindparam("next", type_=ARRAY(DateTime)),
                bindparam("runs", type_=ARRAY(Integer)),
                bindparam("missed", type_=ARRAY(Integer)),
            )
            .table_valued(
                column("id", Integer), column("seen", DateTime), column("next", DateTime),
                column("runs", Integer), column("missed", Integer),
            )  # fmt: skip
            .render_derived(name="batch", with_types=False)
        )
        values: dict[str, Any] = {
            "next_run_at": batch.c.next,
            "last_run_at": bindparam("now", type_=DateTime),
            "run_count": c.run_count + batch.c.runs,
            "status": case((batch.c.next.is_(None), ScheduleStatus.DONE.value), else_=c.status),
            "invalid_reason": None,
            "invalid_at": None,
            "updated_at": c.updated_at,
        }
        if self.policies:
            values["missed_count"] = c.missed_count + batch.c.missed
        return (
            TABLE.update()
            .where(c.id == batch.c.id, c.status == ScheduleStatus.ACTIVE, c.next_run_at == batch.c.seen)
            .values(**values)
            .returning(c.id)
        )

    def revert(self, conn: Connection, item: Advance) -> None:
        """Undo :meth:`advance` for runs whose publish failed, in the same transaction (the row
        is still locked by it), so they are due again on the next tick: never lost."""
        row, next_run_at = item.row, item.next_run_at
        written = c.next_run_at.is_(None) if next_run_at is None else c.next_run_at == next_run_at
        values: dict[str, Any] = {
            "next_run_at": _raw_value(row.next_run_at),
            "last_run_at": _raw_value(row.last_run_at),
            "run_count": row.run_count,
            "status": row.status,
            "invalid_reason": row.invalid_reason,
            "updated_at": c.updated_at,
        }
        if self.policies:
            values["missed_count"] = row.missed_count
        conn.execute(TABLE.update().where(c.id == row.id, written).values(**values))

    # -- rows without a run -----------------------------------------------------------------------
    def _unchanged(self, row: RowSnapshot) -> list[ColumnElement[bool]]:
        """The row still holds what beat read: same due time and same user-written columns."""
        return [
            c.id == row.id,
            _seen(c.next_run_at, row.next_run_at),
            *(_seen(c[name], getattr(row, name)) for name in self._definition),
        ]

    def reschedule(self, conn: Connection, row: RowSnapshot, *, next_run_at: datetime | None, missed: int = 0) -> bool:
        """Set a due time without a run (first due time, realign, skipped missed runs, counted
        in ``missed_count``) and clear any flag; a row with no further run is marked ``done``.
        Only if the row is as beat read it: a due time computed from a definition edited
        meanwhile is never written."""
        values: dict[str, Any] = {
            "next_run_at": next_run_at, "invalid_reason": None, "invalid_at": None, "updated_at": c.updated_at,
        }
        if self.policies and missed:
            values["missed_count"] = c.missed_count + missed
        if next_run_at is None:
            values["status"] = ScheduleStatus.DONE
        stmt = TABLE.update().where(and_(*self._unchanged(row))).values(**values)
        return conn.execute(stmt).rowcount == 1

    def flag(self, conn: Connection, row: RowSnapshot, *, reason: str, now: datetime) -> bool:
        """Mark a bad row: ``invalid_reason``/``invalid_at`` set, due time cleared (so the due
        query never returns it again), only if nobody edited the row since beat read it."""
        stmt = (
            TABLE.update()
            .where(and_(*self._unchanged(row)))
            .values(invalid_reason=reason, invalid_at=now, next_run_at=None, updated_at=c.updated_at)
        )
        return conn.execute(stmt).rowcount == 1


def missing_policy_columns(conn: Connection) -> tuple[str, ...]:
    """The :data:`POLICY_COLUMNS` this database lacks (all of them below 0008_schedule_policies;
    one reflection query)."""
    present = {col["name"] for col in inspect(conn).get_columns(TABLE.name)}
    return tuple(name for name in POLICY_COLUMNS if name not in present)


def store_for(conn: Connection) -> ScheduleStore:
    """The store for the table as it is in this database."""
    return ScheduleStore(policies=not missing_policy_columns(conn))
