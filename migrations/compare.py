"""How autogenerate compares column types here (env.py and the drift test use it).

The legacy columns are declared ``TIMESTAMP``; the models say ``DateTime``. Both are the same
type: PostgreSQL reflects ``timestamp without time zone`` for both, and on SQLite
(``TIMESTAMP`` vs ``DATETIME`` in the DDL) both have NUMERIC affinity and SQLAlchemy stores
the same ISO text. Rewriting the column type would rebuild the table for nothing and break
the byte-exact legacy schema, so this pair is declared equal; every other pair keeps
Alembic's default comparison.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = ["compare_type"]


def compare_type(
    context: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """``False`` (no change) for TIMESTAMP vs naive DateTime; ``None``: Alembic decides."""
    if (
        isinstance(inspected_type, sa.TIMESTAMP)
        and type(metadata_type) is sa.DateTime
        and not getattr(inspected_type, "timezone", False)
        and not metadata_type.timezone
    ):
        return False
    return None
