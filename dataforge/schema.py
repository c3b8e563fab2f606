"""Is this database one this release can run on? The schema check of the CLI, the worker and beat.

Without it, a database that was never upgraded fails deep inside whatever touches it first:
a raw ``no such table`` from the CLI, 22 "could not record" lines and ten lock retries from a
task, a beat that logs "database unreachable" forever. With it, each of them says once what
is wrong and which command fixes it (``dataforge db upgrade``), before doing anything.

The rule: the database is at a revision from :data:`OLDEST_SUPPORTED` (``0002_expand``, where
a rollback runs: docs/rollback-notes.md) to the head, or at an optional revision after it; or
it has no Alembic version table but every table of the models (a schema created from the
models, as tests and ``metadata.create_all`` do). The core may not import the ``migrations``
package, so the revision ids are listed here; tests/dataforge/test_schema.py fails when they
and migrations/ disagree.
"""

from __future__ import annotations

import logging
import os
from typing import Final

from sqlalchemy import Connection, inspect, make_url, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError, SQLAlchemyError

from dataforge.db import Database, is_sqlite
from dataforge.errors import DatabaseUnavailableError, SchemaError
from dataforge.models import Base

__all__ = [
    "HEAD",
    "OLDEST_FOR_WRITERS",
    "OLDEST_SUPPORTED",
    "OPTIONAL_REVISIONS",
    "REVISIONS",
    "UPGRADE",
    "SchemaGate",
    "check_connection",
    "driver_reason",
    "may_be_schema_error",
    "missing_sqlite_folder",
    "safe_url",
    "unreachable",
    "verify_schema",
]

log = logging.getLogger(__name__)

#: The main line of migrations/versions, oldest first.
REVISIONS: Final = (
    "0001_legacy_baseline", "0002_expand", "0003_data", "0004_contract", "0005_change_triggers",
    "0006_executions_hot_close", "0008_schedule_policies",
)  # fmt: skip
HEAD: Final = REVISIONS[-1]
#: Revisions of migrations/optional: applied only when asked for, after the head.
OPTIONAL_REVISIONS: Final = ("0007_drop_handler_path",)
#: The oldest revision with every table and column the runtime uses. The later ones move data,
#: tighten constraints and add triggers and indexes the runtime does without.
OLDEST_SUPPORTED: Final = "0002_expand"
#: The oldest revision the schedule verbs (CLI, HTTP API) run on: they read and write every
#: column of the models. Beat and workers also run on older ones (a rollback to 0002_expand).
OLDEST_FOR_WRITERS: Final = "0008_schedule_policies"
#: The command that creates or upgrades the schema, as every message names it.
UPGRADE: Final = "run `dataforge db upgrade`"

_TABLES = frozenset(Base.metadata.tables)
_VERSION_TABLE = "alembic_version"


def safe_url(url: str) -> str:
    """The URL as people write it: password hidden, without SQLAlchemy's ``+driver`` suffix."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return "<unparsable URL>"
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


def driver_reason(exc: SQLAlchemyError) -> str:
    """The driver's first line (``Connection refused``), without SQLAlchemy's wrapping or
    the driver's class names."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0].strip() if lines else "no reason given"


def unreachable(url: str, exc: SQLAlchemyError) -> DatabaseUnavailableError:
    """The error for a database ``url`` that failed with ``exc`` on connecting."""
    reason = missing_sqlite_folder(url) or driver_reason(exc)
    fix = ("check DATAFORGE_DATABASE_URL" if is_sqlite(url)
           else "check DATAFORGE_DATABASE_URL and that the server is running and reachable")
    return DatabaseUnavailableError(safe_url(url), reason, fix)


def check_connection(conn: Connection, url: str, oldest: str = OLDEST_SUPPORTED) -> None:
    """Raise :class:`SchemaError` unless ``conn``'s database has a schema this release runs on
    (at ``oldest`` or later, or an optional revision)."""
    shown = safe_url(url)
    present = set(inspect(conn).get_table_names())
    revisions: list[str] = []
    if _VERSION_TABLE in present:
        revisions = [str(r) for r in conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalars()]
    missing = sorted(_TABLES - present)
    if not revisions:
        if not missing:
            return
        if "scheduled_tasks" in present:
            raise SchemaError(shown, "legacy", "holds the legacy scheduling tables, never migrated",
                              "run `dataforge db check`, then `dataforge db upgrade`")
        raise SchemaError(shown, "missing", "has no DataForge schema", f"{UPGRADE} to create it")
    supported = frozenset(REVISIONS[REVISIONS.index(oldest):] + OPTIONAL_REVISIONS)
    for revision in revisions:
        if revision in supported:
            continue
        if revision in REVISIONS:
            raise SchemaError(shown, "outdated",
                              f"is at revision {revision}, older than {oldest} (the oldest this "
                              "needs)", UPGRADE, revision)
        raise SchemaError(shown, "unknown",
                          f"is at revision {revision}, which this release does not know (a newer release "
                          f"migrated it?); this release runs on {OLDEST_SUPPORTED} .. {HEAD}",
                          "see `dataforge db current`, or run the release that migrated it", revision)
    if missing:
        raise SchemaError(shown, "missing", f"is at revision {revisions[0]} but has no table {', '.join(missing)}",
                          "it was changed outside the migrations; restore the tables (`dataforge db sql` "
                          "prints their DDL)", revisions[0])


def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL; ``None`` for an in-memory or URI-style database."""
    try:
        path = make_url(url).database
    except SQLAlchemyError:
        return None
    if not is_sqlite(url) or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return os.path.abspath(path)


def missing_sqlite_folder(url: str) -> str | None:
    """``"the folder X does not exist"`` for a SQLite file in a missing folder (SQLite itself
    only says "unable to open database file"), else ``None``."""
    path = _sqlite_path(url)
    if path is None or os.path.isdir(os.path.dirname(path)):
        return None
    return f"the folder {os.path.dirname(path)} does not exist"


def _sqlite_file_problem(url: str) -> None:
    """A SQLite file that does not exist: say so without creating an empty file on the way."""
    path = _sqlite_path(url)
    if path is None or os.path.exists(path):
        return
    folder = missing_sqlite_folder(url)
    if folder is not None:
        raise DatabaseUnavailableError(safe_url(url), folder, "check DATAFORGE_DATABASE_URL")
    raise SchemaError(safe_url(url), "missing", "does not exist yet", f"{UPGRADE} to create it")


def verify_schema(db: Database, oldest: str = OLDEST_SUPPORTED) -> None:
    """:class:`SchemaError` unless the database is one this release runs on (at ``oldest`` or
    later); :class:`DatabaseUnavailableError` when it cannot be reached."""
    _sqlite_file_problem(db.url)
    try:
        with db.engine.connect() as conn:
            check_connection(conn, db.url, oldest)
    except SQLAlchemyError as exc:
        raise unreachable(db.url, exc) from exc


def may_be_schema_error(exc: BaseException) -> bool:
    """Whether a failed statement may have failed for want of a table or column (then the
    schema check tells the real story); connection failures and the like are not."""
    if isinstance(exc, ProgrammingError):
        return True
    return isinstance(exc, OperationalError) and "no such" in str(exc.orig)


class SchemaGate:
    """The runtime's schema check: once per process when it passes, again after each failure
    (an upgrade run meanwhile is seen at once). Reports a problem in the log once."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ok = False
        self._reported = False

    def problem(self) -> SchemaError | None:
        """The schema problem, or ``None`` when there is none or the database cannot be
        reached (an outage is not a schema problem: the caller's own retries handle it)."""
        if self._ok:
            return None
        try:
            verify_schema(self.db)
        except SchemaError as exc:
            return exc
        except DatabaseUnavailableError:
            return None
        self._ok = True
        return None

    def require(self) -> None:
        """Raise the :class:`SchemaError` if there is one."""
        problem = self.problem()
        if problem is not None:
            raise problem

    def report_once(self, what: str) -> SchemaError | None:
        """Log the problem once (``what`` says what cannot be done); the problem, if there is one."""
        problem = self.problem()
        if problem is not None and not self._reported:
            self._reported = True
            log.error("%s: %s", what, problem)
        return problem

    def refuse_to_start(self, process: str) -> None:
        """At the start of a worker or beat: exit with one line when the schema is wrong.

        ``SystemExit``: Celery catches ``Exception`` around start-up (and logs a traceback);
        a schema that was never upgraded is not a crash, it is a refusal. An unreachable
        database does not stop the start: the process rides out outages on its own.
        """
        problem = self.problem()
        if problem is not None:
            raise SystemExit(f"{process} not started: {problem}")
