"""Hypothesis: whatever people type as ``--kwargs`` (or as a name, a cron expression, a time
zone), the CLI ends with exit 0 or 2, never a traceback, and ``--json`` output is one strict
JSON document. Accepted kwargs are stored exactly as the strict rule reads them.

Runs in-process (``catch_exceptions=False``: an unexpected exception fails the example) on
SQLite and on PostgreSQL, whose driver refuses what SQLite stores.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dataforge import strict_json
from dataforge.cli.main import cli
from dataforge.errors import JsonValueError
from dataforge.settings import Settings
from tests.conftest import create_schema
from tests.dataforge.cli.support import TASK
from tests.dataforge.cli.support import strict_json as parse_output
from tests.support.services import fresh_postgres_database

#: Every character, lone surrogates included (argv delivers undecodable bytes as those).
ANY_CHAR = st.characters(exclude_categories=())
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(ANY_CHAR, max_size=8))
#: Mostly the keys the open example task declares, so accepted kwargs are exercised as well.
KEYS = st.sampled_from(["pages", "page_size"]) | st.text(ANY_CHAR, max_size=6)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(ANY_CHAR, max_size=6), inner, max_size=4), max_leaves=12)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """JSON text with a few characters inserted, dropped or swapped."""
    text = json.dumps(draw(st.dictionaries(KEYS, JSON_VALUES, max_size=3)), allow_nan=True)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", ",", "]", "}", "{", "[", '"', ":", "\\", "NaN", "\x00"])) + \
            text[at + draw(st.integers(0, 2)):]
    return text


KWARGS_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True)),
    st.dictionaries(KEYS, JSON_VALUES, max_size=2).map(lambda d: json.dumps(d, allow_nan=True, ensure_ascii=False)),
    st.dictionaries(KEYS, JSON_VALUES, max_size=2).map(lambda d: json.dumps(d, allow_nan=True)),
    mutated(),
    st.integers(0, 6000).map(lambda n: '{"a": ' + "[" * n + "]" * n + "}"),
    st.integers(0, 6000).map(lambda n: "[" * n),
)

_names = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root: Path = tmp_path_factory.mktemp("fuzz")

    def make(url: str) -> dict[str, str]:
        create_schema(url)
        return {**Settings.from_env({"DATAFORGE_DATABASE_URL": url}, cwd=root).as_env(), "COLUMNS": "250"}

    if request.param == "sqlite":
        yield make(f"sqlite:///{root / 'fuzz.db'}")
    else:
        with fresh_postgres_database() as url:
            yield make(url)


def _run(env: dict[str, str], *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(cli, [*args, "--json"], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2), f"exit {result.exit_code} for {args!r}:\n{result.output}"
    return result.exit_code, parse_output(result.stdout)


def _accepted(text: str) -> dict[str, Any] | None:
    """What the strict rule makes of ``text`` (``None``: refused)."""
    try:
        value = strict_json.loads(text)
    except JsonValueError:
        return None
    return value if isinstance(value, dict) else None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(text=KWARGS_TEXT)
def test_random_kwargs_never_produce_a_traceback(env: dict[str, str], text: str) -> None:
    name = f"fz-{next(_names)}"
    code, out = _run(env, "schedules", "add", name, "--task", "dataforge.example_sync_accounts", "--interval", "60",
                     "--kwargs", text)
    expected = _accepted(text)
    event("accepted" if code == 0 else "refused")
    if code == 0:
        assert expected is not None and out["kwargs"] == expected, (text, out)
        assert json.loads(out["handler_kwargs"]) == expected
        code, out = _run(env, "schedules", "edit", name, "--kwargs", text)
        assert code == 0 and out["kwargs"] == expected
    else:
        error = out["error"]
        assert error["code"] == 2 and error["field"] in ("--kwargs", "NAME"), out
        if error["field"] == "--kwargs" and expected is not None:
            # Strict JSON object, refused by the task's params (reserved or undeclared keys).
            assert "reserved" in error["message"] or "takes no parameter" in error["message"], out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(name=st.text(ANY_CHAR, min_size=1, max_size=150), cron=st.text(ANY_CHAR, max_size=30),
       zone=st.text(ANY_CHAR, max_size=70), description=st.text(ANY_CHAR, max_size=30))
def test_random_names_crons_and_zones_never_produce_a_traceback(env: dict[str, str], name: str, cron: str,
                                                                zone: str, description: str) -> None:
    _run(env, "schedules", "add", name, "--task", TASK, "--cron", cron, "--timezone", zone,
         "--description", description)
    _run(env, "schedules", "show", name)
    _run(env, "schedules", "list")
