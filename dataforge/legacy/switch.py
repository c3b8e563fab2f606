"""The legacy switch: one row of ``dataforge_flags`` that beat and every worker read.

``dataforge legacy enable|disable`` writes it, so one command reaches the whole fleet; an
environment variable (``DATAFORGE_LEGACY_TASKS=1``) can only force it on for the processes
started with it. Every run through the legacy path counts a hit on the same row
(:func:`record_legacy_run`), so ``dataforge legacy status`` shows when the shim can go.
"""

from __future__ import annotations

import getpass
import logging
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from dataforge.db import Database
from dataforge.legacy.errors import LegacySwitchError
from dataforge.models import Flag, utcnow
from dataforge.settings import Settings

if TYPE_CHECKING:
    from dataforge.runtime import Runtime

__all__ = ["SWITCH_FLAG", "LegacyPath", "SwitchState", "legacy_enabled", "read_switch", "record_legacy_run",
           "set_switch"]

log = logging.getLogger("dataforge.legacy")

#: The ``dataforge_flags`` row of the switch.
SWITCH_FLAG: Final = "legacy_tasks"

#: Which registration of the legacy executor name ran a legacy message.
LegacyPath = Literal["shim", "forwarded"]


@dataclass(frozen=True)
class SwitchState:
    """The persisted switch and what the environment adds to it."""

    #: The ``dataforge_flags`` value; ``None`` when there is no such table/row yet.
    persisted: bool | None
    #: ``DATAFORGE_LEGACY_TASKS`` of this process.
    env: bool
    hits: int = 0
    last_hit_at: datetime | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None

    @property
    def effective(self) -> bool:
        return self.env or bool(self.persisted)


def read_switch(db: Database, settings: Settings) -> SwitchState:
    """The switch as stored (raises :class:`LegacySwitchError` if the table is missing)."""
    try:
        with db.session() as session:
            flag = session.get(Flag, SWITCH_FLAG)
    except SQLAlchemyError as exc:
        raise LegacySwitchError(
            f"cannot read the legacy switch from {_safe_url(db)} ({type(exc).__name__}); is the database "
            "migrated to 0002_expand or later (`dataforge db upgrade`)?"
        ) from exc
    if flag is None:
        return SwitchState(persisted=None, env=settings.legacy_tasks)
    return SwitchState(
        persisted=bool(flag.enabled),
        env=settings.legacy_tasks,
        hits=flag.hits,
        last_hit_at=flag.last_hit_at,
        updated_at=flag.updated_at,
        updated_by=flag.updated_by,
    )


def set_switch(db: Database, settings: Settings, enabled: bool, *, by: str | None = None) -> SwitchState:
    """Persist the switch (one row, insert or update) and return the new state."""
    who = by or _operator()
    try:
        with db.session() as session:
            flag = session.get(Flag, SWITCH_FLAG, with_for_update=True)
            if flag is None:
                session.add(Flag(name=SWITCH_FLAG, enabled=enabled, hits=0, updated_at=utcnow(), updated_by=who))
            else:
                flag.enabled = enabled
                flag.updated_at = utcnow()
                flag.updated_by = who
    except SQLAlchemyError as exc:
        raise LegacySwitchError(
            f"cannot write the legacy switch to {_safe_url(db)} ({type(exc).__name__}); migrate the database "
            "to 0002_expand or later first (`dataforge db upgrade`)"
        ) from exc
    log.warning("legacy switch %s by %s", "ENABLED" if enabled else "disabled", who)
    return read_switch(db, settings)


def legacy_enabled(runtime: Runtime) -> bool:
    """Whether legacy-path dispatch is on: ``DATAFORGE_LEGACY_TASKS=1`` or the persisted switch.

    One primary-key read; never raises: an unreadable switch counts as off (logged), because
    the safe state is the new runtime (the forwarder still runs queued legacy messages).
    """
    if runtime.settings.legacy_tasks:
        return True
    try:
        return read_switch(runtime.db, runtime.settings).effective
    except LegacySwitchError as exc:
        log.warning("%s; treating the legacy switch as off", exc)
        return False


def _operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:255]


def _safe_url(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=True)


def record_legacy_run(
    runtime: Runtime,
    path: LegacyPath,
    *,
    task_id: str | None,
    handler_path: object,
    scheduled_task_id: object,
    target: str,
) -> None:
    """Log one legacy-path run and count it on the flag row. Never raises (it must not fail a run)."""
    log.warning(
        "legacy path %s: task %s schedule=%s handler_path=%r -> %s",
        path, task_id, scheduled_task_id, handler_path, target,
    )  # fmt: skip
    try:
        with runtime.db.session() as session:
            session.execute(
                update(Flag)
                .where(Flag.name == SWITCH_FLAG)
                .values(hits=Flag.hits + 1, last_hit_at=utcnow())
                .execution_options(synchronize_session=False)
            )
    except SQLAlchemyError:
        log.warning("could not count the legacy run of %s (the run itself is unaffected)", task_id, exc_info=True)
