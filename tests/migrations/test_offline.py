"""``--sql`` scripts, applied by the tools a DBA uses (psql, sqlite3), equal the online run."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from dataforge.db import is_sqlite
from dataforge.settings import Settings
from migrations.config import alembic_config
from migrations.data_step import UNDECIDED_GUARD
from migrations.sql import data_literal
from tests.migrations.support import (
    BLOCKING_ROWS,
    NO_JSON_FORM,
    PYTHON_LITERAL_SHAPES,
    QUIRK_SCHEDULES,
    build_legacy_db,
    downgrade,
    engine_for,
    literal_schedules,
    offline_sql,
    rows,
    schema_snapshot,
    upgrade,
)
from tests.support.services import fresh_postgres_database


class ScriptFailed(Exception):
    pass


def apply_script(url: str, script: str, tmp_path: Path) -> None:
    """Run ``script`` as a reviewer would: ``psql -v ON_ERROR_STOP=1 -f`` or sqlite3's executescript."""
    if is_sqlite(url):
        conn = sqlite3.connect(url.split("sqlite:///", 1)[1], isolation_level=None)
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            raise ScriptFailed(str(exc)) from exc
        finally:
            conn.close()  # an open transaction is rolled back here
        return
    path = tmp_path / "migration.sql"
    path.write_text(script, encoding="utf-8")
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), url], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ScriptFailed(done.stderr)


def engine_dialect(url: str) -> str:
    return "sqlite" if is_sqlite(url) else "postgresql"


def _twin(db_url: str, tmp_path: Path) -> Any:
    """A second empty database of the same dialect."""
    if is_sqlite(db_url):
        from contextlib import nullcontext

        return nullcontext(f"sqlite:///{tmp_path / 'twin.db'}")
    return fresh_postgres_database()


def _same_ddl(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Alembic prints generated DDL with 4 spaces where SQLAlchemy uses a tab; SQLite keeps the
    text as sent. Whitespace is the only difference allowed between offline and online."""
    if "master" not in snapshot:
        return snapshot
    master = [(*row[:3], " ".join(row[3].split()) if row[3] else row[3]) for row in snapshot["master"]]
    return {**snapshot, "master": master}


def _normalised(data: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """``invalid_at`` is "now" in each run: compare where it is set, not its value."""
    out = {}
    for table, table_rows in data.items():
        out[table] = [{k: (v is not None if k == "invalid_at" else v) for k, v in row.items()} for row in table_rows]
    return out


def test_script_from_empty_equals_online(db_url: str, tmp_path: Path) -> None:
    script = offline_sql(db_url, "base:head")
    assert "CREATE TABLE scheduled_tasks" in script and "alembic_version" in script
    with _twin(db_url, tmp_path) as twin:
        upgrade(twin)
        apply_script(db_url, script, tmp_path)
        assert _same_ddl(schema_snapshot(db_url)) == _same_ddl(schema_snapshot(twin))


def test_script_for_a_legacy_database_equals_online(db_url: str, tmp_path: Path) -> None:
    """Rendered from the legacy database itself (read-only), the script carries the Python
    step's conversions and does exactly what the online upgrade does, every quirk included."""
    schedules = [*QUIRK_SCHEDULES, *literal_schedules()]
    build_legacy_db(db_url, schedules)
    before = schema_snapshot(db_url), rows(db_url)
    script = offline_sql(db_url, "base:head", {"legacy_db": db_url})
    assert (schema_snapshot(db_url), rows(db_url)) == before  # reading changed nothing
    assert "CREATE TABLE scheduled_tasks (" not in script  # adopted, not created
    assert "VALUES ('scripts:" not in script  # no map given: the rule only
    with _twin(db_url, tmp_path) as twin:
        build_legacy_db(twin, schedules)
        upgrade(twin)
        apply_script(db_url, script, tmp_path)
        assert _same_ddl(schema_snapshot(db_url)) == _same_ddl(schema_snapshot(twin))
        assert _normalised(rows(db_url)) == _normalised(rows(twin))
    # The rows Python converted are in the script, as literal UPDATEs (the nested shape, 52,
    # SQL proves itself).
    for i, kwargs in PYTHON_LITERAL_SHAPES.items():
        assert (f"({i}, {data_literal(kwargs, engine_dialect(db_url))}, 'repr'" in script) == (i != 52)


def test_script_lists_the_rows_without_a_json_form_in_comments_that_row_data_cannot_end(db_url: str) -> None:
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *literal_schedules()])
    script = offline_sql(db_url, "base:head", {"legacy_db": db_url})
    notes = [line.rstrip(";") for line in script.splitlines() if line.startswith("--   id=")]
    assert [int(line.split("id=", 1)[1].split(" ", 1)[0]) for line in notes] == [15, *sorted(NO_JSON_FORM)]
    for i, (_, reason) in NO_JSON_FORM.items():
        assert any(line.startswith(f"--   id={i} ") and line.endswith(f"{json.dumps(reason)}") for line in notes)
    # Row 67's name and kwargs hold line breaks, '--', quotes and a statement: every line
    # carrying them is still a comment (or inside a quoted literal).
    carrying = [line for line in script.splitlines() if "DROP TABLE scheduled_tasks; --" in line]
    assert len(carrying) == 2  # the note, and the row's original text in its UPDATE
    for line in carrying:
            assert line.startswith("--") or line.lstrip().startswith("(67, "), line


def test_script_without_the_rows_stops_where_python_is_needed_and_changes_nothing(db_url: str, tmp_path: Path) -> None:
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *literal_schedules()])
    before = schema_snapshot(db_url), rows(db_url)
    script = offline_sql(db_url, "base:head", {"legacy_tables": "adopt"})
    assert "rendered without\n-- reading them" in script
    with pytest.raises(ScriptFailed, match=UNDECIDED_GUARD):
        apply_script(db_url, script, tmp_path)
    assert (schema_snapshot(db_url), rows(db_url)) == before


def test_script_without_the_rows_equals_online_where_sql_proves_every_row(db_url: str, tmp_path: Path) -> None:
    proved = [r for r in QUIRK_SCHEDULES if r[0] not in (13, 14)]  # 13, 14 need Python
    build_legacy_db(db_url, proved)
    script = offline_sql(db_url, "base:head", {"legacy_tables": "adopt"})
    with _twin(db_url, tmp_path) as twin:
        build_legacy_db(twin, proved)
        upgrade(twin)
        apply_script(db_url, script, tmp_path)
        assert _normalised(rows(db_url)) == _normalised(rows(twin))


def test_script_stops_on_a_row_edited_after_it_was_rendered(db_url: str, tmp_path: Path) -> None:
    """A conversion applies only while the row holds the text it was computed from."""
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *literal_schedules()])
    script = offline_sql(db_url, "base:head", {"legacy_db": db_url})
    engine = engine_for(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE scheduled_tasks SET handler_kwargs = '{''years'': (2023,)}' WHERE id = 50"))
    engine.dispose()
    before = schema_snapshot(db_url), rows(db_url)
    with pytest.raises(ScriptFailed, match=UNDECIDED_GUARD):
        apply_script(db_url, script, tmp_path)
    assert (schema_snapshot(db_url), rows(db_url)) == before


def test_downgrade_script_restores_the_legacy_database(db_url: str, tmp_path: Path) -> None:
    build_legacy_db(db_url)
    schema, data = schema_snapshot(db_url), rows(db_url)
    upgrade(db_url)
    apply_script(db_url, offline_sql(db_url, "head:0001_legacy_baseline", down=True), tmp_path)
    assert rows(db_url) == data
    assert schema_snapshot(db_url) == schema


def test_script_stops_on_blocking_rows_and_changes_nothing(db_url: str, tmp_path: Path) -> None:
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *BLOCKING_ROWS])
    schema, data = schema_snapshot(db_url), rows(db_url)
    script = offline_sql(db_url, "base:head", {"legacy_db": db_url})
    with pytest.raises(ScriptFailed, match="run_dataforge_db_check_first"):
        apply_script(db_url, script, tmp_path)
    assert schema_snapshot(db_url) == schema
    assert rows(db_url) == data


def test_the_map_file_is_rendered_into_the_script(db_url: str, tmp_path: Path) -> None:
    map_file = tmp_path / "map.json"
    map_file.write_text(
        '{"version": 1, "handlers": {"scripts:old_name": "dataforge.new_name"}, "modules": {}}', encoding="utf-8"
    )
    script = offline_sql(db_url, "base:head", {"map": str(map_file)})
    assert "('scripts:old_name', 'dataforge.new_name')" in script


def test_downgrade_to_expand_offline_equals_online(db_url: str, tmp_path: Path) -> None:
    build_legacy_db(db_url)
    upgrade(db_url)
    with _twin(db_url, tmp_path) as twin:
        build_legacy_db(twin)
        upgrade(twin)
        downgrade(twin, "0002_expand")
        apply_script(db_url, offline_sql(db_url, "head:0002_expand", down=True), tmp_path)
        assert _same_ddl(schema_snapshot(db_url)) == _same_ddl(schema_snapshot(twin))
        assert _normalised(rows(db_url)) == _normalised(rows(twin))


def _optional_script(url: str) -> str:
    """The offline script of the optional 0007_drop_handler_path, from head."""
    buf = io.StringIO()
    cfg = alembic_config(Settings.from_env({"DATAFORGE_DATABASE_URL": url}), output=buf, optional=True)
    command.upgrade(cfg, "0008_schedule_policies:0007_drop_handler_path", sql=True)
    return buf.getvalue()


def _legacy_switch(url: str, on: bool) -> None:
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE dataforge_flags SET enabled = :on WHERE name = 'legacy_tasks'"), {"on": on})
    engine.dispose()


def test_the_optional_drop_script_stops_while_the_legacy_switch_is_on(db_url: str, tmp_path: Path) -> None:
    """0007's script cannot ask the database before it runs: its guard ``legacy_switch_is_on``
    stops it inside its transaction, changing nothing; with the switch off the same script
    drops the column."""
    build_legacy_db(db_url)
    upgrade(db_url)
    script = _optional_script(db_url)
    assert "legacy_switch_is_on" in script
    _legacy_switch(db_url, True)
    before = schema_snapshot(db_url), rows(db_url)
    with pytest.raises(ScriptFailed, match="legacy_switch_is_on"):
        apply_script(db_url, script, tmp_path)
    assert (schema_snapshot(db_url), rows(db_url)) == before
    _legacy_switch(db_url, False)
    apply_script(db_url, script, tmp_path)
    assert "handler_path" not in rows(db_url, ("scheduled_tasks",))["scheduled_tasks"][0]
