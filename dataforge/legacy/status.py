"""``dataforge legacy status``: the switch, and what still depends on the legacy path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from dataforge.db import Database
from dataforge.legacy.names import LEGACY_TASK_NAME
from dataforge.legacy.paths import parse_handler_path
from dataforge.legacy.switch import SwitchState, read_switch
from dataforge.models import ScheduledTask, TaskExecution
from dataforge.protocol import ScheduleStatus
from dataforge.settings import Settings

__all__ = ["LegacyStatus", "legacy_status"]


@dataclass(frozen=True)
class LegacyStatus:
    switch: SwitchState
    #: Active schedules with no task_name whose handler_path is a legacy spelling: they run
    #: only through the shim (switch on). 0 after the data migration.
    rows_needing_shim: list[int]
    #: Executions recorded under the legacy name, and the latest one's start.
    legacy_executions: int
    last_legacy_execution: datetime | None

    def to_json(self) -> dict[str, Any]:
        s = self.switch
        return {
            "effective": s.effective,
            "persisted": s.persisted,
            "env": s.env,
            "legacy_runs_counted": s.hits,
            "last_legacy_run_at": s.last_hit_at,
            "updated_at": s.updated_at,
            "updated_by": s.updated_by,
            "rows_needing_shim": self.rows_needing_shim,
            "legacy_executions_recorded": self.legacy_executions,
            "last_legacy_execution": self.last_legacy_execution,
        }


def legacy_status(db: Database, settings: Settings) -> LegacyStatus:
    switch = read_switch(db, settings)
    with db.session() as session:
        candidates = session.execute(
            select(ScheduledTask.id, ScheduledTask.handler_path)
            .where(ScheduledTask.status == ScheduleStatus.ACTIVE)
            .where((ScheduledTask.task_name.is_(None)) | (func.trim(ScheduledTask.task_name) == ""))
            .where(ScheduledTask.handler_path.is_not(None))
            .order_by(ScheduledTask.id)
        ).all()
        count, last = session.execute(
            select(func.count(), func.max(TaskExecution.started_at)).where(TaskExecution.task_name == LEGACY_TASK_NAME)
        ).one()
    needing = [row_id for row_id, path in candidates if parse_handler_path(path, settings.scripts_package)]
    return LegacyStatus(switch, needing, int(count or 0), last)
