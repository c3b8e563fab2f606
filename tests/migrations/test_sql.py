"""The SQL text helpers that carry row data into scripts (their round trip through a real
database is a property in test_python_kwargs.py)."""

from __future__ import annotations

import pytest

from migrations.sql import comment, data_literal

HOSTILE = ["it's", "back\\slash", "\\'", "line\nbreak", "cr\rlf", "tab\t", "é😀", "\u2028", "\x7f", "''", ":x"]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_postgresql_literal_is_printable_ascii_with_every_quote_doubled(value: str) -> None:
    literal = data_literal(value, "postgresql")
    assert literal.startswith("E'") and literal.endswith("'")
    body = literal[2:-1]
    assert all(" " <= c <= "~" for c in body), literal
    assert "'" not in body.replace("''", "")  # no quote ends the literal early


@pytest.mark.parametrize("value", HOSTILE)
def test_a_sqlite_literal_has_no_raw_control_character(value: str) -> None:
    literal = data_literal(value, "sqlite")
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in literal), literal


def test_nul_cannot_be_a_postgresql_literal() -> None:
    with pytest.raises(ValueError, match="NUL"):
        data_literal("a\x00b", "postgresql")
    assert data_literal("a\x00b", "sqlite") == "('a' || char(0) || 'b')"


@pytest.mark.parametrize("line", ["plain", "evil\nDROP TABLE x; --", "cr\rDROP", "sep\u2028DROP", "nul\x00", "é"])
def test_a_comment_stays_one_printable_line(line: str) -> None:
    out = comment(line)
    assert out.startswith("-- ") and all(" " <= c <= "~" for c in out), out
    assert len(out.splitlines()) == 1
