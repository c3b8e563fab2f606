"""Task discovery for the API: scripts/*.py jobs plus the REGISTERED_TASKS of app/tasks."""

import importlib
import inspect
import pkgutil

import scripts
from app.tasks import REGISTERED_TASKS


def discover_scripts():
    """Import every job module in scripts/ and return its metadata, keyed by handler_path."""
    found = {}
    for info in pkgutil.iter_modules(scripts.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"scripts.{info.name}")
        run = getattr(module, "run", None)
        if run is None:
            continue
        found[f"scripts:{info.name}"] = {
            "name": getattr(module, "NAME", info.name),
            "description": getattr(module, "DESCRIPTION", inspect.getdoc(module) or ""),
            "category": getattr(module, "CATEGORY", "scripts"),
            "params": getattr(module, "PARAMS", []),
        }
    return found


def get_registered_tasks():
    """What the API lists: both systems side by side."""
    tasks = dict(REGISTERED_TASKS)
    tasks.update(discover_scripts())
    return tasks
