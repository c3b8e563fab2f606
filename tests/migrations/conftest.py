"""Fixtures of the migration tests (defined in tests/migrations/support.py, shared with the
``dataforge db`` tests)."""

from __future__ import annotations

from tests.migrations.support import any_db_url  # noqa: F401 (the fixture db_url)
