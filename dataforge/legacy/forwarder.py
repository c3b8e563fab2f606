"""The legacy executor name while the legacy switch is OFF: run the new task instead.

Messages sent by the legacy beat as ``app.celery_tasks.execute_scheduled_task(
scheduled_task_id, handler_path, **kwargs)`` can sit in the broker during a deploy. Celery
would discard them as unregistered; this module registers the name and runs the *new* task
the handler_path maps to (map file, then ``scripts:<m>`` -> ``dataforge.<m>``) in the same
worker process, under that task's run lock, and counts the run as a legacy-path run. It never
imports legacy scripts (that is the compat shim's job, with the switch on).

Included by :class:`dataforge.legacy.plugin.LegacyPlugin`; never import it elsewhere (the
shim registers the same name).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from dataforge.errors import UnknownTaskError
from dataforge.legacy.executor import LegacyExecutorTask, job_kwargs
from dataforge.legacy.names import LEGACY_TASK_NAME
from dataforge.legacy.plugin import legacy_plugin
from dataforge.legacy.resolve import forward_task_name
from dataforge.legacy.switch import record_legacy_run
from dataforge.runtime import get_runtime
from dataforge.worker.kwargs import bind_kwargs

__all__ = ["execute_scheduled_task"]


# A shared task: it registers on the app whose ``include`` imported this module (the worker's
# or beat's), not on one app chosen by an import.
@shared_task(base=LegacyExecutorTask, bind=True, name=LEGACY_TASK_NAME)  # type: ignore[untyped-decorator]
def execute_scheduled_task(
    self: LegacyExecutorTask, scheduled_task_id: Any = None, handler_path: Any = None, **kwargs: Any
) -> Any:
    """Run the registered task that ``handler_path`` maps to, with this message's request."""
    runtime = get_runtime(self.app)
    target_name = forward_task_name(handler_path, legacy_plugin(self.app).handler_map())
    target = self.app.tasks.get(target_name)
    if target is None:
        raise UnknownTaskError(
            target_name,
            f"legacy message for handler_path {handler_path!r}: deploy that task, or turn the legacy switch on "
            "(`dataforge legacy enable`) and restart the workers so the compat shim runs the script",
        )
    record_legacy_run(
        runtime, "forwarded", task_id=self.request.id, handler_path=handler_path,
        scheduled_task_id=scheduled_task_id, target=target_name,
    )  # fmt: skip
    bound = bind_kwargs(target.run, job_kwargs(scheduled_task_id, kwargs))
    # The target runs in this worker process, inside this message's trace: give it this
    # request (id, retries, headers) so what it records and logs names the real message.
    target.push_request(**vars(self.request))
    try:
        return target.run(**bound.kwargs)
    finally:
        target.pop_request()
