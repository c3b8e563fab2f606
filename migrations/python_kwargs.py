"""The Python step of the kwargs conversion: the rows SQL cannot prove, converted exactly and
written back set-based.

:func:`migrations.legacy_data.kwargs_sql` leaves ``kw_kind = 'python'`` on every row whose
``handler_kwargs`` SQL cannot prove (a tuple, a quote or backslash inside a string, ``True``
inside a string, not a literal at all...). Those rows, and only those, are read once,
converted by :func:`migrations.literal_kwargs.convert_kwargs` (the equal JSON object, or the
exact reason there is none) and written back into the staging table by one multi-row
``UPDATE ... FROM (VALUES ...)`` per batch: no round trip per row.

The statements are literal SQL (:func:`migrations.sql.data_literal`), the same online and in
an offline script: ``dataforge db sql --legacy-db URL`` reads the legacy database
(read-only) and the script carries these very statements. Each ``VALUES`` row carries the
original text, and applies only while the row still holds it, so a script run after the row
was edited never writes a stale conversion: that row stays ``python`` and the script stops
(0003's guard), changing nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, inspect

from migrations.connections import inspection_connection, read_only, redacted
from migrations.errors import DatabaseUnavailableError, MigrationOptionError
from migrations.legacy_data import KWARGS_ROWS, RESERVED_KWARGS, kwargs_sql, prepare_statements
from migrations.literal_kwargs import KwargsConversion, convert_kwargs
from migrations.sql import comment, data_literal, lit, sql

__all__ = [
    "PENDING",
    "RowConversion",
    "convert_rows",
    "offline_step",
    "online_step",
    "pending_rows",
    "read_legacy_database",
    "script_notes",
    "update_statements",
]

#: The kw_kind of rows the Python step decides.
PENDING = "python"
#: Rows per UPDATE, and a bound on its literal text (statements stay easy to review and send).
BATCH_ROWS = 500
BATCH_CHARS = 1_000_000
_CLIP = 120


@dataclass(frozen=True)
class RowConversion:
    """What one row's ``handler_kwargs`` became; ``by_sql``: SQL decided it already (JSON that
    is not an object), listed in an offline script's notes, never updated."""

    id: int
    original: str
    result: KwargsConversion
    name: str = ""
    by_sql: bool = False


def convert_rows(rows: Iterable[tuple[int, str]]) -> list[RowConversion]:
    return [RowConversion(row_id, text, convert_kwargs(text, RESERVED_KWARGS)) for row_id, text in rows]


def pending_rows(connection: Connection) -> list[tuple[int, str]]:
    """``(id, handler_kwargs)`` of the staged rows the Python step decides, by id."""
    found = connection.execute(
        sql(f"SELECT id, handler_kwargs FROM {KWARGS_ROWS} WHERE kw_kind = {lit(PENDING)} ORDER BY id")
    )
    return [(int(r.id), str(r.handler_kwargs)) for r in found]


def update_statements(conversions: Sequence[RowConversion], dialect: str) -> list[str]:
    """One ``WITH ... UPDATE`` per batch that writes ``conversions`` into the staging table."""
    return [_update(batch, dialect) for batch in _batches([c for c in conversions if not c.by_sql], dialect)]


def _values(conversion: RowConversion, dialect: str) -> str:
    r = conversion.result
    new = "NULL" if r.json is None else data_literal(r.json, dialect)
    problem = "NULL" if r.problem is None else data_literal(r.problem, dialect)
    return (
        f"({conversion.id}, {data_literal(conversion.original, dialect)}, {lit(r.kind)}, {int(r.reserved)}, "
        f"{new}, {problem})"
    )


def _batches(conversions: Sequence[RowConversion], dialect: str) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for conversion in conversions:
        row = _values(conversion, dialect)
        if batch and (len(batch) >= BATCH_ROWS or size + len(row) > BATCH_CHARS):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += len(row)
    if batch:
        yield batch


def _update(values: list[str], dialect: str) -> str:
    rows = ",\n  ".join(values)
    # A column of only NULLs would be typed unknown by PostgreSQL: say it is text.
    text = "CAST(v.{} AS TEXT)"
    return (
        f"WITH v(id, original, kind, reserved, converted, problem) AS (VALUES\n  {rows}\n)\n"
        f"UPDATE {KWARGS_ROWS} SET kw_kind = v.kind, kw_reserved = v.reserved, "
        f"kw_new = {text.format('converted')}, kw_problem = {text.format('problem')} "
        f"FROM v WHERE {KWARGS_ROWS}.id = v.id AND {KWARGS_ROWS}.handler_kwargs = v.original "
        f"AND {KWARGS_ROWS}.kw_kind = {lit(PENDING)}"
    )


def read_legacy_database(url: str, dialect: str) -> list[RowConversion]:
    """The Python step's results for the database at ``url`` (opened read-only), for an
    offline script: every row SQL leaves to Python, converted, plus the rows SQL itself finds
    without a JSON object form (for the script's notes)."""
    with inspection_connection(url) as connection:
        assert connection is not None  # missing_ok is not given: a missing file raises
        if connection.dialect.name != dialect:
            raise MigrationOptionError(
                "legacy_db", redacted(url), f"is a {connection.dialect.name} database; this script is for {dialect}"
            )
        if "scheduled_tasks" not in inspect(connection).get_table_names():
            raise DatabaseUnavailableError(redacted(url), "has no scheduled_tasks table: not a legacy database")
        for statement in prepare_statements(dialect):
            connection.execute(sql(statement))
        read_only(connection)
        found = connection.execute(
            sql(
                f"SELECT k.id, s.name, k.handler_kwargs, k.kw_kind, k.kw_problem FROM ({kwargs_sql(dialect)}) AS k "
                f"JOIN scheduled_tasks s ON s.id = k.id WHERE k.kw_kind IN ({lit(PENDING)}, 'unconvertible') "
                "ORDER BY k.id"
            )
        ).all()
    out = []
    for row in found:
        text = str(row.handler_kwargs)
        if row.kw_kind == PENDING:
            result = convert_kwargs(text, RESERVED_KWARGS)
            out.append(RowConversion(int(row.id), text, result, name=str(row.name)))
        else:
            result = KwargsConversion("unconvertible", problem=row.kw_problem)
            out.append(RowConversion(int(row.id), text, result, name=str(row.name), by_sql=True))
    return out


def script_notes(conversions: Sequence[RowConversion] | None, source: str | None) -> list[str]:
    """A comment block for an offline script (one statement): what the Python step did from
    ``source`` (a URL, password hidden), or that it could not run. Row data is quoted and
    escaped to printable ASCII, so no value can end a comment line."""
    if conversions is None:
        return [
            "\n".join(
                comment(line)
                for line in (
                "0003_data: handler_kwargs that only Python can convert (a tuple, a quote or backslash inside a",
                "string, True/False/None inside a string...) need the rows: this script was rendered without",
                "reading them (no --legacy-db URL / -x legacy_db=URL). If the database holds any such row, the",
                "script stops at the constraint render_with_legacy_db_to_convert_kwargs, changing nothing:",
                "render it again with `dataforge db sql --legacy-db URL`, or run `dataforge db upgrade`.",
                )
            )
        ]
    converted = [c for c in conversions if c.result.kind != "unconvertible"]
    refused = [c for c in conversions if c.result.kind == "unconvertible"]
    lines = [
        f"0003_data: handler_kwargs read from {source}: {len(converted)} rows converted by Python "
        "(the UPDATEs below apply only where the row still holds the text they were computed from)",
        f"{len(refused)} rows have no JSON object form: kept as is, flagged kwargs_unconvertible, "
        "beat will not run them:",
    ]
    for c in refused:
        lines.append(
            f"  id={c.id} name={json.dumps(c.name)}: handler_kwargs={json.dumps(_clip(c.original))}: "
            f"{json.dumps(c.result.problem)}"
        )
    return ["\n".join(comment(line) for line in lines)]


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[: _CLIP - 3] + "..."


def online_step(connection: Connection, dialect: str) -> list[str]:
    """The Python step of a run on a live connection: the staged pending rows, converted."""
    return update_statements(convert_rows(pending_rows(connection)), dialect)


def offline_step(legacy_db: str | None, dialect: str) -> list[str]:
    """The Python step of an offline script: notes, and the conversions read from
    ``legacy_db`` when it is given (see :func:`read_legacy_database`)."""
    if legacy_db is None:
        return script_notes(None, None)
    conversions = read_legacy_database(legacy_db, dialect)
    return [*script_notes(conversions, redacted(legacy_db)), *update_statements(conversions, dialect)]
