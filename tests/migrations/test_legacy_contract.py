"""The vendored legacy schema files are the input contract's, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.migrations.support import LEGACY_DIR

SHARED = Path(__file__).resolve().parents[3] / "shared" / "legacy"


@pytest.mark.parametrize("name", ["schema.postgresql.sql", "schema.sqlite.sql"])
def test_vendored_schema_equals_the_shared_contract(name: str) -> None:
    if not (SHARED / name).is_file():
        pytest.skip(f"no shared contract beside this checkout ({SHARED})")
    assert (LEGACY_DIR / name).read_bytes() == (SHARED / name).read_bytes()
