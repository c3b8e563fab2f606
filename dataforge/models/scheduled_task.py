"""``scheduled_tasks``: one row per schedule.

Every legacy column keeps its name, type and meaning (the data migration must be exact and
the downgrade byte-for-byte); the columns added for the runtime are listed after them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from dataforge.models.base import Base, utcnow
from dataforge.models.triggers import attach_change_triggers
from dataforge.protocol import OverlapPolicy, ScheduleStatus

__all__ = ["ScheduledTask"]


class ScheduledTask(Base):
    __tablename__ = "scheduled_tasks"

    # --- legacy columns (migrations/legacy_schema.py), unchanged ------------------------------
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(String(16), nullable=False)
    #: The dispatch field: the registered Celery task name beat sends.
    #: NOT NULL from migration 0004_contract on. Still typed optional: a
    #: database rolled back to 0002_expand for the legacy switch has NULLs again.
    task_name: Mapped[str | None] = mapped_column(String(255), nullable=False)
    #: DEPRECATED. The legacy script reference (``scripts:sync_accounts`` and three other
    #: spellings). Kept for rollback and for the compat shim; the runtime never imports it.
    handler_path: Mapped[str | None] = mapped_column(String(255))
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    cron_expression: Mapped[str | None] = mapped_column(String(128))
    run_at: Mapped[datetime | None] = mapped_column(DateTime)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, server_default="UTC", default="UTC")
    #: A JSON object (after the data migration). Text, not JSON, so the legacy type is kept.
    handler_kwargs: Mapped[str] = mapped_column(Text, nullable=False, server_default="{}", default="{}")
    #: :class:`~dataforge.protocol.ScheduleStatus`.
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=ScheduleStatus.ACTIVE.value, default=ScheduleStatus.ACTIVE.value
    )
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime)
    run_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    success_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    failure_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=text("CURRENT_TIMESTAMP"), default=utcnow
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, server_default=text("CURRENT_TIMESTAMP"), default=utcnow, onupdate=utcnow
    )

    # --- added for the unified runtime -------------------------------------------------------
    #: The row's original ``handler_kwargs`` text when the data migration had to rewrite it
    #: (``''``, ``'null'``, Python repr, leaked ``_lock_key``); the downgrade restores it.
    handler_kwargs_legacy: Mapped[str | None] = mapped_column(Text)
    #: Per-row override of the missed-run policy (:class:`~dataforge.protocol.MissedRunPolicy`);
    #: NULL = global setting.
    missed_run_policy: Mapped[str | None] = mapped_column(String(16))
    #: What a run does when the previous run still holds the lock
    #: (:class:`~dataforge.protocol.OverlapPolicy`; beat sends it in a message header).
    overlap_policy: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=OverlapPolicy.SKIP.value, default=OverlapPolicy.SKIP.value
    )
    #: Missed runs due longer ago than this are not sent (counted in ``missed_count``);
    #: NULL = global setting (``DATAFORGE_CATCHUP_WINDOW``, unbounded by default).
    catchup_window_seconds: Mapped[int | None] = mapped_column(Integer)
    #: Each run is sent up to this many seconds after its due time, by a fixed per-schedule
    #: offset (spreads schedules that share a due time); 0 = none.
    jitter_seconds: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    #: Why beat refuses this row (unregistered task, bad cron, unknown zone, bad kwargs).
    #: NULL = healthy. Set once by beat, logged once, cleared when the row is fixed.
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    invalid_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: JSON of the legacy values the data migration
    #: (0003_data) replaced on this row, with what it wrote (``{"task_name": {"legacy": null,
    #: "migrated": "dataforge.x"}}``); NULL on rows created after it. The downgrade restores a
    #: value only if the row still holds what the migration wrote, so later edits are kept.
    legacy_values: Mapped[str | None] = mapped_column(Text)

    # --- per-schedule counters (statistics, never edits: the change triggers ignore them) ------
    #: Runs beat did not send because of the missed-run policy or the catch-up window.
    missed_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    #: Runs that did not run because the previous run of the schedule still held its lock.
    skipped_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    #: Runs discarded unrun because their message expired in the queue.
    expired_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    #: Runs whose worker died mid-run (reaped or reported by the parent process).
    lost_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)

    __table_args__ = (
        # Beat's only hot query: "active rows due by now" and "the earliest next due time".
        # Leading on status makes both a range scan over active rows only, so a tick's cost
        # depends on how many rows are due, not on how many schedules exist.
        Index("ix_scheduled_tasks_status_next_run_at", "status", "next_run_at"),
    )

    def __repr__(self) -> str:
        return f"<ScheduledTask id={self.id} name={self.name!r} task_name={self.task_name!r}>"


# Beat's change triggers (revive edited rows, realign their due time, NOTIFY beat) are created
# with the table, so metadata.create_all gives the complete schema; the Alembic revision runs
# the same SQL (dataforge/models/triggers.py).
attach_change_triggers(ScheduledTask.__table__)  # type: ignore[arg-type]
