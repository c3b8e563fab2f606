"""Where the legacy application's own files are, and the names they are known by.

The legacy backend's ``app/`` package holds its infrastructure beside ``app/tasks/``: the Celery
app, the generic executor, the signal handlers, the script registry, the models and the
settings. The design's file change list changes each of them (docs/codemod.md, *The legacy
app's files*). Everything is derived from the one legacy name every deploy depends on,
:data:`dataforge.legacy.names.LEGACY_TASK_NAME` (``app.celery_tasks.execute_scheduled_task``).
"""

from __future__ import annotations

from typing import Final

from dataforge.legacy.names import LEGACY_TASK_NAME

__all__ = [
    "APP_PACKAGE",
    "CELERY_APP_MODULE",
    "CONFIG_MODULES",
    "EXECUTOR_FUNCTION",
    "EXECUTOR_MODULE",
    "MODEL_MODULES",
    "POLLER_FUNCTION",
    "RENAMED_EXECUTOR_MODULE",
    "REGISTRY_MODULE",
    "SCHEDULES_TABLE",
    "SIGNALS_MODULE",
    "module_path",
]

#: ``app.celery_tasks`` and ``execute_scheduled_task``.
EXECUTOR_MODULE, _, EXECUTOR_FUNCTION = LEGACY_TASK_NAME.rpartition(".")
#: The legacy application package (``app``).
APP_PACKAGE: Final = EXECUTOR_MODULE.partition(".")[0]
#: The design's rename of the executor module, kept for a full rollback of the code.
RENAMED_EXECUTOR_MODULE: Final = f"{EXECUTOR_MODULE}_legacy"
CELERY_APP_MODULE: Final = f"{APP_PACKAGE}.celery_app"
SIGNALS_MODULE: Final = f"{APP_PACKAGE}.celery_signals"
REGISTRY_MODULE: Final = f"{APP_PACKAGE}.scheduler.registry"
#: ``app/models.py`` or a module of the ``app/models/`` package (``app/models/task.py``).
MODEL_MODULES: Final = f"{APP_PACKAGE}.models"
#: ``app/config.py`` or ``app/config/__init__.py``.
CONFIG_MODULES: Final = f"{APP_PACKAGE}.config"
#: The legacy poller task that a static beat entry ran every minute; DatabaseScheduler replaces it.
POLLER_FUNCTION: Final = "dispatch_due_tasks"
#: The table whose model gets ``handler_path`` marked deprecated.
SCHEDULES_TABLE: Final = "scheduled_tasks"


def module_path(module: str, package: bool = False) -> str:
    """``app.celery_tasks`` -> ``app/celery_tasks.py`` (``package``: ``.../__init__.py``)."""
    base = module.replace(".", "/")
    return f"{base}/__init__.py" if package else f"{base}.py"
