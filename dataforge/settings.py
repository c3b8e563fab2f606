"""One frozen settings object, read from the environment once, at the edge.

Only :meth:`Settings.from_env` looks at environment variables; the app factory
(:func:`dataforge.celery_app.create_app`) and the CLI call it and pass the result down.
Nothing else in the package reads ``os.environ``. docs/configuration.md documents every field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from dataforge.errors import ConfigurationError
from dataforge.protocol import MIN_CATCHUP_WINDOW_SECONDS, LockUnavailablePolicy, MissedRunPolicy

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "DATAFORGE_"


E = TypeVar("E", bound=StrEnum)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(name, raw, "expected 1/0, true/false, yes/no or on/off")


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(name, raw, "expected a number of seconds") from None
    if value < minimum:
        raise ConfigurationError(name, raw, f"must be >= {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigurationError(name, raw, "expected a whole number") from None
    if not minimum <= value <= maximum:
        raise ConfigurationError(name, raw, f"must be between {minimum} and {maximum}")
    return value


#: Shorter tokens are guessable; ``secrets.token_urlsafe(32)`` gives 43 characters.
_MIN_TOKEN_LENGTH = 16


def _token(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    if len(value) < _MIN_TOKEN_LENGTH:
        # The value itself is never echoed: it is a secret even when it is a bad one.
        raise ConfigurationError(name, "<hidden>", f"must be at least {_MIN_TOKEN_LENGTH} characters; "
                                 "generate one with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return value


def _seconds(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    """Whole seconds >= ``minimum``, or ``None`` when unset or empty."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(name, raw, "expected a whole number of seconds, or empty for none") from None
    if value < minimum:
        raise ConfigurationError(name, raw, f"must be >= {minimum} (or empty for none)")
    return value


def _choice(env: Mapping[str, str], name: str, default: E) -> E:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    enum = type(default)
    try:
        return enum(raw.strip().lower())
    except ValueError:
        raise ConfigurationError(name, raw, f"expected one of {', '.join(enum)}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the runtime needs to know about its environment.

    Defaults are the *embedded* setup: SQLite files in the working directory for the
    schedules, the broker (kombu's ``sqla+sqlite`` transport works across processes) and the
    results, and locks in the database, so a fresh machine needs no server at all.
    """

    database_url: str
    broker_url: str
    result_backend: str
    redis_url: str | None = None
    task_packages: tuple[str, ...] = ("dataforge.tasks",)
    legacy_tasks: bool = False
    #: Lock lease length. Renewed every ttl/3 while the task runs; a killed worker's lock
    #: frees itself after at most one ttl.
    lock_ttl: float = 60.0
    lock_unavailable: LockUnavailablePolicy = LockUnavailablePolicy.RETRY
    #: Longest beat sleeps between ticks; an edit made by raw SQL shows up within it.
    beat_max_interval: float = 5.0
    #: Leader lease of beat; a dead leader (or a beat restarted after kill -9) is replaced
    #: within this bound.
    beat_leader_ttl: float = 10.0
    missed_runs: MissedRunPolicy = MissedRunPolicy.ONCE
    #: Seconds: missed runs due longer ago are not sent, for rows without their own
    #: ``catchup_window_seconds``. ``None``: unbounded.
    catchup_window: int | None = None
    #: JSON map of legacy ``handler_path`` spellings to task names, written by ``dataforge convert``.
    legacy_map_file: Path | None = None
    #: The only namespace legacy ``handler_path`` values may resolve into.
    scripts_package: str = "scripts"
    #: Execution records on PostgreSQL wait for their WAL flush. Off by default: a server crash
    #: may lose the last ~0.6 s of execution rows and outcome counters (never due times, never
    #: locks), for about a third less recording cost (docs/runtime.md).
    recorder_synchronous_commit: bool = False
    #: The bearer token of ``dataforge serve`` (HTTP API, pages, /metrics). Unset: the console
    #: binds loopback only. Kept out of ``repr`` so a logged Settings never shows it.
    api_token: str | None = field(default=None, repr=False)
    #: Where ``dataforge serve`` listens unless ``--host`` / ``--port`` say otherwise.
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    #: Finished execution rows older than this many days are pruned by the leading beat
    #: (hourly) and by ``dataforge history prune``; 0 keeps everything. Running rows never are.
    history_retention_days: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        """Build settings from ``DATAFORGE_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        base = (cwd or Path.cwd()).resolve()
        database_url = env.get("DATAFORGE_DATABASE_URL") or f"sqlite:///{base / 'dataforge.db'}"
        broker_url = env.get("DATAFORGE_BROKER_URL") or f"sqla+sqlite:///{base / 'dataforge-broker.db'}"
        result_backend = (
            env.get("DATAFORGE_RESULT_BACKEND") or f"db+sqlite:///{base / 'dataforge-results.db'}"
        )
        packages = tuple(
            p.strip() for p in env.get("DATAFORGE_TASK_PACKAGES", "dataforge.tasks").split(",") if p.strip()
        )
        if not packages:
            raise ConfigurationError("DATAFORGE_TASK_PACKAGES", env.get("DATAFORGE_TASK_PACKAGES"), "empty")
        map_file = env.get("DATAFORGE_LEGACY_MAP_FILE")
        return cls(
            database_url=database_url,
            broker_url=broker_url,
            result_backend=result_backend,
            redis_url=env.get("DATAFORGE_REDIS_URL") or None,
            task_packages=packages,
            legacy_tasks=_bool(env, "DATAFORGE_LEGACY_TASKS", False),
            lock_ttl=_float(env, "DATAFORGE_LOCK_TTL", 60.0, minimum=0.5),
            lock_unavailable=_choice(env, "DATAFORGE_LOCK_UNAVAILABLE", LockUnavailablePolicy.RETRY),
            beat_max_interval=_float(env, "DATAFORGE_BEAT_MAX_INTERVAL", 5.0, minimum=0.05),
            beat_leader_ttl=_float(env, "DATAFORGE_BEAT_LEADER_TTL", 10.0, minimum=0.5),
            missed_runs=_choice(env, "DATAFORGE_MISSED_RUNS", MissedRunPolicy.ONCE),
            catchup_window=_seconds(env, "DATAFORGE_CATCHUP_WINDOW", minimum=MIN_CATCHUP_WINDOW_SECONDS),
            legacy_map_file=Path(map_file) if map_file else None,
            scripts_package=env.get("DATAFORGE_SCRIPTS_PACKAGE", "scripts") or "scripts",
            recorder_synchronous_commit=_bool(env, "DATAFORGE_RECORDER_SYNCHRONOUS_COMMIT", False),
            api_token=_token(env, "DATAFORGE_API_TOKEN"),
            web_host=(env.get("DATAFORGE_WEB_HOST") or "127.0.0.1").strip() or "127.0.0.1",
            web_port=_int(env, "DATAFORGE_WEB_PORT", 8080, minimum=1, maximum=65535),
            history_retention_days=_int(env, "DATAFORGE_HISTORY_RETENTION_DAYS", 30, minimum=0, maximum=36500),
        )

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and the CLI's --option overrides)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process (worker, beat)."""
        env = {
            "DATAFORGE_DATABASE_URL": self.database_url,
            "DATAFORGE_BROKER_URL": self.broker_url,
            "DATAFORGE_RESULT_BACKEND": self.result_backend,
            "DATAFORGE_TASK_PACKAGES": ",".join(self.task_packages),
            "DATAFORGE_LEGACY_TASKS": "1" if self.legacy_tasks else "0",
            "DATAFORGE_LOCK_TTL": repr(self.lock_ttl),
            "DATAFORGE_LOCK_UNAVAILABLE": self.lock_unavailable,
            "DATAFORGE_BEAT_MAX_INTERVAL": repr(self.beat_max_interval),
            "DATAFORGE_BEAT_LEADER_TTL": repr(self.beat_leader_ttl),
            "DATAFORGE_MISSED_RUNS": self.missed_runs,
            "DATAFORGE_CATCHUP_WINDOW": "" if self.catchup_window is None else str(self.catchup_window),
            "DATAFORGE_SCRIPTS_PACKAGE": self.scripts_package,
            "DATAFORGE_RECORDER_SYNCHRONOUS_COMMIT": "1" if self.recorder_synchronous_commit else "0",
            "DATAFORGE_HISTORY_RETENTION_DAYS": str(self.history_retention_days),
        }
        if self.redis_url:
            env["DATAFORGE_REDIS_URL"] = self.redis_url
        if self.legacy_map_file is not None:
            env["DATAFORGE_LEGACY_MAP_FILE"] = str(self.legacy_map_file)
        if self.api_token is not None:
            env["DATAFORGE_API_TOKEN"] = self.api_token
        if self.web_host != "127.0.0.1":
            env["DATAFORGE_WEB_HOST"] = self.web_host
        if self.web_port != 8080:
            env["DATAFORGE_WEB_PORT"] = str(self.web_port)
        return env
