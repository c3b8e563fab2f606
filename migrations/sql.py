"""Small SQL helpers shared by the revisions: literal rendering, dialect spellings, guards.

Everything here produces SQL *text* that renders the same online and in ``--sql`` mode:
values are inlined as literals (bound parameters do not render offline), and colons are
escaped so SQLAlchemy's ``text()`` never mistakes ``':run'`` for a bind parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from alembic import context, op
from sqlalchemy import TextClause, text

__all__ = [
    "SUPPORTED_DIALECTS",
    "comment",
    "data_literal",
    "dialect_name",
    "execute",
    "guard",
    "guard_statements",
    "is_ident",
    "json_quote",
    "lit",
    "sql",
    "sqlite_keep_sequences",
    "trim_ws",
    "values_cte",
]

SUPPORTED_DIALECTS = ("sqlite", "postgresql")


def sql(statement: str) -> TextClause:
    """``text()`` with every colon escaped: the statements here never use bind parameters."""
    return text(statement.replace(":", "\\:"))


def execute(statement: str) -> None:
    op.execute(sql(statement))


def dialect_name() -> str:
    """``sqlite`` or ``postgresql``; anything else is refused up front, before any change."""
    name = context.get_context().dialect.name
    if name not in SUPPORTED_DIALECTS:
        raise NotImplementedError(
            f"DataForge migrations support {', '.join(SUPPORTED_DIALECTS)}; this database is {name!r}"
        )
    return str(name)


def lit(value: str | int | None) -> str:
    """A SQL literal for ``value`` (standard SQL quoting; NUL cannot be stored, so refused)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        raise TypeError("booleans are spelled per dialect")
    if isinstance(value, int):
        return str(value)
    if "\x00" in value:
        raise ValueError(f"NUL character in SQL literal {value!r}")
    return "'" + value.replace("'", "''") + "'"


def data_literal(value: str, dialect: str) -> str:
    """A SQL literal for row data, whatever it holds, that means the same when a script is
    run by ``psql`` or ``sqlite3`` long after it was written.

    PostgreSQL: ``E'...'`` with every character outside printable ASCII written as
    ``\\uXXXX`` / ``\\UXXXXXXXX``: the same value under any ``standard_conforming_strings``
    and any ``client_encoding``; NUL cannot be stored and is refused. SQLite (whose literals
    have no escapes): control characters as ``char(n)`` pieces, so no literal holds a raw line
    break or tab (Alembic's offline output rewrites tabs).
    """
    if dialect == "postgresql":
        if "\x00" in value:
            raise ValueError(f"NUL character in SQL literal {value[:40]!r}")
        out = []
        for char in value:
            code = ord(char)
            if char == "\\":
                out.append("\\\\")
            elif char == "'":
                out.append("''")
            elif 0x20 <= code < 0x7F:
                out.append(char)
            elif code <= 0xFFFF:
                out.append(f"\\u{code:04X}")
            else:
                out.append(f"\\U{code:08X}")
        return "E'" + "".join(out) + "'"
    pieces: list[str] = []
    run: list[str] = []
    for char in value:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            if run:
                pieces.append(lit("".join(run)))
                run = []
            pieces.append(f"char({ord(char)})")
        else:
            run.append(char)
    if run or not pieces:
        pieces.append(lit("".join(run)))
    return pieces[0] if len(pieces) == 1 else "(" + " || ".join(pieces) + ")"


def comment(line: str) -> str:
    """``line`` as one SQL comment line: every character outside printable ASCII escaped, so
    no text (row data included) can end the comment and start a statement."""
    safe = "".join(c if " " <= c <= "~" else f"\\u{ord(c):04x}" for c in line)
    return f"-- {safe}"


def trim_ws(expr: str, dialect: str) -> str:
    """``expr`` without surrounding ASCII whitespace, as ``str.strip()`` removes it.

    Non-ASCII spaces (no-break space...) are not removed: such a value is reported as an
    unrecognised spelling instead of being mapped (conservative, never a wrong mapping).
    """
    if dialect == "postgresql":
        return f"btrim({expr}, E' \\t\\n\\r\\x0b\\x0c\\x1c\\x1d\\x1e\\x1f')"
    return f"trim({expr}, ' ' || char(9, 10, 11, 12, 13, 28, 29, 30, 31))"


def is_ident(expr: str, dialect: str) -> str:
    """True when ``expr`` is a job module name: ASCII letter, then letters, digits, ``_``.

    A leading ``_`` (helpers, dunders) is excluded here, as in
    :func:`dataforge.legacy.paths.parse_handler_path`.
    """
    if dialect == "postgresql":
        return f"({expr} ~ '^[A-Za-z][A-Za-z0-9_]*$')"
    return f"({expr} GLOB '[A-Za-z]*' AND {expr} NOT GLOB '*[^A-Za-z0-9_]*')"


def json_quote(expr: str, dialect: str) -> str:
    """``expr`` as a JSON value: a JSON string, or ``null`` for SQL NULL."""
    if dialect == "postgresql":
        return f"COALESCE(to_json(CAST({expr} AS text))::text, 'null')"
    return f"json_quote({expr})"


def values_cte(name: str, columns: Sequence[str], rows: Iterable[Sequence[str | None]]) -> str:
    """``name(cols) AS (VALUES ...)`` with literal rows; an empty relation when there are none."""
    rendered = [f"({', '.join(lit(v) for v in row)})" for row in rows]
    cols = ", ".join(columns)
    if not rendered:
        nulls = ", ".join("CAST(NULL AS VARCHAR(255))" for _ in columns)
        return f"{name}({cols}) AS (SELECT {nulls} WHERE 1 = 0)"
    return f"{name}({cols}) AS (VALUES {', '.join(rendered)})"


def guard(constraint: str, count_query: str) -> None:
    """Fail the migration, in SQL, when ``count_query`` returns a count other than 0.

    Online runs check the same condition in Python first and refuse with a full report; this
    is what stops the offline script (``--sql``), where no Python runs against the data. The
    error names ``constraint``, which says what to do (e.g. ``run_dataforge_db_check``).
    """
    for statement in guard_statements(constraint, count_query):
        execute(statement)


def guard_statements(constraint: str, count_query: str) -> list[str]:
    """The statements of :func:`guard`, for callers that run them on their own connection."""
    table = f"df_guard_{constraint}"[:60]
    return [
        f"CREATE TEMPORARY TABLE {table} (blocking_rows INTEGER NOT NULL, "
        f"CONSTRAINT {constraint} CHECK (blocking_rows = 0))",
        f"INSERT INTO {table} (blocking_rows) {count_query}",
        f"DROP TABLE {table}",
    ]


@contextmanager
def sqlite_keep_sequences(*tables: str) -> Iterator[None]:
    """Keep ``sqlite_sequence`` of AUTOINCREMENT tables across a table rebuild.

    A rebuild copies the rows, which sets the sequence to ``max(id)``; the original may be
    higher (rows deleted at the end), and AUTOINCREMENT promises ids are never reused.
    """
    names = ", ".join(lit(t) for t in tables)
    execute(
        f"CREATE TEMPORARY TABLE df_saved_sequences AS SELECT name, seq FROM sqlite_sequence WHERE name IN ({names})"
    )
    yield
    execute(f"DELETE FROM sqlite_sequence WHERE name IN ({names})")
    execute("INSERT INTO sqlite_sequence (name, seq) SELECT name, seq FROM temp.df_saved_sequences")
    execute("DROP TABLE temp.df_saved_sequences")
