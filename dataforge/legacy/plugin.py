"""The legacy compatibility path as a plug-in: what the runtime does for legacy messages and rows.

Installed by the app factory (:func:`dataforge.celery_app.create_app`) through the one plug-in
seam (:mod:`dataforge.plugins`); the core never imports this package. It hooks three events:

* **app configured**: at worker/beat start (Celery's ``import_modules``, just before the
  include list is read) one module is added to ``include`` to register the legacy executor
  name ``app.celery_tasks.execute_scheduled_task``: the compat shim while the switch is on (it
  runs the legacy ``scripts.<m>.run`` through DataForgeTask), else the forwarder (it runs the
  *new* task the ``handler_path`` maps to). A legacy message still queued during a deploy is
  therefore executed, never discarded as unregistered. The switch is read once per process
  start there, and not when the app module is merely imported (the CLI, tests).
* **beat refresh**: beat re-reads the switch on its periodic full refresh (within a minute).
* **row resolution**: while the switch is on, a row with no registered ``task_name`` but a
  legacy ``handler_path`` is sent in the legacy message form
  (``scheduled_task_id``, ``handler_path``, kwargs) to the legacy executor name.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import signals

from dataforge.errors import ScheduleError
from dataforge.legacy.names import FORWARDER_MODULE, LEGACY_TASK_NAME, SHIM_MODULE
from dataforge.legacy.paths import HandlerMap, parse_handler_path
from dataforge.legacy.resolve import load_handler_map
from dataforge.legacy.switch import legacy_enabled
from dataforge.plugins import Plugin, Target
from dataforge.runtime import NotConfiguredError, get_runtime
from dataforge.settings import Settings

if TYPE_CHECKING:
    from dataforge.runtime import DataForgeApp, Runtime
    from dataforge.scheduler.dispatch import DispatchContext, RowSnapshot

__all__ = ["LegacyPlugin", "legacy_plugin"]

log = logging.getLogger("dataforge.legacy")


class LegacyPlugin(Plugin):
    """The legacy switch, the legacy executor's registration, and legacy row dispatch."""

    name = "legacy"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Beat's view of the switch, re-read on every full refresh.
        self.enabled = settings.legacy_tasks
        self._handler_map: HandlerMap | None = None

    def handler_map(self) -> HandlerMap:
        """The map file of ``DATAFORGE_LEGACY_MAP_FILE`` (the rule only without one), loaded once."""
        if self._handler_map is None:
            self._handler_map = load_handler_map(self.settings)
        return self._handler_map

    # -- hooks ------------------------------------------------------------------------------------
    def on_app_configured(self, app: DataForgeApp) -> None:
        def choose(sender: Any = None, **_kw: Any) -> None:
            # Only when a worker or beat starts (Celery sets worker_initialized just before it
            # imports the task modules); `dataforge tasks` and other explicit imports of the task
            # modules neither touch the database nor register the legacy name.
            if sender is not app or not getattr(app.loader, "worker_initialized", False):
                return
            include = list(app.conf.include or ())
            if SHIM_MODULE in include or FORWARDER_MODULE in include:
                return
            on = legacy_enabled(get_runtime(app))
            module = SHIM_MODULE if on else FORWARDER_MODULE
            app.conf.include = (*include, module)
            message = f"legacy switch {'on' if on else 'off'}: {module} registers {LEGACY_TASK_NAME}"
            log.info("%s", message)  # beat has its logging set up by now; a worker does not yet:

            def ready(**_kw: Any) -> None:
                log.info("%s", message)

            signals.worker_ready.connect(ready, weak=False, dispatch_uid=f"dataforge-legacy-ready-{id(app)}")

        signals.import_modules.connect(choose, weak=False, dispatch_uid=f"dataforge-legacy-include-{id(app)}")

    def on_beat_refresh(self, runtime: Runtime) -> None:
        self.enabled = legacy_enabled(runtime)

    def resolve_row(self, row: RowSnapshot, ctx: DispatchContext) -> Target | None:
        if not row.handler_path:
            return None
        package = self.settings.scripts_package
        module = parse_handler_path(row.handler_path, package)
        named = bool((row.task_name or "").strip())
        if module is None:
            if named:
                return None
            raise ScheduleError(
                "handler_path", row.handler_path,
                f"no task_name, and not one of the legacy spellings inside {package!r}; set task_name",
            )
        if self.enabled:
            if ctx.is_registered(LEGACY_TASK_NAME):
                return Target(LEGACY_TASK_NAME, {"handler_path": row.handler_path})
            raise ScheduleError(
                "handler_path", row.handler_path,
                f"the legacy switch is on but {LEGACY_TASK_NAME} is not registered in beat's app; "
                f"start beat with DATAFORGE_LEGACY_TASKS=1 (it includes {SHIM_MODULE})",
            )
        if named:
            return None
        raise ScheduleError(
            "task_name", None,
            "missing; this legacy handler_path row runs only with the legacy switch on "
            "(`dataforge legacy enable`); the data migration sets task_name",
        )


def legacy_plugin(app: object) -> LegacyPlugin:
    """The legacy plug-in installed on ``app`` (the executor, forwarder and shim need its map)."""
    for plugin in get_runtime(app).plugins:
        if isinstance(plugin, LegacyPlugin):
            return plugin
    raise NotConfiguredError(app)
