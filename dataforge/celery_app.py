"""The Celery application: ``celery -A dataforge.celery_app worker|beat``.

:func:`create_app` is the app factory: the edge where settings are read
(``Settings.from_env()``, once) and where plug-ins are installed (the legacy compatibility
path, :mod:`dataforge.legacy.plugin`). Every configuration choice below says why it is made.
"""

from __future__ import annotations

import importlib.util
import pkgutil
from collections.abc import Iterable

# Imported for its side effect: the project's only signal handlers connect (once, by
# dispatch_uid) in every process that loads the app: worker, its children, beat, the CLI.
from dataforge import celery_signals as _celery_signals  # noqa: F401
from dataforge.legacy.names import SHIM_MODULE
from dataforge.legacy.plugin import LegacyPlugin
from dataforge.plugins import Plugin
from dataforge.runtime import DataForgeApp, Runtime
from dataforge.settings import Settings

__all__ = ["celery_app", "configure", "create_app", "default_plugins", "task_modules"]


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


def default_plugins(settings: Settings) -> list[Plugin]:
    """The plug-ins every app gets: the legacy compatibility path (rollback, queued legacy
    messages during a deploy)."""
    return [LegacyPlugin(settings)]


def configure(app: DataForgeApp, settings: Settings, plugins: Iterable[Plugin] | None = None) -> DataForgeApp:
    """Apply ``settings`` to ``app``, give it a fresh :class:`Runtime` and install ``plugins``
    (:func:`default_plugins` when not given)."""
    old = getattr(app, "runtime", None)
    if isinstance(old, Runtime):
        old.close()
    installed = list(default_plugins(settings) if plugins is None else plugins)
    include = task_modules(settings.task_packages)
    if settings.legacy_tasks and any(isinstance(p, LegacyPlugin) for p in installed):
        include.append(SHIM_MODULE)
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
    app.runtime = Runtime(settings, installed)
    for plugin in installed:
        plugin.on_app_configured(app)
    return app


def create_app(settings: Settings | None = None, plugins: Iterable[Plugin] | None = None) -> DataForgeApp:
    """Build the Celery app; reads the environment only when no settings are given."""
    app = DataForgeApp("dataforge")
    configure(app, settings if settings is not None else Settings.from_env(), plugins)
    return app


#: The app of `celery -A dataforge.celery_app` and of `@celery_app.task(base=DataForgeTask)`.
#: Bound before it is configured: configuring imports the task packages' parents, and a legacy
#: backend's ``app/__init__.py`` may import ``app.celery_app``, which hands out this object.
celery_app = DataForgeApp("dataforge")
configure(celery_app, Settings.from_env())
