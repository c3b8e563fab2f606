"""``dataforge_locks``: leases for the database lock backend and the beat leader.

Used when no Redis is configured (the embedded default). A row is a lease: whoever holds
``owner`` until ``expires_at`` holds the lock; an expired row may be taken over by anyone.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from dataforge.models.base import Base

__all__ = ["LockLease"]


class LockLease(Base):
    __tablename__ = "dataforge_locks"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    #: Naive UTC. Compared against the database clock where the backend can, so workers with
    #: skewed clocks still agree on expiry.
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
