"""What every verb shares: the settings built once at the edge, the one way to open the
database, the ``--json`` option and strict JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
from rich.console import Console

from dataforge.db import Database
from dataforge.errors import ConfigurationError
from dataforge.schema import OLDEST_FOR_WRITERS, verify_schema
from dataforge.settings import Settings

if TYPE_CHECKING:
    from dataforge.catalog.registry import TaskCatalog
    from dataforge.runtime import DataForgeApp

__all__ = [
    "JSON_META",
    "CliContext",
    "emit_json",
    "json_option",
    "open_database",
    "pass_cli",
    "stderr_console",
]

F = TypeVar("F", bound=Callable[..., Any])

#: ``ctx.meta`` key (shared by every nested context) holding whether ``--json`` was given,
#: so the root group's error handler answers in the format the verb was asked for.
JSON_META: Final = "dataforge.json"


@contextmanager
def open_database(url: str, *, check_schema: bool = True, oldest: str = OLDEST_FOR_WRITERS) -> Iterator[Database]:
    """The database at ``url``, disposed afterwards. ``check_schema``: first refuse one without
    a schema this release runs on (:class:`~dataforge.errors.SchemaError`) or that cannot be
    reached (:class:`~dataforge.errors.DatabaseUnavailableError`); ``dataforge db`` verbs,
    which create and move the schema, open it without. ``oldest``: the oldest revision the verb
    runs on (the schedule verbs need every column; the legacy switch works from 0002_expand on,
    where a rollback runs)."""
    db = Database(url)
    try:
        if check_schema:
            verify_schema(db, oldest)
        yield db
    finally:
        db.dispose()


@dataclass(frozen=True)
class CliContext:
    """Built once by the root group; every verb receives it via :func:`pass_cli`."""

    settings: Settings
    console: Console

    def database(self, oldest: str = OLDEST_FOR_WRITERS) -> AbstractContextManager[Database]:
        """``with cli.database() as db:`` the configured database, its schema checked."""
        return open_database(self.settings.database_url, oldest=oldest)

    def app_and_catalog(self) -> tuple[DataForgeApp, TaskCatalog]:
        """The Celery app built from the settings, with its task modules imported (as the
        worker imports them), and the tasks a schedule may send."""
        from dataforge.catalog.registry import catalog_from_app
        from dataforge.celery_app import create_app

        try:
            app = create_app(self.settings)
            return app, catalog_from_app(app)
        except ImportError as exc:
            raise ConfigurationError(
                "DATAFORGE_TASK_PACKAGES", ",".join(self.settings.task_packages),
                f"cannot import the task packages ({exc}); check the names and that they are on PYTHONPATH",
            ) from exc


def _build(ctx: click.Context) -> CliContext:
    obj = ctx.find_object(CliContext)
    if obj is None:
        obj = CliContext(settings=Settings.from_env(), console=Console())
        ctx.obj = obj
    return obj


def pass_cli(f: F) -> F:
    """Decorator: inject the :class:`CliContext` as the first argument."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return ctx.invoke(f, _build(ctx), *args, **kwargs)

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper  # type: ignore[return-value]


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta[JSON_META] = value
    return value


def json_option(help_text: str = "Print one JSON document on stdout (errors too) instead of text.") -> Callable[[F], F]:
    """``--json`` as ``as_json``. Eager, so it is known before any other option can fail:
    a refusal of ``--interval abc`` is then printed as JSON too."""
    return click.option("--json", "as_json", is_flag=True, is_eager=True, expose_value=True,
                        callback=_remember_json, help=help_text)


def stderr_console() -> Console:
    return Console(stderr=True)


def emit_json(data: Any) -> None:
    """Machine output for ``--json``: one strict JSON document on stdout, nothing else.

    ``allow_nan=False``: ``NaN`` is not JSON (strict parsers, Node and PostgreSQL's ``::json``
    reject it); stored values are read through the kwargs rule, so none can reach here.
    """
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")
