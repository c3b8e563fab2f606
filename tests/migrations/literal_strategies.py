"""Hypothesis strategies for Python-literal ``handler_kwargs``: dicts whose ``repr`` holds every
quirk a textual conversion trips on (quotes of both kinds, backslashes, ``True`` inside a
string, line breaks, non-ASCII, tuples, nesting, big and tiny floats, the reserved keys)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from migrations.legacy_data import RESERVED_KWARGS

__all__ = ["literal_dicts", "normalised"]

_NASTY = [
    "True", "False", "None", "True story", "it's", 'say "hi"', "'", '"', "\\", "back\\slash", "C:\\tmp",
    "line\nbreak", "tab\t", "cr\r", "1e5", "null", "true", "{", "}", "[", "(1, 2)", "é", "Zürich", "😀", "\u2028",
    "\x7f", "':'", "a: b", "%s", "$1", "--", "/*", ";",
]  # fmt: skip
_strings = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=10),
    st.sampled_from(_NASTY),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    _strings,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_strings, inner, max_size=3),
    ),
    max_leaves=8,
)
#: Top-level dicts (the reserved keys old messages leaked appear at the top only).
literal_dicts = st.dictionaries(st.one_of(_strings, st.sampled_from(RESERVED_KWARGS)), _values, max_size=5)


def normalised(value: Any, *, top: bool = True) -> Any:
    """What the JSON object of a Python literal equals: tuples are lists, no reserved keys."""
    if isinstance(value, dict):
        return {
            k: normalised(v, top=False) for k, v in value.items() if not (top and k in RESERVED_KWARGS)
        }
    if isinstance(value, list | tuple):
        return [normalised(v, top=False) for v in value]
    return value
