"""The design's ``celery_tasks_legacy.py``: the legacy executor, for rollback only.

Registered under the legacy name ``app.celery_tasks.execute_scheduled_task`` while the legacy
switch is on (``dataforge legacy enable`` / ``DATAFORGE_LEGACY_TASKS=1``; see
docs/rollback-notes.md). Unlike the original it:

* resolves ``handler_path`` only through the four spellings inside the scripts package and
  the map file (:func:`dataforge.legacy.resolve.resolve_legacy_script`): ``os:system`` and anything
  outside is refused and never imported; when ``dataforge convert`` removed the script, the
  converted module's byte-identical ``run`` is used (:func:`dataforge.legacy.resolve.legacy_job_module`);
* runs the job through DataForgeTask: the run lock of the new task for the same schedule,
  one execution record per attempt, and kwargs bound to the job's signature, so the legacy
  ``TypeError: run() got an unexpected keyword argument '_lock_key'`` cannot happen;
* has no signal handlers of its own (dataforge.worker.recording records every run) and counts
  every run (``dataforge legacy status``).

Removing the shim is deleting this package and its module name in dataforge/legacy/names.py
(tests/compat fails if anything else imports it).
"""

from __future__ import annotations

import importlib
from typing import Any

from dataforge.celery_app import celery_app
from dataforge.legacy.errors import LegacyHandlerError
from dataforge.legacy.executor import LegacyExecutorTask, job_kwargs
from dataforge.legacy.names import LEGACY_TASK_NAME
from dataforge.legacy.plugin import legacy_plugin
from dataforge.legacy.resolve import forward_task_name, legacy_job_module
from dataforge.legacy.switch import record_legacy_run
from dataforge.runtime import get_runtime

__all__ = ["execute_scheduled_task"]


@celery_app.task(base=LegacyExecutorTask, bind=True, name=LEGACY_TASK_NAME)  # type: ignore[untyped-decorator]
def execute_scheduled_task(
    self: LegacyExecutorTask, scheduled_task_id: Any = None, handler_path: Any = None, **kwargs: Any
) -> Any:
    """Run ``run`` of the legacy script ``handler_path`` names, the new runtime's way."""
    runtime = get_runtime(self.app)
    handler_map = legacy_plugin(self.app).handler_map()
    module_name = legacy_job_module(handler_path, runtime.settings, handler_map)
    run = getattr(importlib.import_module(module_name), "run", None)
    if not callable(run):
        raise LegacyHandlerError(handler_path, f"{module_name} has no callable run()")
    try:
        target = forward_task_name(handler_path, handler_map)
    except LegacyHandlerError:
        target = module_name
    record_legacy_run(
        runtime, "shim", task_id=self.request.id, handler_path=handler_path,
        scheduled_task_id=scheduled_task_id, target=f"{module_name}.run ({target})",
    )  # fmt: skip
    return self.run_job(run, job_kwargs(scheduled_task_id, kwargs))
