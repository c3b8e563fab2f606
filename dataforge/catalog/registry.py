"""The task registry: ``REGISTERED_TASKS`` joined with Celery's own registry.

Two lists describe the tasks and they can drift apart: ``REGISTERED_TASKS`` (in each task
package's ``__init__``, the design's format, what people and the schedules CLI read) and
Celery's registry (what a worker actually runs; a message for a name it does not know is
discarded and lost). :func:`get_registered_tasks` returns both, joined by name;
:func:`check_registry` lists every name present in one but not the other (``dataforge tasks
--check`` exits 1 on any).

The legacy scanner ``discover_scripts()`` is gone: nothing is discovered by importing
scripts; a task exists because a module of a task package registers it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dataforge.catalog.params import TaskParams
from dataforge.errors import UnknownTaskError
from dataforge.runtime import get_runtime

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "RegistryCheck",
    "TaskCatalog",
    "catalog_from_app",
    "celery_tasks",
    "check_registry",
    "get_registered_tasks",
    "registered_metadata",
]

#: Celery's built-in tasks (chord unlock, backend cleanup...) are not jobs.
_BUILTIN_PREFIX = "celery."


@dataclass(frozen=True)
class RegistryCheck:
    """Names present in only one of the two registries."""

    #: Listed in REGISTERED_TASKS but no worker would run it (a schedule for it is refused).
    only_in_registry: tuple[str, ...]
    #: Registered with Celery but not listed (invisible to people choosing a task).
    only_in_celery: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.only_in_registry and not self.only_in_celery

    def problems(self) -> list[str]:
        """One sentence per disagreement, saying what to do."""
        out = [
            f"{name}: in REGISTERED_TASKS but no module of the task packages registers it with Celery "
            "(define it with @celery_app.task(name=...) or remove the entry)"
            for name in self.only_in_registry
        ]
        out += [
            f"{name}: registered with Celery but missing from REGISTERED_TASKS (add an entry with "
            "name, description, category, params)"
            for name in self.only_in_celery
        ]
        return out

    @classmethod
    def compare(cls, registered: Iterable[str], celery: Iterable[str]) -> RegistryCheck:
        """The pure comparison of two name sets."""
        listed, known = set(registered), set(celery)
        return cls(only_in_registry=tuple(sorted(listed - known)), only_in_celery=tuple(sorted(known - listed)))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "only_in_registry": list(self.only_in_registry),
            "only_in_celery": list(self.only_in_celery),
        }


def registered_metadata(app: Celery) -> dict[str, dict[str, Any]]:
    """``REGISTERED_TASKS`` of every task package of ``app``'s settings, merged in order."""
    merged: dict[str, dict[str, Any]] = {}
    for package in get_runtime(app).settings.task_packages:
        module = importlib.import_module(package)
        table = getattr(module, "REGISTERED_TASKS", None)
        if isinstance(table, Mapping):
            for name, meta in table.items():
                merged[str(name)] = dict(meta) if isinstance(meta, Mapping) else {}
    return merged


def _defined_in(task: Any, packages: tuple[str, ...]) -> bool:
    module = getattr(type(task), "__module__", None) or getattr(task, "__module__", "") or ""
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def celery_tasks(app: Celery) -> dict[str, Any]:
    """The tasks of ``app``'s task packages in Celery's registry, imported as a worker would.

    Only tasks defined in a module of the task packages count: Celery's built-ins, compat
    shims included separately (the legacy executor) and tasks that some other imported module
    shares with every app are not part of the catalogue. A task may also opt out with
    ``registry_exempt = True``.
    """
    app.loader.import_default_modules()
    packages = get_runtime(app).settings.task_packages
    return {
        name: task
        for name, task in app.tasks.items()
        if not name.startswith(_BUILTIN_PREFIX)
        and not getattr(task, "registry_exempt", False)
        and _defined_in(task, packages)
    }


def get_registered_tasks(app: Celery) -> dict[str, dict[str, Any]]:
    """Every task name known to either registry, with its metadata and where it was found.

    Each value has the design's keys (``name``, ``description``, ``category``, ``params``;
    defaults from the task's docstring when it is not listed) plus ``task_name``,
    ``in_registry`` (listed in REGISTERED_TASKS), ``in_celery`` (a worker runs it) and
    ``dataforge_task`` (it records executions and takes the run lock).
    """
    meta = registered_metadata(app)
    tasks = celery_tasks(app)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(meta) | set(tasks)):
        entry = meta.get(name, {})
        task = tasks.get(name)
        doc = (getattr(task, "__doc__", None) or "").strip().splitlines()
        out[name] = {
            "task_name": name,
            "name": entry.get("name", name),
            "description": entry.get("description", doc[0] if doc else ""),
            "category": entry.get("category", ""),
            "params": list(entry.get("params", [])),
            "in_registry": name in meta,
            "in_celery": task is not None,
            "dataforge_task": bool(getattr(task, "dataforge_record", False)),
        }
    return out


def check_registry(app: Celery) -> RegistryCheck:
    """Names present in REGISTERED_TASKS or in Celery's registry but not in both."""
    return RegistryCheck.compare(registered_metadata(app), celery_tasks(app))


@dataclass(frozen=True)
class TaskCatalog:
    """The task names the worker will accept, with what each declares about its params."""

    tasks: Mapping[str, TaskParams]

    def require(self, task_name: str) -> TaskParams:
        params = self.tasks.get(task_name)
        if params is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UnknownTaskError(
                task_name,
                f"a schedule can only send a task the worker registers (registered: {known}); "
                "check the name with `dataforge tasks` or add the task to DATAFORGE_TASK_PACKAGES",
            )
        return params


def catalog_from_app(app: Celery) -> TaskCatalog:
    """The schedulable tasks of ``app`` (its task modules imported, as the worker does).

    Celery's registry decides whether a message runs or is discarded as unregistered, so only
    names a worker runs (``in_celery``) are accepted; REGISTERED_TASKS contributes the params.
    Built-ins and compat shims are left out by the registry.
    """
    return TaskCatalog({
        name: TaskParams.from_registry(entry.get("params"))
        for name, entry in get_registered_tasks(app).items()
        if entry.get("in_celery")
    })
