"""The Alembic ``Config`` built in code: what ``dataforge db`` and the tests use.

It is the same environment as ``alembic.ini`` (``script_location`` = this package), found
from the installed package, so ``dataforge db`` works without the repository checkout.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any, TextIO

from alembic.config import Config

from dataforge.settings import Settings
from migrations import MIGRATIONS_DIR, OPTIONAL_DIR, VERSIONS_DIR
from migrations.options import SETTINGS_KEY

__all__ = ["alembic_config", "x_dict"]


def alembic_config(
    settings: Settings,
    *,
    url: str | None = None,
    x_args: Mapping[str, str] | None = None,
    optional: bool = False,
    output: TextIO | None = None,
    configure_logger: bool = False,
) -> Config:
    """A Config for ``settings`` (URL override ``url``), with ``-x`` options ``x_args``.

    ``optional`` adds ``migrations/optional`` (the drop-handler_path revision) to the version
    locations. ``output`` receives ``--sql`` output (stdout by default).
    """
    cfg = Config(output_buffer=output, cmd_opts=Namespace(x=[f"{k}={v}" for k, v in (x_args or {}).items()]))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    locations = [str(VERSIONS_DIR)] + ([str(OPTIONAL_DIR)] if optional else [])
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(locations))
    cfg.set_main_option("sqlalchemy.url", (url or settings.database_url).replace("%", "%%"))
    cfg.attributes[SETTINGS_KEY] = settings
    cfg.attributes["configure_logger"] = configure_logger
    return cfg


def x_dict(values: Any) -> dict[str, str]:
    """``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}`` (the CLI's repeated ``-x``)."""
    out: dict[str, str] = {}
    for value in values or ():
        key, sep, val = str(value).partition("=")
        if not sep:
            raise ValueError(f"-x {value!r}: expected key=value")
        out[key.strip()] = val
    return out
