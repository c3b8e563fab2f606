"""``task_executions``: one row per attempt of a task run, written by the signal module."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dataforge.models.base import Base

__all__ = ["TaskExecution"]



class TaskExecution(Base):
    __tablename__ = "task_executions"

    # --- legacy columns ---------------------------------------------------------------------
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scheduled_task_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("scheduled_tasks.id", ondelete="SET NULL")
    )
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    task_name: Mapped[str | None] = mapped_column(String(255))
    handler_path: Mapped[str | None] = mapped_column(String(255))
    #: :class:`~dataforge.protocol.ExecutionStatus`.
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    #: A summary of the return value (JSON, truncated), not the full result.
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    # --- added ------------------------------------------------------------------------------
    #: ``request.retries`` of the attempt: 0 for the first run, 1 for the first retry...
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    #: ``hostname`` of the worker and pid of the child that ran it.
    worker: Mapped[str | None] = mapped_column(String(255))
    traceback: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # One row per attempt: signal handlers upsert on this pair, so a redelivered message
        # (acks_late) or a handler imported twice can never write a second row.
        UniqueConstraint("celery_task_id", "attempt", name="uq_task_executions_celery_task_id_attempt"),
        # `schedules history ID` and the per-schedule counters: newest executions of one schedule.
        Index("ix_task_executions_scheduled_task_id_started_at", "scheduled_task_id", "started_at"),
        # No index may include a column the close UPDATE writes (status, finished_at, duration_ms,
        # result, error, traceback): on PostgreSQL that makes every close a non-HOT update that
        # writes into every index. (status, started_at) was dropped for that reason
        # (migrations/versions/0006_executions_hot_close.py); nothing queries by status alone.
    )

    def __repr__(self) -> str:
        return f"<TaskExecution id={self.id} task={self.task_name!r} attempt={self.attempt} {self.status}>"
