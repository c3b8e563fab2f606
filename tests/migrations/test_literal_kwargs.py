"""``convert_kwargs``: exactly what ``ast.literal_eval`` reads as a JSON-able dict converts, to
the equal JSON object; everything else is refused with the reason (pure, no database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrations.legacy_data import RESERVED_KWARGS
from migrations.literal_kwargs import convert_kwargs
from tests.migrations.literal_strategies import literal_dicts, normalised
from tests.migrations.support import NO_JSON_FORM, PYTHON_LITERAL_SHAPES


def _is_json(text: str) -> bool:
    """Some reprs are JSON too ({}, {"it's": []}): they read as JSON, to the same value."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@settings(max_examples=300, database=None)
@given(literal_dicts)
def test_the_repr_of_any_json_able_dict_converts_to_the_equal_object(value: dict[str, Any]) -> None:
    text = repr(value)
    result = convert_kwargs(text, RESERVED_KWARGS)
    assert result.kind == ("json" if _is_json(text) else "repr") and result.problem is None
    assert result.json is not None and json.loads(result.json) == normalised(value)
    assert result.reserved == any(key in value for key in RESERVED_KWARGS)


@settings(max_examples=200, database=None)
@given(literal_dicts, st.sampled_from(["set()", "{1}", "b'x'", "1j", "2-1j", "1e999", "-1e999", "..."]))
def test_a_value_without_a_json_form_anywhere_is_refused(value: dict[str, Any], bad: str) -> None:
    items = [f"{k!r}: {v!r}" for k, v in value.items() if k != "bad"]
    result = convert_kwargs("{" + ", ".join([*items, f"'bad': [{bad}]"]) + "}", RESERVED_KWARGS)
    assert (result.kind, result.json) == ("unconvertible", None)
    assert result.problem is not None and result.problem.endswith("at ['bad'][0] has no JSON form")


@pytest.mark.parametrize("text", sorted(PYTHON_LITERAL_SHAPES.values()))
def test_the_four_shapes_convert(text: str) -> None:
    import ast

    result = convert_kwargs(text, RESERVED_KWARGS)
    assert result.kind == "repr" and result.json is not None
    assert json.loads(result.json) == normalised(ast.literal_eval(text))


@pytest.mark.parametrize(("text", "reason"), sorted(NO_JSON_FORM.values()))
def test_no_json_form_reasons(text: str, reason: str) -> None:
    assert convert_kwargs(text, RESERVED_KWARGS).problem == reason


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ('{"u": "\\/"}', "json", {"u": "/"}),  # a JSON object means what JSON says
        ("{'u': '\\/'}", "repr", {"u": "\\/"}),  # Python keeps the backslash
        ("  {'a': 1} # trailing comment\n", "repr", {"a": 1}),
        ("({'a': (1,)})", "repr", {"a": [1]}),
        ("{'a': 'x' 'y'}", "repr", {"a": "xy"}),
        ("{'a': '\\d'}", "repr", {"a": "\\d"}),  # an invalid escape reads as a backslash and a d
        ("{'a': 1, 'a': 2}", "repr", {"a": 2}),
        ('{"_lock_key": 1, "n": 2, "_lock_key": 3}', "json", {"n": 2}),
        ("{'big': " + "9" * 400 + "}", "repr", {"big": int("9" * 400)}),
        ("{'tiny': 1e-999}", "repr", {"tiny": 0.0}),
    ],
)
def test_what_python_reads_is_what_converts(text: str, kind: str, expected: dict[str, Any]) -> None:
    result = convert_kwargs(text, RESERVED_KWARGS)
    assert result.kind == kind and result.json is not None
    assert json.loads(result.json) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{'a': '\\x00'}", "a string at ['a'] holds U+0000, which PostgreSQL cannot store in JSON"),
        ("{'\\ud800': 1}",
         "the key '\\ud800' at the top level holds the lone surrogate U+D800, which has no UTF-8 form"),
        ("{'a': " + "9" * 400 + ".0}", "inf at ['a'] has no JSON form"),
        ("{'a': 1 + 1}", "not a Python literal: binop '1 + 1' at line 1, column 7"),
        ("{'a': x}", "not a Python literal: name 'x' at line 1, column 7"),
        ("{'a'", "not a Python literal: '{' was never closed (line 1, column 1)"),
        ("[1, 2]", "a list, not a dict (read as JSON)"),
        ("'text'", "a string, not a dict (read as a Python literal)"),
        ("[" * 2000 + "]" * 2000, None),  # nesting Python's parser refuses: any reason, no crash
        ("{'a': " * 300 + "1" + "}" * 300, None),
    ],
)
def test_refusals_name_the_reason_and_never_raise(text: str, problem: str | None) -> None:
    result = convert_kwargs(text, RESERVED_KWARGS)
    assert result.kind == "unconvertible" and result.json is None and result.problem
    if problem is not None:
        assert result.problem == problem
