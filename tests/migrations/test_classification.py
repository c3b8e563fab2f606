"""The classification agrees with the Python definitions it replaces.

``handler_path``: the SQL must map exactly like ``dataforge.legacy.paths.HandlerMap``.
``handler_kwargs``: every text that becomes JSON must equal ``ast.literal_eval`` (tuples as
lists, minus the reserved keys); SQL alone must prove the plain reprs (the set-based path is
real), and what nothing converts must have no JSON form.
"""

from __future__ import annotations

import ast
import json
import random
import re
import warnings
from typing import Any

import pytest
from sqlalchemy import text

from dataforge.legacy.paths import HandlerMap, handler_path_spellings
from migrations.data_step import stage
from migrations.legacy_data import MIGRATION_ROWS, RESERVED_KWARGS, kwargs_sql, prepare_statements
from migrations.options import MigrationOptions
from migrations.python_kwargs import online_step
from migrations.sql import sql
from tests.migrations.support import T0, build_legacy_db, engine_for


def _build(url: str, values: list[tuple[str | None, str]]) -> None:
    """One legacy row per (handler_path, handler_kwargs)."""
    schedules = [
        (i + 1, f"row{i + 1}", "interval", None, hp, 60, None, None, "UTC", kw, "paused", None, None, 0, T0, T0)
        for i, (hp, kw) in enumerate(values)
    ]
    build_legacy_db(url, schedules, [], sequence_gap=False)


def _classify(url: str, values: list[tuple[str | None, str]], options: MigrationOptions) -> list[dict[str, Any]]:
    """Insert the rows and classify them all, as the data step does (SQL, then Python)."""
    _build(url, values)
    engine = engine_for(url)
    with engine.connect() as conn:
        dialect = engine.dialect.name
        stage(lambda statement: conn.execute(sql(statement)), dialect, options, lambda: online_step(conn, dialect))
        out = [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {MIGRATION_ROWS} ORDER BY id"))]
        conn.rollback()
    engine.dispose()
    return out


def _sql_kinds(url: str) -> dict[str, str]:
    """handler_kwargs -> what SQL alone decides (``python``: it proves nothing)."""
    engine = engine_for(url)
    with engine.connect() as conn:
        for statement in prepare_statements(engine.dialect.name):
            conn.execute(sql(statement))
        found = conn.execute(sql(f"SELECT handler_kwargs, kw_kind FROM ({kwargs_sql(engine.dialect.name)}) AS k"))
        out = {r.handler_kwargs: r.kw_kind for r in found}
        conn.rollback()
    engine.dispose()
    return out


HANDLER_PATHS = [
    *handler_path_spellings("sync_accounts"),
    *handler_path_spellings("job2"),
    *handler_path_spellings("run"),
    *(f"{ws}scripts:padded{ws2}" for ws in ("", " ", "\t", "\n ") for ws2 in ("", " ", "\r\n", "\x0b")),
    "", " ", "os:system", "scripts", "scripts:", "scripts.", "scripts.:run", "scripts/.py", "scripts/a.py.py",
    "scripts:a b", "scripts:1abc", "scripts:_x", "scripts.__init__", "scripts.x.y", "Scripts:x", "scripts:ü",
    "scripts/x.PY", "scripts:x:run", "scripts.run:run", "scripts::x", "scriptsx:y", "scripts.sub.mod",
    "../scripts/x.py", "scripts/x.pyc", "app.scripts:x", "scripts.x:main", "scripts:x;rm", "scripts/x/y.py",
    "scripts:renamed", "legacy.jobs:thing", "legacy.jobs.thing:run", "legacy.jobs/thing.py", "legacy/jobs/x.py",
    "scripts%:x", "scripts_:x", "scripts:x%", "scripts:a'b",
]  # fmt: skip

MAP = HandlerMap(
    scripts_package="scripts",
    tasks_package="app.tasks",
    handlers={"scripts:renamed": "dataforge.new_name", "os:system": "dataforge.not_really"},
    modules={"job2": {"task_name": "dataforge.worker.kwargs.two", "module": "app.tasks.job2", "function": "job2"}},
)


def _options(handler_map: HandlerMap) -> MigrationOptions:
    return MigrationOptions(
        handlers=handler_map.handlers,
        modules={m: e["task_name"] for m, e in handler_map.modules.items()},
        scripts_package=handler_map.scripts_package,
    )


@pytest.mark.parametrize(
    "handler_map",
    [MAP, HandlerMap.empty(), HandlerMap.empty("legacy.jobs")],
    ids=["map", "rule-only", "other-package"],
)
def test_handler_path_mapping_is_the_python_one(db_url: str, handler_map: HandlerMap) -> None:
    values: list[tuple[str | None, str]] = [(hp, "{}") for hp in HANDLER_PATHS] + [(None, "{}")]
    result = _classify(db_url, values, _options(handler_map))
    got = {row["handler_path"]: row["mapped_task_name"] for row in result}
    want = {hp: handler_map.task_name_for(hp) for hp, _ in values}
    assert got == want
    assert any(v is not None for v in want.values())  # the corpus exercises both outcomes


_SAFE = ["a", "days", "x_1", "Zürich", "with space", "", "tag-1", "2024-01-01", "a.b", "true", "null", "{", "]"]
_NASTY = ["True", "None of them", "False positive", "it's", 'say "hi"', "back\\slash", "line\nbreak", "tab\t"]


def _value(rng: random.Random, depth: int, pool: list[str]) -> Any:
    kind = rng.randrange(9 if depth < 2 else 7)
    if kind == 0:
        return rng.randint(-(10**6), 10**12)
    if kind == 1:
        return rng.choice([0.5, -3.0, 1e-05, 1e20, 2.5e-3, 0.1])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return None
    if kind in (4, 5, 6):
        return rng.choice(pool)
    if kind == 7:
        return [_value(rng, depth + 1, pool) for _ in range(rng.randrange(4))]
    return _dict(rng, depth + 1, pool)


def _dict(rng: random.Random, depth: int, pool: list[str]) -> dict[str, Any]:
    keys = [*pool, *RESERVED_KWARGS] if depth == 0 else pool
    return {rng.choice(keys): _value(rng, depth, pool) for _ in range(rng.randrange(5))}


def _plain(value: Any) -> bool:
    """Only JSON types (finite floats, string keys; tuples are lists): what a JSON object can equal."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(k) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= c <= "\udfff" for c in value)
    return value is None or isinstance(value, int | bool)


def _literal(source: str) -> Any:
    """What Python reads (``'\\d'`` is a backslash and a d, whatever the warning filters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.literal_eval(source)


def _normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalised(v) for v in value]
    return value


def test_python_repr_conversion_is_exact_or_has_no_json_form(db_url: str) -> None:
    rng = random.Random(20240101)
    safe = [_dict(rng, 0, _SAFE) for _ in range(150)]
    nasty = [_dict(rng, 0, _SAFE + _NASTY) for _ in range(150)]
    texts = [repr(d) for d in safe + nasty]
    texts += [json.dumps(d) for d in safe[:40]]  # JSON rows
    texts += ["", "null", "None", "  ", "[1, 2]", '"x"', "5", "{'a': (1, 2)}", "{'a': inf}", "{1: 'a'}",
              "{'a': 1,}", "{'a': set()}", "{'a': b'x'}", "not json", "{'a': true}", "{'a': NaN}",
              "{'a': 1e999}", "{'a': 1e5}", "{'a': " + "9" * 400 + ".0}", "{'a': " + "9" * 400 + "}",
              '{"u": "\\/"}', "{'a': 'x' 'y'}", "({'a': 1})", "{'a': 1} # note", "{'a': '\\d'}",
              # Leaked keys beside numbers a re-serialisation would rewrite, and written twice.
              '{"_lock_key": 1, "x": 1e300, "y": 1.50, "z": 123456789012345678901234567890}',
              '{"_lock_key": 1, "n": 2, "_lock_key": 3}', "{'_lock_key': 1, 'n': 2, '_lock_key': 3}"]  # fmt: skip
    result = _classify(db_url, [("scripts:x", t) for t in texts], MigrationOptions())
    by_sql = _sql_kinds(db_url)
    for row in result:
        original, kind, new = row["handler_kwargs"], row["kw_kind"], row["new_kwargs"]
        if kind == "repr":
            expected = _literal(original)
            assert isinstance(expected, dict) and _plain(expected), original
            want = {k: _normalised(v) for k, v in expected.items() if k not in RESERVED_KWARGS}
            assert json.loads(new) == want, original
        elif kind == "json":
            parsed = json.loads(original)
            assert isinstance(parsed, dict)
            stripped = {k: v for k, v in parsed.items() if k not in RESERVED_KWARGS}
            assert json.loads(new) == stripped and (new == original) == (stripped == parsed)
        elif kind == "empty":
            assert original.strip() in ("", "null", "None") and new == "{}"
        else:
            assert kind == "unconvertible" and new == original, (original, kind)
            assert row["kw_problem"], original
            try:
                value = json.loads(original)
            except ValueError:
                try:
                    value = _literal(original)
                except (ValueError, SyntaxError):
                    continue  # neither JSON nor Python: nothing to convert
            # Readable, yet refused: there must be no JSON object equal to it.
            assert not (isinstance(value, dict) and _plain(value)), original
    # SQL itself proves every plain repr (only the rest goes to Python), except where a float is
    # written with an exponent (1e-05, 1e+20: SQL cannot tell those from an overflow to inf).
    plain = [t for t in texts[:150] if not re.search(r"[0-9][eE]", t)]
    assert len(plain) > 50 and [t for t in plain if by_sql[t] != "repr" and t != "{}"] == []
    assert sum(kind == "python" for kind in by_sql.values()) > 20
    assert all(r["kw_kind"] != "python" for r in result)
