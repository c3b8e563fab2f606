"""Legacy databases for the migration tests: the schema files, rows with every quirk, snapshots.

A legacy database is built exactly as production's was: by running
the legacy schema file of its dialect (legacy_contract/schema.<dialect>.sql), never through Alembic.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text

from dataforge.db import Database, is_sqlite
from dataforge.settings import Settings
from migrations.config import alembic_config

__all__ = [
    "BLOCKING_ROWS",
    "HOSTILE_NAME",
    "LEGACY_DIR",
    "NO_JSON_FORM",
    "PYTHON_LITERAL_SHAPES",
    "QUIRK_EXECUTIONS",
    "QUIRK_SCHEDULES",
    "build_legacy_db",
    "any_db_url",
    "downgrade",
    "engine_for",
    "literal_schedules",
    "offline_sql",
    "rows",
    "schema_snapshot",
    "script",
    "upgrade",
]

#: The legacy schema files of the input contract, byte for byte as the legacy deployment ran them
#: (DATAFORGE_LEGACY_DIR points the tests at another copy).
LEGACY_DIR = Path(os.environ.get("DATAFORGE_LEGACY_DIR", Path(__file__).resolve().parent / "legacy_contract"))

SCHEDULE_COLS = (
    "id", "name", "task_type", "task_name", "handler_path", "interval_seconds", "cron_expression", "run_at",
    "timezone", "handler_kwargs", "status", "next_run_at", "last_run_at", "run_count", "created_at", "updated_at",
)  # fmt: skip

# (id, name, task_type, task_name, handler_path, interval, cron, run_at, timezone, kwargs, status,
#  next_run_at, last_run_at, run_count, created_at, updated_at)
T0 = "2024-01-02 03:04:05"
QUIRK_SCHEDULES: list[tuple[Any, ...]] = [
    (1, "colon", "interval", None, "scripts:sync_accounts", 3600, None, None, "UTC", '{"days": 7}', "active",
     "2024-05-01 00:00:00", T0, 3, T0, T0),
    (2, "dot", "interval", None, "scripts.sync_accounts", 60, None, None, "UTC", "", "active", None, None, 0, T0, T0),
    (3, "dot_run", "cron", None, "scripts.sync_accounts:run", None, "*/5 * * * *", None, "Europe/Berlin", "null",
     "active", None, None, 0, T0, T0),
    (4, "slash", "interval", None, "scripts/sync_accounts.py", 30, None, None, "UTC",
     "{'days': 7, 'full': True, 'tag': None, 'ratio': 0.5, 'ids': [1, 2], 'deep': {'x': False}}", "active",
     None, None, 0, T0, T0),
    (5, "moved", "interval", "dataforge.report", None, 300, None, None, "UTC", "{}", "active", None, None, 0, T0, T0),
    (6, "both_agree", "interval", "dataforge.cleanup", "scripts:cleanup", 300, None, None, "UTC", "{}", "active",
     None, None, 0, T0, T0),
    (7, "both_disagree", "interval", "dataforge.new_cleanup", "scripts:cleanup_old", 300, None, None, "UTC", "{}",
     "active", None, None, 0, T0, T0),
    (8, "missing_script", "interval", None, "scripts:gone", 300, None, None, "UTC", "{}", "paused",
     "2019-01-01 00:00:00", None, 0, T0, T0),
    (9, "junk_paused", "interval", None, "os:system", 300, None, None, "UTC", "{}", "paused", None, None, 0, T0, T0),
    (10, "nothing_disabled", "interval", None, None, 300, None, None, "UTC", "{}", "disabled", None, None, 0, T0, T0),
    (11, "leaked_keys", "interval", None, "scripts:sync_accounts", 300, None, None, "UTC",
     '{"_lock_key": "dataforge:lock:x", "scheduled_task_id": 11, "n": 1}', "active", None, None, 0, T0, T0),
    (12, "repr_leaked", "interval", None, "scripts:sync_accounts", 300, None, None, "UTC",
     "{'_lock_key': 'k', 'n': 2}", "active", None, None, 0, T0, T0),
    (13, "repr_true_in_string", "interval", None, "scripts:sync_accounts", 300, None, None, "UTC",
     "{'msg': 'True story'}", "active", None, None, 0, T0, T0),
    (14, "repr_backslash", "interval", None, "scripts:sync_accounts", 300, None, None, "UTC",
     "{'path': 'C:\\\\tmp'}", "paused", None, None, 0, T0, T0),
    (15, "not_object", "interval", None, "scripts:sync_accounts", 300, None, None, "UTC", "[1, 2]", "disabled",
     None, None, 0, T0, T0),
    (16, "bad_cron", "cron", None, "scripts:nightly", None, "61 * * * *", None, "UTC", "{}", "active",
     None, None, 0, T0, T0),
    (17, "bad_tz", "cron", None, "scripts:nightly", None, "0 3 * * *", None, "Mars/Olympus", "{}", "active",
     None, None, 0, T0, T0),
    (18, "padded", "interval", None, "  scripts:padded \n", 300, None, None, "UTC", "  {\"a\": 1}  ", "active",
     None, None, 0, T0, T0),
    (19, "blank_task_name", "interval", "", "scripts:blank_task", 300, None, None, "UTC", "{}", "active",
     None, None, 0, T0, T0),
    (20, "unicode_ü", "once", None, "scripts:report_ü", None, None, "2030-01-01 00:00:00", "UTC",
     '{"city": "Zürich"}', "paused", None, None, 0, T0, T0),
    (21, "once_repr", "once", None, "scripts.once_job", None, None, "2030-01-01 00:00:00", "UTC", "None",
     "active", None, None, 0, T0, T0),
    (22, "helper_module", "interval", "dataforge.x", "scripts:_common", 300, None, None, "UTC", "{}", "active",
     None, None, 0, T0, T0),
]  # fmt: skip
#: Rows that make the data step refuse (active, no task): appended when asked for.
BLOCKING_ROWS: list[tuple[Any, ...]] = [
    (40, "blocked_junk", "interval", None, "os:system", 300, None, None, "UTC", "{}", "active", None, None, 0, T0, T0),
    (41, "blocked_nothing", "interval", None, None, 300, None, None, "UTC", "{}", "active", None, None, 0, T0, T0),
]  # fmt: skip

#: The four shapes of Python-literal handler_kwargs that SQL cannot prove and Python converts
#: (active rows that must keep running): a tuple, a double-quoted string holding ``'``, nested
#: dicts and lists, a ``"`` inside a single-quoted string.
PYTHON_LITERAL_SHAPES: dict[int, str] = {
    50: "{'years': (2021, 2022), 'force': False}",
    51: """{'label': "o'clock", 'n': 3}""",
    52: "{'limits': {'soft': 0.5}, 'tags': ['a', 'b']}",
    53: """{'sep': '"'}""",
}
#: Texts without a JSON object form, and the exact reason each row is flagged with.
NO_JSON_FORM: dict[int, tuple[str, str]] = {
    60: ("{'tags': {'a', 'b'}}", "a set at ['tags'] has no JSON form"),
    61: ("{'raw': b'x'}", "bytes at ['raw'] has no JSON form"),
    62: ("{'z': 1j}", "a complex number at ['z'] has no JSON form"),
    63: ("{1: 'one'}", "the key 1 at the top level is an integer, not a string: JSON object keys are strings"),
    64: ("{'x': [1e999]}", "inf at ['x'][0] has no JSON form"),
    65: ("{'when': datetime.now()}", "not a Python literal: call 'datetime.now()' at line 1, column 10"),
    66: ("['a', 'b']", "a list, not a dict (read as a Python literal)"),
    # Row data made to break out of a SQL comment or literal in an offline script.
    67: ("{'s': {1}, 'q': \"'; DROP TABLE scheduled_tasks; --\\n\"}", "a set at ['s'] has no JSON form"),
}
#: A name made to end a SQL comment line (row 67's).
HOSTILE_NAME = "evil\n-- x\rDROP TABLE scheduled_tasks; -- \u2028end"


def literal_schedules() -> list[tuple[Any, ...]]:
    """Active legacy rows holding :data:`PYTHON_LITERAL_SHAPES` and :data:`NO_JSON_FORM`."""
    texts = {**PYTHON_LITERAL_SHAPES, **{i: text for i, (text, _) in NO_JSON_FORM.items()}}
    return [
        (i, HOSTILE_NAME if i == 67 else f"literal_{i}", "interval", None, "scripts:sync_accounts",
         300, None, None, "UTC", text, "active", None, None, 0, T0, T0)
        for i, text in sorted(texts.items())
    ]  # fmt: skip


EXECUTION_COLS = ("id", "scheduled_task_id", "celery_task_id", "task_name", "handler_path", "status", "started_at",
                  "finished_at", "duration_ms", "result", "error")  # fmt: skip
QUIRK_EXECUTIONS: list[tuple[Any, ...]] = [
    # Legacy retries: three rows share one celery_task_id.
    (1, 1, "c-retry", "execute_scheduled_task", "scripts:sync_accounts", "failure", T0, T0, 10, None, "boom"),
    (2, 1, "c-retry", "execute_scheduled_task", "scripts:sync_accounts", "failure", T0, T0, 11, None, "boom"),
    (3, 1, "c-retry", "execute_scheduled_task", "scripts:sync_accounts", "success", T0, T0, 12, '{"ok": 1}', None),
    (4, 2, "c-two", "execute_scheduled_task", "scripts.sync_accounts", "success", T0, None, None, None, None),
    (5, 2, "c-two", "execute_scheduled_task", "scripts.sync_accounts", "running", None, None, None, None, None),
    (6, None, None, "execute_scheduled_task", None, "failure", None, None, None, None, "TypeError: _lock_key"),
    (7, None, None, "dataforge.report", None, "success", T0, T0, 1, "{}", None),
    (8, 5, "c-single", "dataforge.report", None, "success", T0, T0, 1, "{}", None),
]  # fmt: skip


@pytest.fixture(name="db_url", params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each supported dialect (SQLite file, fresh PostgreSQL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'legacy.db'}"
    return str(request.getfixturevalue("pg_url"))


def engine_for(url: str) -> Engine:
    return create_engine(Database(url).url)


def build_legacy_db(
    url: str,
    schedules: Sequence[tuple[Any, ...]] = QUIRK_SCHEDULES,
    executions: Sequence[tuple[Any, ...]] = QUIRK_EXECUTIONS,
    *,
    sequence_gap: bool = True,
) -> None:
    """Create the legacy tables from the schema file and insert ``schedules``/``executions``.

    ``sequence_gap`` inserts and deletes one more row per table, so the id sequences are
    ahead of ``max(id)`` (a migration must not rewind them).
    """
    dialect = "sqlite" if is_sqlite(url) else "postgresql"
    ddl = (LEGACY_DIR / f"schema.{dialect}.sql").read_text(encoding="utf-8")
    if dialect == "sqlite":
        path = url.split("sqlite:///", 1)[1]
        raw = sqlite3.connect(path)
        raw.executescript(ddl)
        raw.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(ddl)
    engine = engine_for(url)
    with engine.begin() as conn:
        _insert(conn, "scheduled_tasks", SCHEDULE_COLS, schedules)
        _insert(conn, "task_executions", EXECUTION_COLS, executions)
        if dialect == "postgresql":
            for table in ("scheduled_tasks", "task_executions"):
                conn.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
        if sequence_gap:
            for table, name in (("scheduled_tasks", "'zz_gap'"), ("task_executions", None)):
                if name:
                    conn.execute(text(f"INSERT INTO {table} (name, task_type) VALUES ({name}, 'interval')"))
                else:
                    conn.execute(text(f"INSERT INTO {table} (status) VALUES ('success')"))
                conn.execute(text(f"DELETE FROM {table} WHERE id = (SELECT max(id) FROM {table})"))
    engine.dispose()


def _insert(conn: Any, table: str, cols: Sequence[str], values: Sequence[tuple[Any, ...]]) -> None:
    if not values:
        return
    params = ", ".join(f":{c}" for c in cols)
    conn.execute(
        text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({params})"),
        [dict(zip(cols, v, strict=True)) for v in values],
    )


def rows(url: str, tables: Sequence[str] = ("scheduled_tasks", "task_executions")) -> dict[str, list[dict[str, Any]]]:
    """Every column of every row, ordered by id, as the driver returns them."""
    engine = engine_for(url)
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table in tables:
            out[table] = [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
    engine.dispose()
    return out


def schema_snapshot(url: str) -> dict[str, Any]:
    """The schema as text a reviewer would compare: ``sqlite_master`` + sequences on SQLite,
    ``pg_dump --schema-only`` + sequence positions on PostgreSQL (alembic_version excluded)."""
    engine = engine_for(url)
    with engine.connect() as conn:
        if is_sqlite(url):
            master = sorted(
                tuple(r)
                for r in conn.execute(
                    text("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE '%alembic_version%'")
                )
            )
            sequences = sorted(tuple(r) for r in conn.execute(text("SELECT name, seq FROM sqlite_sequence")))
            engine.dispose()
            return {"master": master, "sequences": sequences}
        sequences = sorted(
            tuple(r)
            for r in conn.execute(text("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"))
        )
    engine.dispose()
    dump = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--exclude-table=alembic_version", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    # `\restrict <random key>` lines (pg_dump >= 15.14) differ on every run.
    noise = ("-- Dumped", "\\restrict", "\\unrestrict")
    lines = [line for line in dump.splitlines() if line.strip() and not line.startswith(noise)]
    return {"dump": lines, "sequences": sequences}


def upgrade(url: str, revision: str = "head", x: Mapping[str, str] | None = None, *, optional: bool = False) -> Any:
    cfg = alembic_config(Settings.from_env({"DATAFORGE_DATABASE_URL": url}), x_args=x or {}, optional=optional)
    command.upgrade(cfg, revision)
    return cfg


def downgrade(url: str, revision: str, x: Mapping[str, str] | None = None, *, optional: bool = False) -> Any:
    cfg = alembic_config(Settings.from_env({"DATAFORGE_DATABASE_URL": url}), x_args=x or {}, optional=optional)
    command.downgrade(cfg, revision)
    return cfg


def offline_sql(url: str, revision_range: str, x: Mapping[str, str] | None = None, *, down: bool = False) -> str:
    """The ``--sql`` script for ``revision_range`` on ``url``'s dialect."""
    import io

    buf = io.StringIO()
    cfg = alembic_config(Settings.from_env({"DATAFORGE_DATABASE_URL": url}), x_args=x or {}, output=buf)
    if down:
        command.downgrade(cfg, revision_range, sql=True)
    else:
        command.upgrade(cfg, revision_range, sql=True)
    return buf.getvalue()


def script(optional: bool = False) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(Settings.from_env({}), optional=optional))
