"""The Celery application: ``celery -A dataforge.celery_app worker|beat``.

:func:`create_app` is the app factory and the edge where settings are read
(``Settings.from_env()``, once). Every configuration choice below says why it is made.
"""

from __future__ import annotations

import importlib.util
import pkgutil

from celery import Celery

# Imported for its side effect: the project's only signal handlers connect (once, by
# dispatch_uid) in every process that loads the app: worker, its children, beat, the CLI.
from dataforge import celery_signals as _celery_signals  # noqa: F401
from dataforge.legacy import connect_legacy_include
from dataforge.runtime import Runtime
from dataforge.settings import Settings

__all__ = ["LEGACY_SHIM_MODULE", "celery_app", "configure", "create_app", "task_modules"]

#: Re-included by ``DATAFORGE_LEGACY_TASKS=1`` for rollback (see docs/rollback.md).
LEGACY_SHIM_MODULE = "compat.celery_tasks_legacy"


def task_modules(packages: tuple[str, ...]) -> list[str]:
    """Every module of the task packages, found on disk without importing them.

    Celery imports the ``include`` list in the worker and in beat; listing the modules here
    (instead of relying on autodiscovery of a ``tasks`` module) is what makes a converted
    legacy repo with one task per file register all of them.
    """
    modules: list[str] = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise ModuleNotFoundError(
                f"task package {package!r} (DATAFORGE_TASK_PACKAGES) cannot be found on sys.path"
            )
        modules.append(package)
        locations = spec.submodule_search_locations
        if not locations:
            continue
        for info in pkgutil.walk_packages(list(locations), prefix=f"{package}."):
            modules.append(info.name)
    return modules


def configure(app: Celery, settings: Settings) -> Celery:
    """Apply ``settings`` to ``app`` and attach a fresh :class:`Runtime` to it."""
    old = getattr(app, "dataforge", None)
    if old is not None:
        old.close()
    include = task_modules(settings.task_packages)
    if settings.legacy_tasks:
        include.append(LEGACY_SHIM_MODULE)
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        include=include,
        # JSON only: schedules are data typed by people; pickle would let a message run code.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Worker task events on, so `celery events` / Flower show every run (received,
        # started, succeeded/failed). The extra "task-sent" event of the *publisher* is off: it
        # doubles beat's broker writes per dispatch (the scheduler benchmark measures both, see
        # docs/benchmarks.md) and tells nothing the worker's "received" does not.
        worker_send_task_events=True,
        task_send_sent_event=False,
        # Naive-UTC timestamps everywhere, as in the scheduling tables.
        enable_utc=True,
        timezone="UTC",
        # acks_late: a message is acknowledged after the run, so a worker killed mid-task does
        # not lose the run; the message is redelivered. The run lock and the unique
        # (celery_task_id, attempt) execution row keep the redelivery from running twice in
        # parallel or recording twice.
        task_acks_late=True,
        # ...but a child killed by the OS (OOM, SIGKILL) would otherwise be redelivered forever:
        # record it as `lost` and let the next scheduled run try again.
        task_reject_on_worker_lost=False,
        # Prefetch 1: scheduled jobs are long and uneven; a worker must not hoard messages that
        # another idle worker could run now.
        worker_prefetch_multiplier=1,
        # No global time limit: each schedule's timeout_seconds becomes the message's limits
        # (soft = timeout, hard = timeout + grace) at dispatch.
        task_time_limit=None,
        task_soft_time_limit=None,
        # Tracks STARTED so `schedules history` and AsyncResult can tell queued from running.
        task_track_started=True,
        result_expires=86400,
        broker_connection_retry_on_startup=True,
        # The database-backed scheduler is the default: plain `celery beat` uses it.
        beat_scheduler="dataforge.celery_scheduler:DatabaseScheduler",
        beat_max_loop_interval=settings.beat_max_interval,
    )
    app.dataforge = Runtime(settings)  # type: ignore[attr-defined]
    # (migrations helper) The persisted legacy switch (dataforge_flags) picks, at worker/beat
    # start, the shim above or dataforge.legacy.forwarder to register the legacy task name.
    connect_legacy_include(app, shim_module=LEGACY_SHIM_MODULE)
    return app


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app; reads the environment only when no settings are given."""
    app = Celery("dataforge")
    configure(app, settings if settings is not None else Settings.from_env())
    return app


#: The app of `celery -A dataforge.celery_app` and of `@celery_app.task(base=DataForgeTask)`.
celery_app = create_app()
