"""Where a legacy ``handler_path`` leads: the new task it maps to, or the module whose ``run``
the compat shim calls. Nothing here imports a job; every function refuses what is not a
legacy spelling inside the scripts package or an entry of the map file.
"""

from __future__ import annotations

import importlib.util
import re

from dataforge.errors import ConfigurationError
from dataforge.legacy.errors import LegacyHandlerError
from dataforge.legacy.paths import HandlerMap, parse_handler_path
from dataforge.settings import Settings

__all__ = ["forward_task_name", "legacy_job_module", "load_handler_map", "resolve_legacy_script"]


def load_handler_map(settings: Settings) -> HandlerMap:
    """The map file of ``DATAFORGE_LEGACY_MAP_FILE``, else an empty map (the rule only)."""
    if settings.legacy_map_file is None:
        return HandlerMap.empty(settings.scripts_package)
    try:
        return HandlerMap.load(settings.legacy_map_file)
    except (OSError, ValueError) as exc:
        raise ConfigurationError("DATAFORGE_LEGACY_MAP_FILE", str(settings.legacy_map_file), str(exc)) from exc


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
