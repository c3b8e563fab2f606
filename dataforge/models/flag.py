"""``dataforge_flags``: switches every process must agree on, persisted in the database.

Holds the legacy switch (``dataforge legacy enable|disable``):
beat and every worker read the same row, so one command flips the whole fleet; an environment
variable could only flip the processes started with it. ``hits`` counts the runs that went
through the switch's code path (legacy ``execute_scheduled_task`` messages), so operators can
see when the compat shim is no longer used. See docs/rollback-notes.md.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from dataforge.models.base import Base, utcnow

__all__ = ["Flag"]


class Flag(Base):
    __tablename__ = "dataforge_flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false(), default=False)
    #: Runs counted against this flag (legacy-path runs for ``legacy_tasks``).
    hits: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    last_hit_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    #: Who flipped it last (``user@host`` from the CLI), for the audit trail.
    updated_by: Mapped[str | None] = mapped_column(String(255))

    def __repr__(self) -> str:
        return f"<Flag {self.name}={self.enabled} hits={self.hits}>"
