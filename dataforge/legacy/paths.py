"""The one definition of legacy ``handler_path`` spellings and the task name they map to.

Real rows spell the same job four ways: ``scripts:sync_accounts``, ``scripts.sync_accounts``,
``scripts.sync_accounts:run`` and ``scripts/sync_accounts.py``. The codemod's map file, the
data migration, ``dataforge db check`` and the compat shim all use these functions (the
migration inlines the same rule as SQL, and its tests compare the two).

Only names inside the scripts namespace are ever produced: anything else (``os:system``,
``scripts.sub.mod``, ``../x.py``) parses to ``None`` and is refused by the callers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MAP_FILE_VERSION",
    "HandlerMap",
    "handler_path_spellings",
    "parse_handler_path",
    "task_name_for_module",
]

MAP_FILE_VERSION = 1
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def _patterns(package: str) -> list[re.Pattern[str]]:
    p = re.escape(package)
    return [
        re.compile(rf"^{p}:(?P<m>{_IDENT})$"),
        re.compile(rf"^{p}\.(?P<m>{_IDENT})$"),
        re.compile(rf"^{p}\.(?P<m>{_IDENT}):run$"),
        re.compile(rf"^{p}/(?P<m>{_IDENT})\.py$"),
    ]


def parse_handler_path(handler_path: str | None, scripts_package: str = "scripts") -> str | None:
    """The job module name a legacy ``handler_path`` names, or ``None`` if it is not one of
    the four known spellings inside ``scripts_package``. Surrounding whitespace is ignored."""
    if handler_path is None:
        return None
    value = handler_path.strip()
    for rx in _patterns(scripts_package):
        match = rx.match(value)
        if match:
            module = match.group("m")
            # Helpers (`_common`) and dunders are never jobs.
            return None if module.startswith("_") else module
    return None


def handler_path_spellings(module: str, scripts_package: str = "scripts") -> list[str]:
    """Every legacy spelling of ``module``, canonical (``scripts:<m>``) first."""
    p = scripts_package
    return [f"{p}:{module}", f"{p}.{module}", f"{p}.{module}:run", f"{p}/{module}.py"]


def task_name_for_module(module: str) -> str:
    """The default rule: ``scripts:<m>`` becomes the task ``dataforge.<m>``."""
    return f"dataforge.{module}"


@dataclass(frozen=True)
class HandlerMap:
    """The map file ``dataforge convert`` writes: every legacy spelling to a task name.

    Format (JSON)::

        {"version": 1, "scripts_package": "scripts", "tasks_package": "app.tasks",
         "handlers": {"scripts:sync_accounts": "dataforge.sync_accounts", ...},
         "modules": {"sync_accounts": {"task_name": "dataforge.sync_accounts",
                                        "module": "app.tasks.sync_accounts",
                                        "function": "sync_accounts"}}}
    """

    scripts_package: str
    tasks_package: str
    handlers: dict[str, str]
    modules: dict[str, dict[str, str]]

    def task_name_for(self, handler_path: str | None) -> str | None:
        """Map first (exact spelling), then the parsed module, then the default rule."""
        if handler_path is None:
            return None
        exact = self.handlers.get(handler_path.strip())
        if exact is not None:
            return exact
        module = parse_handler_path(handler_path, self.scripts_package)
        if module is None:
            return None
        entry = self.modules.get(module)
        return entry["task_name"] if entry else task_name_for_module(module)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MAP_FILE_VERSION,
            "scripts_package": self.scripts_package,
            "tasks_package": self.tasks_package,
            "handlers": dict(sorted(self.handlers.items())),
            "modules": dict(sorted(self.modules.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "<map>") -> HandlerMap:
        if data.get("version") != MAP_FILE_VERSION:
            raise ValueError(f"{source}: unsupported map file version {data.get('version')!r}")
        return cls(
            scripts_package=str(data.get("scripts_package", "scripts")),
            tasks_package=str(data.get("tasks_package", "app.tasks")),
            handlers={str(k): str(v) for k, v in dict(data.get("handlers", {})).items()},
            modules={str(k): dict(v) for k, v in dict(data.get("modules", {})).items()},
        )

    @classmethod
    def load(cls, path: Path) -> HandlerMap:
        with path.open(encoding="utf-8") as fh:
            return cls.from_json(json.load(fh), source=str(path))

    @classmethod
    def empty(cls, scripts_package: str = "scripts") -> HandlerMap:
        return cls(scripts_package=scripts_package, tasks_package="app.tasks", handlers={}, modules={})
