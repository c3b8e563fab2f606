"""What the two registrations of the legacy executor name share (neither registers here).

``app.celery_tasks.execute_scheduled_task(scheduled_task_id, handler_path, **kwargs)`` is
registered by exactly one module per process (see :mod:`dataforge.legacy.plugin`): the compat shim
(switch on) or :mod:`dataforge.legacy.forwarder` (switch off). Both are
:class:`LegacyExecutorTask`: a DataForgeTask whose run lock is the *new* task's lock for the
same schedule, so a legacy message and the new task of one schedule never run at once during
a deploy or a rollback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dataforge.legacy.errors import LegacyHandlerError
from dataforge.legacy.plugin import legacy_plugin
from dataforge.legacy.resolve import forward_task_name
from dataforge.locks import lock_key
from dataforge.protocol import SCHEDULE_ID_KWARG
from dataforge.worker.task import DataForgeTask

__all__ = ["LegacyExecutorTask", "job_kwargs"]


class LegacyExecutorTask(DataForgeTask):
    """DataForgeTask with the lock key of the task the message's handler_path maps to."""

    def lock_key_for(self, kwargs: Mapping[str, Any]) -> str:
        try:
            target = forward_task_name(kwargs.get("handler_path"), legacy_plugin(self.app).handler_map())
        except LegacyHandlerError:
            target = self.name  # refused in the body anyway; lock under our own name meanwhile
        return lock_key(target, kwargs)


def job_kwargs(scheduled_task_id: object, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The job's kwargs as the legacy executor built them: the message kwargs plus the
    schedule id (``_lock_key`` and other internal keys are dropped by the kwargs binding)."""
    call = dict(kwargs)
    if scheduled_task_id is not None:
        call[SCHEDULE_ID_KWARG] = scheduled_task_id
    return call
