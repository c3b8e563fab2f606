"""The classification SQL agrees with the Python definitions it replaces.

``handler_path``: the SQL must map exactly like ``dataforge.legacy.paths.HandlerMap``.
``handler_kwargs``: every Python repr the SQL converts must equal ``ast.literal_eval`` (minus
the reserved keys); what it refuses must be something a textual conversion could get wrong.
"""

from __future__ import annotations

import ast
import json
import random
from typing import Any

import pytest
from sqlalchemy import text

from dataforge.legacy.paths import HandlerMap, handler_path_spellings
from migrations.legacy_data import RESERVED_KWARGS, classification_sql, prepare_statements
from migrations.options import MigrationOptions
from tests.migrations.support import T0, build_legacy_db, engine_for


def _classify(url: str, values: list[tuple[str | None, str]], options: MigrationOptions) -> list[dict[str, Any]]:
    """Insert one legacy row per (handler_path, handler_kwargs) and classify them all."""
    schedules = [
        (i + 1, f"row{i + 1}", "interval", None, hp, 60, None, None, "UTC", kw, "paused", None, None, 0, T0, T0)
        for i, (hp, kw) in enumerate(values)
    ]
    build_legacy_db(url, schedules, [], sequence_gap=False)
    engine = engine_for(url)
    with engine.connect() as conn:
        for statement in prepare_statements(engine.dialect.name):
            conn.execute(text(statement))
        query = classification_sql(engine.dialect.name, options).replace(":", "\\:")
        out = [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM ({query}) AS q ORDER BY id"))]
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
    """Only JSON types (finite floats, string keys): what a JSON object can equal."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, str | int | bool)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_python_repr_conversion_is_exact_or_refused(db_url: str) -> None:
    rng = random.Random(20240101)
    safe = [_dict(rng, 0, _SAFE) for _ in range(150)]
    nasty = [_dict(rng, 0, _SAFE + _NASTY) for _ in range(150)]
    texts = [repr(d) for d in safe + nasty]
    texts += [json.dumps(d) for d in safe[:40]]  # JSON rows
    texts += ["", "null", "None", "  ", "[1, 2]", '"x"', "5", "{'a': (1, 2)}", "{'a': inf}", "{1: 'a'}",
              "{'a': 1,}", "{'a': set()}", "{'a': b'x'}", "not json", "{'a': true}", "{'a': NaN}"]  # fmt: skip
    result = _classify(db_url, [("scripts:x", t) for t in texts], MigrationOptions())
    converted: set[str] = {"{}"}  # repr({}) is JSON already
    for row in result:
        original, kind, new = row["handler_kwargs"], row["kw_kind"], row["new_kwargs"]
        if kind == "repr":
            expected = ast.literal_eval(original)
            assert isinstance(expected, dict)
            assert json.loads(new) == {k: v for k, v in expected.items() if k not in RESERVED_KWARGS}, original
            converted.add(original)
        elif kind == "json":
            parsed = json.loads(original)
            assert isinstance(parsed, dict)
            stripped = {k: v for k, v in parsed.items() if k not in RESERVED_KWARGS}
            assert json.loads(new) == stripped and (new == original) == (stripped == parsed)
        elif kind == "empty":
            assert original.strip() in ("", "null", "None") and new == "{}"
        else:
            assert kind == "unconvertible" and new == original
            try:
                value = ast.literal_eval(original)
            except (ValueError, SyntaxError):
                continue  # not Python either: nothing to convert
            if not isinstance(value, dict) or not _plain(value):
                continue  # no JSON object equals it (bytes, tuples, inf, non-string keys...)
            # Refused although Python can read it: only hand-written text (not what repr()
            # prints), or what a textual conversion could get wrong (quotes/backslashes in the
            # text, True/False/None inside strings, tuples...).
            risky = (original.strip() != repr(value) or '"' in original or "\\" in original or "(" in original
                     or any(w in s for s in _strings(value) for w in ("True", "False", "None")))  # fmt: skip
            assert risky, original
    assert set(texts[:150]) <= converted  # every repr of plain values converts
    assert sum(r["kw_kind"] == "unconvertible" for r in result) > 20  # and the nasty ones are refused
