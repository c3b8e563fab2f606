"""What the revisions may be told from outside: ``-x key=value`` options and the settings.

``env.py`` builds one :class:`MigrationOptions` per run and stores it in
``config.attributes``; revisions read it with :func:`current_options`. Everything a revision
needs from a file (the handler map) is loaded here, once, and handed over as plain data, so
the offline script (``--sql``) contains it as literals a reviewer can read.

Options (``alembic -x key=value`` or ``dataforge db ... -x key=value``):

``url``               database URL (else ``sqlalchemy.url``, else ``DATAFORGE_DATABASE_URL``)
``map``               handler map file (else ``DATAFORGE_LEGACY_MAP_FILE``; else the rule only)
``scripts_package``   legacy scripts namespace (else the map file's, else the setting)
``on_unmappable``     ``refuse`` (default) or ``pause``: what 0003_data does with active rows
                      that name no task (see docs/migrations.md)
``allow_drop_data``   ``1`` lets a downgrade below the baseline drop tables that hold rows
``legacy_tables``     ``adopt``: for ``--sql`` only, the target database already has the legacy
                      tables (an online run finds that out by itself), so the script from
                      ``base`` creates alembic_version but not the tables
``legacy_db``         for ``--sql`` only: the legacy database to read (read-only), so the script
                      carries the Python step's conversions as literal UPDATEs (implies
                      ``legacy_tables=adopt``; ``dataforge db sql --legacy-db URL``)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from alembic import context

from dataforge.legacy.paths import HandlerMap
from dataforge.settings import Settings
from migrations.errors import MigrationOptionError

__all__ = ["OPTIONS_KEY", "REPORTS_KEY", "SETTINGS_KEY", "MigrationOptions", "UnmappablePolicy", "current_options"]

#: ``config.attributes`` keys: the options of this run, and settings handed in by the CLI.
OPTIONS_KEY = "dataforge_options"
SETTINGS_KEY = "dataforge_settings"
#: Where revisions leave their reports for the caller (``dataforge db`` prints them).
REPORTS_KEY = "dataforge_reports"

UnmappablePolicy = Literal["refuse", "pause"]
_TRUE = {"1", "true", "yes", "on"}
_KNOWN = {"url", "map", "scripts_package", "on_unmappable", "allow_drop_data", "legacy_tables", "legacy_db"}


@dataclass(frozen=True)
class MigrationOptions:
    """Inputs of the data revisions, resolved from ``-x`` options and settings."""

    #: Exact legacy spelling -> task name (the map file's ``handlers``).
    handlers: Mapping[str, str] = field(default_factory=dict)
    #: Script module -> task name (the map file's ``modules``).
    modules: Mapping[str, str] = field(default_factory=dict)
    scripts_package: str = "scripts"
    on_unmappable: UnmappablePolicy = "refuse"
    #: DATAFORGE_LEGACY_TASKS of the migrating process (the switch's environment override).
    legacy_switch_env: bool = False
    allow_drop_data: bool = False
    #: Offline only: the legacy tables exist, the baseline adopts them instead of creating them.
    adopt_legacy_tables: bool = False
    #: Where the map came from, for reports (``None``: the rule ``dataforge.<module>`` only).
    map_source: str | None = None
    #: Offline only: the legacy database the Python step reads its rows from.
    legacy_db: str | None = None

    @classmethod
    def resolve(cls, x_args: Mapping[str, str], settings: Settings) -> MigrationOptions:
        unknown = sorted(set(x_args) - _KNOWN)
        if unknown:
            raise MigrationOptionError(unknown[0], x_args[unknown[0]], f"unknown option; known: {sorted(_KNOWN)}")
        map_path: Path | None = Path(x_args["map"]) if x_args.get("map") else settings.legacy_map_file
        handler_map: HandlerMap | None = None
        if map_path is not None:
            try:
                handler_map = HandlerMap.load(map_path)
            except (OSError, ValueError) as exc:
                raise MigrationOptionError("map", str(map_path), f"cannot read the handler map: {exc}") from exc
        policy = x_args.get("on_unmappable", "refuse").strip().lower()
        if policy not in ("refuse", "pause"):
            raise MigrationOptionError("on_unmappable", policy, "expected refuse or pause")
        adopt = x_args.get("legacy_tables", "").strip().lower()
        if adopt not in ("", "adopt", "create"):
            raise MigrationOptionError("legacy_tables", adopt, "expected adopt or create")
        legacy_db = x_args.get("legacy_db", "").strip() or None
        if legacy_db is not None and adopt == "create":
            raise MigrationOptionError("legacy_tables", adopt, "legacy_db= reads an existing legacy database: adopt")
        scripts_package = (
            x_args.get("scripts_package")
            or (handler_map.scripts_package if handler_map is not None else None)
            or settings.scripts_package
        )
        return cls(
            handlers=dict(handler_map.handlers) if handler_map else {},
            modules={m: e["task_name"] for m, e in handler_map.modules.items() if e.get("task_name")}
            if handler_map
            else {},
            scripts_package=scripts_package,
            on_unmappable=policy,  # type: ignore[arg-type]
            legacy_switch_env=settings.legacy_tasks,
            allow_drop_data=x_args.get("allow_drop_data", "").strip().lower() in _TRUE,
            adopt_legacy_tables=adopt == "adopt" or legacy_db is not None,
            map_source=str(map_path) if map_path is not None else None,
            legacy_db=legacy_db,
        )


def current_options() -> MigrationOptions:
    """The options of the running migration (defaults when env.py did not set any)."""
    opts = context.config.attributes.get(OPTIONS_KEY)
    return opts if isinstance(opts, MigrationOptions) else MigrationOptions()
