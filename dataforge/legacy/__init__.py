"""The legacy switch, and what the legacy executor's name resolves to. No compat imports here.

**Where the switch lives.** Row ``legacy_tasks`` of the ``dataforge_flags`` table (created by
migration 0002_expand), so one ``dataforge legacy enable`` reaches beat and every worker at
once; ``DATAFORGE_LEGACY_TASKS=1`` forces it on for the processes started with it (it cannot
force it off). :func:`legacy_enabled` is what everybody reads:

* **beat** (``dataforge.scheduler.beat``) re-reads it on its periodic full refresh and, while
  it is on, sends rows that have no registered task_name but a legacy ``handler_path`` in the
  legacy message form to ``app.celery_tasks.execute_scheduled_task``;
* **workers and beat** decide at start which module registers that name
  (:func:`connect_legacy_include`, run when Celery imports the task modules): the compat shim
  (``LEGACY_SHIM_MODULE`` of :mod:`dataforge.celery_app`) while the switch is on (it runs the
  legacy ``scripts.<m>.run`` through DataForgeTask), else :mod:`dataforge.legacy.forwarder`
  (it runs the *new* task the handler_path maps to), so a legacy message still queued during a deploy is executed, never
  discarded as unregistered. Flipping the switch therefore takes effect in beat within a
  minute and in a worker at its next start (docs/rollback-notes.md).

**Counting.** Every run through either module calls :func:`record_legacy_run`: one log line
(logger ``dataforge.legacy``) and ``hits + 1`` on the flag row, which ``dataforge legacy
status`` shows with the time of the last one, so operators see when the shim can go.
"""

from __future__ import annotations

import getpass
import importlib.util
import logging
import re
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError

from dataforge.db import Database
from dataforge.errors import ConfigurationError, DataForgeError
from dataforge.legacy.paths import HandlerMap, parse_handler_path
from dataforge.models import Flag, ScheduledTask, TaskExecution, utcnow
from dataforge.protocol import ScheduleStatus
from dataforge.runtime import Runtime, get_runtime
from dataforge.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "FORWARDER_MODULE",
    "LEGACY_TASK_NAME",
    "SWITCH_FLAG",
    "LegacyHandlerError",
    "LegacyStatus",
    "LegacySwitchError",
    "SwitchState",
    "connect_legacy_include",
    "forward_task_name",
    "handler_map_for",
    "legacy_enabled",
    "legacy_status",
    "load_handler_map",
    "read_switch",
    "record_legacy_run",
    "legacy_job_module",
    "resolve_legacy_script",
    "set_switch",
]

log = logging.getLogger("dataforge.legacy")

#: Celery's default name for the legacy executor (``app/celery_tasks.py``), the name legacy
#: beat used; messages under it may sit in the broker during any deploy.
LEGACY_TASK_NAME = "app.celery_tasks.execute_scheduled_task"
#: The ``dataforge_flags`` row of the switch.
SWITCH_FLAG = "legacy_tasks"
#: Registers LEGACY_TASK_NAME while the switch is off.
FORWARDER_MODULE = "dataforge.legacy.forwarder"

LegacyPath = Literal["shim", "forwarded"]


class LegacySwitchError(DataForgeError):
    """The switch cannot be read or written (no flags table: the database is not migrated)."""


class LegacyHandlerError(DataForgeError):
    """A legacy ``handler_path`` the shim or the forwarder refuses. Nothing was imported."""

    def __init__(self, handler_path: object, reason: str) -> None:
        self.handler_path = handler_path
        self.reason = reason
        super().__init__(f"handler_path {handler_path!r}: {reason}")


# -- the switch -----------------------------------------------------------------------------------
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


# -- counting -------------------------------------------------------------------------------------
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


# -- resolution -----------------------------------------------------------------------------------
def load_handler_map(settings: Settings) -> HandlerMap:
    """The map file of ``DATAFORGE_LEGACY_MAP_FILE``, else an empty map (the rule only)."""
    if settings.legacy_map_file is None:
        return HandlerMap.empty(settings.scripts_package)
    try:
        return HandlerMap.load(settings.legacy_map_file)
    except (OSError, ValueError) as exc:
        raise ConfigurationError("DATAFORGE_LEGACY_MAP_FILE", str(settings.legacy_map_file), str(exc)) from exc


def handler_map_for(runtime: Runtime) -> HandlerMap:
    """The handler map, loaded once per process."""
    loaded: HandlerMap = runtime.component("legacy_handler_map", lambda rt: load_handler_map(rt.settings))
    return loaded


def forward_task_name(handler_path: object, handler_map: HandlerMap) -> str:
    """The new task a legacy ``handler_path`` maps to (map file first, then the rule)."""
    name = handler_map.task_name_for(handler_path) if isinstance(handler_path, str) else None
    if not name:
        raise LegacyHandlerError(
            handler_path,
            f"maps to no task: not in the map file and not one of the four spellings inside "
            f"{handler_map.scripts_package!r}; refused",
        )
    return name


def resolve_legacy_script(handler_path: object, settings: Settings, handler_map: HandlerMap) -> str:
    """The module to import for a legacy ``handler_path``: ``<scripts package>.<module>``.

    Only the four spellings inside ``DATAFORGE_SCRIPTS_PACKAGE``, or an exact spelling the map
    file lists for one of its script modules, are accepted. Anything else (``os:system``,
    ``../x.py``, ``scripts.sub.mod``...) raises :class:`LegacyHandlerError` and nothing is
    imported: a schedule row must never choose arbitrary code to run.
    """
    package = settings.scripts_package
    if not isinstance(handler_path, str) or not handler_path.strip():
        raise LegacyHandlerError(handler_path, "missing; the legacy executor needs one")
    module = parse_handler_path(handler_path, package)
    if module is None:
        task = handler_map.handlers.get(handler_path.strip())
        mapped = [m for m, entry in sorted(handler_map.modules.items()) if task and entry.get("task_name") == task]
        # The map's module names are validated like any spelling: they must be job modules.
        module = next((m for m in mapped if parse_handler_path(f"{package}:{m}", package) == m), None)
    if module is None:
        raise LegacyHandlerError(
            handler_path,
            f"not one of the four legacy spellings inside {package!r} and not listed in the map file; "
            "refused, nothing was imported",
        )
    return f"{package}.{module}"


def legacy_job_module(handler_path: object, settings: Settings, handler_map: HandlerMap) -> str:
    """The module whose ``run`` the shim calls for ``handler_path``.

    The script itself (``<scripts package>.<module>``, from :func:`resolve_legacy_script`) when
    it is still on disk (``dataforge convert --keep-scripts``); otherwise the converted module
    the map file lists for that script. ``dataforge convert`` removes the scripts by default and
    the converted module keeps ``run`` byte-identical, which is what makes a rollback run the
    same code. The map's module must be a plain dotted name inside its tasks package.
    """
    script_module = resolve_legacy_script(handler_path, settings, handler_map)
    try:
        script_exists = importlib.util.find_spec(script_module) is not None
    except ModuleNotFoundError:  # the scripts package itself is gone
        script_exists = False
    if script_exists:
        return script_module
    name = script_module.rsplit(".", 1)[1]
    converted = handler_map.modules.get(name, {}).get("module")
    package = handler_map.tasks_package
    if converted and re.fullmatch(rf"{re.escape(package)}\.[A-Za-z_][A-Za-z0-9_]*", converted):
        return converted
    raise LegacyHandlerError(
        handler_path,
        f"{script_module} is not on disk and the map file lists no converted module for {name!r} "
        f"inside {package!r}; deploy the script or the converted task package",
    )


# -- which module registers the legacy name -------------------------------------------------------
def connect_legacy_include(app: Celery, *, shim_module: str) -> None:
    """At worker/beat start, add ``shim_module`` (switch on) or the forwarder (off) to ``include``.

    ``shim_module`` is ``dataforge.celery_app.LEGACY_SHIM_MODULE``: that include string is the
    only reference to the compat package outside it (tests/compat checks this).

    Runs from Celery's ``import_modules`` signal, sent just before the include list is read,
    so the persisted switch is read once per process start and not when the app module is
    merely imported (by the CLI, by tests).
    """
    from celery import signals

    def _choose(sender: Any = None, **_kw: Any) -> None:
        # Only when a worker or beat starts (Celery sets worker_initialized just before it
        # imports the task modules); `dataforge tasks` and other explicit imports of the task
        # modules neither touch the database nor register the legacy name.
        if sender is not app or not getattr(app.loader, "worker_initialized", False):
            return
        include = list(app.conf.include or ())
        if shim_module in include or FORWARDER_MODULE in include:
            return
        runtime = get_runtime(app)
        on = legacy_enabled(runtime)
        module = shim_module if on else FORWARDER_MODULE
        app.conf.include = (*include, module)
        message = f"legacy switch {'on' if on else 'off'}: {module} registers {LEGACY_TASK_NAME}"
        log.info("%s", message)  # beat has its logging set up by now; a worker does not yet:

        def _ready(**_kw: Any) -> None:
            log.info("%s", message)

        signals.worker_ready.connect(_ready, weak=False, dispatch_uid=f"dataforge-legacy-ready-{id(app)}")

    signals.import_modules.connect(_choose, weak=False, dispatch_uid=f"dataforge-legacy-include-{id(app)}")


# -- status ---------------------------------------------------------------------------------------
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
