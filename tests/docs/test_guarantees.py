"""docs/guarantees.md names tests that exist: a renamed or deleted test must take its row along.

The table is how a reader finds what defends a promise; a row pointing at a test that is gone
says a promise is defended when nothing defends it any more.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUARANTEES = ROOT / "docs" / "guarantees.md"
#: ``tests/<path>.py::<name>`` or ``::<Class>::<name>``; a ``[param]`` suffix is allowed.
TEST_ID = re.compile(r"(tests/[\w/]+\.py)((?:::\w+)+)(?:\[[^\]|]*\])?")


def _ids() -> list[tuple[str, list[str]]]:
    text = GUARANTEES.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2).split("::")[1:]) for m in TEST_ID.finditer(text)]


def test_the_table_names_tests() -> None:
    assert len(_ids()) > 200, "docs/guarantees.md: no test ids found; has the format changed?"


def test_every_test_the_table_names_exists() -> None:
    missing: list[str] = []
    for path, names in _ids():
        file = ROOT / path
        source = file.read_text(encoding="utf-8") if file.is_file() else ""
        for name in names:
            keyword = "class" if name[:1].isupper() else "def"
            if not re.search(rf"^\s*(?:async\s+)?{keyword} {re.escape(name)}\b", source, re.M):
                missing.append(f"{path}::{'::'.join(names)}")
                break
    assert not missing, "docs/guarantees.md names tests that do not exist:\n" + "\n".join(sorted(set(missing)))
