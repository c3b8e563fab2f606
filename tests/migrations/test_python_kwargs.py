"""The data step on generated Python literals, on both databases: ``repr(d)`` in the legacy
column comes out as ``json.loads(...) == normalised(d)`` online and through the offline script
(rendered from the legacy database), and the downgrade gives back every legacy column byte for
byte. Few examples, many rows each: every example is a legacy database migrated four ways."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, text

from dataforge.db import is_sqlite
from migrations.legacy_data import KWARGS_ROWS
from migrations.python_kwargs import BATCH_CHARS, BATCH_ROWS, PENDING, convert_rows, update_statements
from migrations.sql import data_literal
from tests.migrations.literal_strategies import literal_dicts, normalised
from tests.migrations.support import T0, build_legacy_db, downgrade, engine_for, offline_sql, rows, upgrade
from tests.migrations.test_offline import _normalised, apply_script
from tests.support.services import fresh_postgres_database

_BATCH = st.lists(literal_dicts, min_size=1, max_size=40)
#: Shrinking a failure would migrate hundreds of databases: these tests report the failing
#: batch as generated (test_literal_kwargs.py shrinks the same values without a database).
_NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_dbs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory of pairs of empty databases of one dialect, one pair per example."""
    counter = itertools.count()
    if request.param == "sqlite":

        @contextmanager
        def sqlite_pair() -> Iterator[tuple[str, str]]:
            n = next(counter)
            yield f"sqlite:///{tmp_path / f'online{n}.db'}", f"sqlite:///{tmp_path / f'offline{n}.db'}"

        yield sqlite_pair
        return
    with fresh_postgres_database() as first, fresh_postgres_database() as second:

        @contextmanager
        def pg_pair() -> Iterator[tuple[str, str]]:
            for url in (first, second):
                engine = engine_for(url)
                with engine.begin() as conn:
                    conn.execute(text("DROP SCHEMA public CASCADE"))
                    conn.execute(text("CREATE SCHEMA public"))
                engine.dispose()
            yield first, second

        yield pg_pair


def _schedules(values: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (i + 1, f"gen{i + 1}", "interval", None, "scripts:sync_accounts", 60, None, None, "UTC", repr(value),
         "active", None, None, 0, T0, T0)
        for i, value in enumerate(values)
    ]  # fmt: skip


@settings(max_examples=15, deadline=None, database=None, phases=_NO_SHRINK,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])  # fmt: skip
@given(values=_BATCH)
def test_generated_literals_convert_exactly_online_and_offline_and_round_trip(
    fresh_dbs: Any, tmp_path: Path, values: list[dict[str, Any]]
) -> None:
    with fresh_dbs() as (online, offline):
        schedules = _schedules(values)
        build_legacy_db(online, schedules, [])
        build_legacy_db(offline, schedules, [])
        legacy = rows(online)

        upgrade(online)
        migrated = rows(online, ("scheduled_tasks",))["scheduled_tasks"]
        for value, row in zip(values, migrated, strict=True):
            assert json.loads(row["handler_kwargs"]) == normalised(value), repr(value)
            assert row["invalid_reason"] is None, (repr(value), row["invalid_reason"])
            assert row["status"] == "active"

        apply_script(offline, offline_sql(offline, "base:head", {"legacy_db": offline}), tmp_path)
        assert _normalised(rows(offline)) == _normalised(rows(online))

        downgrade(online, "0001_legacy_baseline")
        assert rows(online) == legacy


@settings(max_examples=4, deadline=None, database=None, phases=_NO_SHRINK,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(values=st.lists(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")), min_size=1,
                       max_size=30))  # fmt: skip
def test_data_literals_read_back_as_the_same_text(fresh_dbs: Any, values: list[str]) -> None:
    """Whatever a value holds (quotes, backslashes, colons, control and non-ASCII characters),
    its literal in a script is that value."""
    with fresh_dbs() as (url, _):
        dialect = "sqlite" if is_sqlite(url) else "postgresql"
        hostile = [*values, "'", "\\", "\\'", "''", "\\:x", ":name", "::", "%s", "%%", "\t\r\n", "\u2028", "\x7f"]
        engine = engine_for(url)
        try:
            with engine.connect() as conn:
                for value in hostile:
                    literal = data_literal(value, dialect).replace(":", "\\:")  # as migrations.sql.sql() sends it
                    assert conn.execute(text(f"SELECT {literal}")).scalar_one() == value
        finally:
            engine.dispose()


def _batch_sizes(statements: list[str]) -> list[int]:
    """The number of ``VALUES`` rows of each statement that writes the Python step's results
    (a row literal holds no raw line break: see migrations.sql.data_literal)."""
    return [s.count("\n  (") for s in statements if f"UPDATE {KWARGS_ROWS}" in s]


def test_the_python_step_reads_once_and_writes_one_update_per_500_rows(db_url: str) -> None:
    """1,201 rows only Python converts: one read, then three multi-row UPDATEs of 500, 500 and
    201 rows (no statement per row), online and in the offline script rendered from the database."""
    count = 2 * BATCH_ROWS + 201
    assert BATCH_ROWS == 500
    schedules = [
        (i, f"tuple_{i}", "interval", None, "scripts:sync_accounts", 60, None, None, "UTC",
         f"{{'years': ({i}, 2022)}}", "active", None, None, 0, T0, T0)
        for i in range(1, count + 1)
    ]  # fmt: skip
    build_legacy_db(db_url, schedules, [])
    script = offline_sql(db_url, "base:head", {"legacy_db": db_url})
    assert _batch_sizes(script.split(";\n")) == [500, 500, 201]

    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if KWARGS_ROWS in statement:
            sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        upgrade(db_url)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    reads = [s for s in sent if s.lstrip().startswith("SELECT") and f"kw_kind = '{PENDING}'" in s]
    assert len(reads) == 1, reads
    assert _batch_sizes(sent) == [500, 500, 201]
    migrated = rows(db_url, ("scheduled_tasks",))["scheduled_tasks"]
    assert [json.loads(r["handler_kwargs"]) for r in migrated] == [{"years": [i, 2022]} for i in range(1, count + 1)]


def test_a_batch_also_ends_before_a_million_characters_of_literals() -> None:
    """Large kwargs make smaller batches: a statement's literal text stays under BATCH_CHARS
    (easy to review and send), yet every row is written exactly once."""
    assert BATCH_CHARS == 1_000_000
    big = f"{{'blob': ({'x' * 5_000!r},)}}"
    conversions = convert_rows((i, big) for i in range(1, 501))
    statements = update_statements(conversions, "postgresql")
    sizes = _batch_sizes(statements)
    assert len(statements) > 1 and sum(sizes) == 500 and max(sizes) < BATCH_ROWS
    # The row literals stay under the bound; the statement adds their separators and its SQL.
    assert all(len(s) < BATCH_CHARS + 4 * size + 1_000 for s, size in zip(statements, sizes, strict=True))
