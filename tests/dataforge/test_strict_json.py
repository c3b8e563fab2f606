"""The one kwargs rule (dataforge/strict_json.py): what it refuses, that strict JSON survives it
unchanged, that no text makes it raise anything but JsonValueError, and that every user of
the rule (the schedules service, beat, the codemod's registry entries) applies the same one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataforge import strict_json
from dataforge.errors import JsonValueError, ScheduleError
from dataforge.scheduler.dispatch import DispatchContext, MarkInvalid, RowSnapshot, plan_due_row
from dataforge.scheduler.schedules import parse_kwargs
from refactor_tool.analysis import Param
from refactor_tool.registry import signature_params


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ('{"a": NaN}', "$", "NaN is not a JSON number"),
        ('{"a": Infinity}', "$", "Infinity"),
        ('{"a": [1, -Infinity]}', "$", "-Infinity"),
        ('{"a": 1e400}', "$.a", "overflows to infinity"),
        ('{"a": {"b": 1, "b": 2}}', "$", 'duplicate key "b"'),
        ('{"a": 9223372036854775808}', "$.a", "64 bits"),
        ('{"a": -9223372036854775809}', "$.a", "64 bits"),
        ('{"a": "\\udc80"}', "$.a", "lone UTF-16 surrogate"),
        ('{"\\ud800": 1}', "$", "a key is not valid Unicode"),
        ('{"my key": [0, "\\udfff"]}', '$["my key"][1]', "lone UTF-16 surrogate"),
        ("[" * 33 + "]" * 33, "$" + "[0]" * 32, "nested deeper than 32"),
        ("[" * 60000, "$", "nested deeper than 32"),
        ('"' + "x" * 70000 + '"', "$", "at most 65536 bytes"),
        ("1" * 5000, "$", "not valid JSON"),
        ("{", "$", "not valid JSON"),
    ],
)
def test_refusals_name_the_part_and_the_reason(text: str, path: str, reason: str) -> None:
    with pytest.raises(JsonValueError) as info:
        strict_json.loads(text)
    assert info.value.path == path and reason in info.value.reason, (info.value.path, info.value.reason)


def test_the_limits_are_inclusive() -> None:
    deepest = strict_json.loads("[" * 32 + "]" * 32)
    for _ in range(31):
        (deepest,) = deepest
    assert deepest == []
    assert strict_json.loads(str(2**63 - 1)) == 2**63 - 1 and strict_json.loads(str(-(2**63))) == -(2**63)
    text = '"' + "x" * (strict_json.MAX_BYTES - 2) + '"'
    assert strict_json.loads(text) == "x" * (strict_json.MAX_BYTES - 2)


@pytest.mark.parametrize("value", [float("nan"), (1, 2), {1: 2}, {"a": {1, 2}}, datetime(2024, 1, 1), b"x"])
def test_python_values_that_are_not_json_are_refused(value: object) -> None:
    with pytest.raises(JsonValueError):
        strict_json.check_value(value)
    with pytest.raises(JsonValueError):
        strict_json.dumps(value)


def test_a_hostile_python_value_nested_a_million_deep_is_refused_not_a_recursion_error() -> None:
    value: Any = []
    for _ in range(1_000_000):
        value = [value]
    with pytest.raises(JsonValueError, match="nested deeper"):
        strict_json.check_value(value)


STRICT = st.recursive(
    st.none() | st.booleans() | st.integers(strict_json.INT_MIN, strict_json.INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@given(STRICT)
def test_strict_json_round_trips_unchanged(value: Any) -> None:
    text = strict_json.dumps(value)
    assert text.isascii()  # any database encoding holds it
    assert strict_json.loads(text) == value
    assert json.loads(text) == value  # and every JSON reader agrees


@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_any_text_is_parsed_or_refused_with_a_json_value_error(text: str) -> None:
    try:
        value = strict_json.loads(text)
    except JsonValueError:
        return
    # What was accepted is strict JSON: written and read back, it is the same value.
    assert strict_json.loads(strict_json.dumps(value)) == value


def test_schedule_kwargs_use_the_rule_and_name_the_column() -> None:
    with pytest.raises(ScheduleError) as info:
        parse_kwargs('{"days": NaN}', schedule_id=9)
    assert info.value.field == "handler_kwargs" and "NaN" in info.value.reason
    assert parse_kwargs('{"days": 7}') == {"days": 7}


def test_beat_flags_a_stored_row_that_breaks_the_rule() -> None:
    snapshot = RowSnapshot.from_mapping(dict(
        id=1, name="n", task_type="interval", task_name="dataforge.sync", handler_path=None, interval_seconds=60,
        cron_expression=None, run_at=None, timezone="UTC", handler_kwargs='{"days": NaN}', status="active",
        timeout_seconds=None, max_retries=0, missed_run_policy=None, last_run_at=None,
        next_run_at=datetime(2024, 1, 1), run_count=0, invalid_reason=None,
    ))  # fmt: skip
    decision = plan_due_row(snapshot, datetime(2024, 1, 1, 0, 1),
                            DispatchContext(is_registered={"dataforge.sync"}.__contains__))
    assert isinstance(decision, MarkInvalid) and "NaN is not a JSON number" in decision.reason


def test_codemod_registry_defaults_follow_the_rule() -> None:
    params = signature_params((
        Param("days", "keyword_only", "7", None),
        Param("huge", "keyword_only", "1e999", None),
        Param("pair", "keyword_only", "(1, 2)", None),
        Param("nested", "keyword_only", "{'a': [1, None]}", None),
    ))  # fmt: skip
    by_name = {p["name"]: p for p in params}
    assert by_name["days"]["default"] == 7 and by_name["nested"]["default"] == {"a": [1, None]}
    assert by_name["huge"] == {"name": "huge", "required": False, "default_expr": "1e999"}
    assert by_name["pair"]["default_expr"] == "(1, 2)" and "default" not in by_name["pair"]
