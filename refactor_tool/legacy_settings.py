"""The legacy settings the runtime does not read, and what it uses instead (reported, never deleted).

The design's ``config.py`` cleanup: once the worker runs ``dataforge.celery_app``, the legacy
app's Celery settings (``Celery(broker=...)``, ``conf.update(...)``) and the legacy
``app/config.py`` values are not read by the runtime any more; it is configured by its own
``DATAFORGE_*`` settings (docs/configuration.md). The codemod says so for each one, with what
replaces it. It never deletes a setting of ``app/config.py``: the rest of the backend (its
API, its database module) may still read it, and the report says who does.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

__all__ = ["ConfigSetting", "celery_setting_note", "config_settings", "runtime_counterpart"]

_TASK_PACKAGES = (
    "the worker imports every module of DATAFORGE_TASK_PACKAGES; the legacy executor comes back only with the "
    "legacy switch (`dataforge legacy enable`), not through an include list"
)
_JSON = "the runtime sends and accepts JSON only"
_UTC = "the runtime runs in UTC"
_LIMITS = "each schedule's timeout_seconds sets the time limits of its runs"
_OWN = "the runtime's app sets its own value (docs/runtime.md)"

#: A Celery setting (or ``Celery()`` argument) -> what the runtime does instead.
_CELERY: dict[str, str] = {
    "broker": "the runtime reads DATAFORGE_BROKER_URL",
    "broker_url": "the runtime reads DATAFORGE_BROKER_URL",
    "backend": "the runtime reads DATAFORGE_RESULT_BACKEND",
    "result_backend": "the runtime reads DATAFORGE_RESULT_BACKEND",
    "include": _TASK_PACKAGES,
    "imports": _TASK_PACKAGES,
    "autodiscover_tasks": _TASK_PACKAGES,
    "beat_scheduler": "beat uses dataforge.celery_scheduler:DatabaseScheduler",
    "beat_schedule": "beat reads the schedules from the database",
    "beat_max_loop_interval": "the runtime reads DATAFORGE_BEAT_MAX_INTERVAL",
    "task_serializer": _JSON,
    "result_serializer": _JSON,
    "accept_content": _JSON,
    "result_accept_content": _JSON,
    "timezone": _UTC,
    "enable_utc": _UTC,
    "task_time_limit": _LIMITS,
    "task_soft_time_limit": _LIMITS,
    "task_acks_late": _OWN,
    "task_reject_on_worker_lost": _OWN,
    "worker_prefetch_multiplier": _OWN,
    "task_track_started": _OWN,
    "result_expires": _OWN,
    "worker_send_task_events": _OWN,
}

#: A legacy ``app/config.py`` setting, or the environment variable it reads -> the runtime's.
_CONFIG: dict[str, str] = {
    "DATABASE_URL": "DATAFORGE_DATABASE_URL",
    "BROKER_URL": "DATAFORGE_BROKER_URL",
    "CELERY_BROKER_URL": "DATAFORGE_BROKER_URL",
    "RESULT_BACKEND": "DATAFORGE_RESULT_BACKEND",
    "CELERY_RESULT_BACKEND": "DATAFORGE_RESULT_BACKEND",
    "REDIS_URL": "DATAFORGE_REDIS_URL",
    "TASK_LOCK_TTL": "DATAFORGE_LOCK_TTL",
    "LOCK_TTL": "DATAFORGE_LOCK_TTL",
}


def celery_setting_note(key: str, line: int) -> str:
    """The report line for a Celery setting of the legacy app, which the runtime's app ignores."""
    known = _CELERY.get(key)
    if known is not None:
        return f"line {line}: {key} is not applied: {known}"
    return (
        f"line {line}: {key} is not applied: the worker's app is dataforge.celery_app, configured only by "
        "its DATAFORGE_* settings"
    )


def runtime_counterpart(name: str, env: str | None = None) -> str | None:
    """The ``DATAFORGE_*`` setting that replaces a legacy config value, when there is one."""
    return _CONFIG.get(name) or (_CONFIG.get(env) if env else None)


@dataclass(frozen=True)
class ConfigSetting:
    """A module-level ``NAME = ...`` of the legacy settings module."""

    name: str
    line: int
    #: The environment variable it reads (``os.environ.get("X")``, ``os.getenv("X")``, ``os.environ["X"]``).
    env: str | None


def _env_name(value: ast.expr) -> str | None:
    for node in ast.walk(value):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and node.args:
            func = ast.unparse(node.func)
            if func in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
    return None


def config_settings(tree: ast.Module) -> list[ConfigSetting]:
    """Every upper-case module-level setting of ``tree``, in line order."""
    out: list[ConfigSetting] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper():
                out.append(ConfigSetting(target.id, stmt.lineno, _env_name(value)))
    return out
