"""The data step as SQL: one classification of every schedule row, used by both sides.

:func:`classification_sql` is a single ``SELECT`` that computes, for each ``scheduled_tasks``
row, the task name its ``handler_path`` maps to, the JSON object its ``handler_kwargs``
become, the row's reason codes (see :data:`migrations.report.REASONS`) and what the
migration writes. The data revision (0003) materialises it into a temporary table and
updates from it; ``dataforge db check`` runs the very same ``SELECT`` read-only and prints
the rows that have reasons. So the preflight and the upgrade cannot disagree.

Pure SQL, no Python loop over rows, so ``--sql`` renders a script that does the same thing
(the handler map becomes a ``VALUES`` list). The rules, and where SQL had to be conservative:

* ``handler_path`` → task name follows :class:`dataforge.legacy.paths.HandlerMap` exactly:
  the map's exact spelling, else the module parsed from the four spellings (map's module
  entry, else ``dataforge.<module>``). ``tests/migrations`` compares this SQL with the Python
  on a corpus of spellings.
* ``handler_kwargs``: JSON objects stay byte-identical unless they hold ``_lock_key`` /
  ``scheduled_task_id`` (removed); ``''``, ``'null'``, ``'None'`` become ``{}``; a Python repr
  is converted only when the conversion is provably exact (below); anything else is kept,
  flagged and reported. Every rewritten value keeps its original in ``handler_kwargs_legacy``.
* Python repr in SQL: a ``{...}`` text with no ``"`` and no backslash, where every ``'`` is
  therefore a string delimiter, becomes JSON by swapping quotes and ``True``/``False``/``None``
  for ``true``/``false``/``null``. The result is accepted only if it is a valid JSON object
  AND it holds exactly as many ``true``/``false``/``null`` values as the text held ``True``/
  ``False``/``None`` words, which proves no word inside a string was rewritten. Everything
  else (escapes, nested quotes, tuples, ``True`` inside a string...) is reported, not guessed:
  the tests check that every accepted conversion equals ``ast.literal_eval``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from migrations.options import MigrationOptions
from migrations.report import Item, MigrationReport
from migrations.sql import is_ident, json_quote, lit, sql, trim_ws, values_cte

__all__ = [
    "INVALID_PREFIX",
    "MIGRATION_ROWS",
    "RESERVED_KWARGS",
    "UNMAPPED_TASK_NAME",
    "Classified",
    "attempt_numbering_sql",
    "classification_sql",
    "cleanup_statements",
    "collect_report",
    "duplicate_executions_sql",
    "handler_path_for_task_sql",
    "lv_carry_kwargs",
    "lv_get",
    "lv_has",
    "lv_kwargs_only",
    "restorable",
    "now_utc",
    "prepare_statements",
]

#: Keys old messages leaked into rows; never job input.
RESERVED_KWARGS = ("_lock_key", "scheduled_task_id")
#: task_name given to inactive rows that name no task (task_name is NOT NULL after 0004).
#: Deliberately not a registered task: beat refuses the row if someone activates it unfixed.
UNMAPPED_TASK_NAME = "dataforge.legacy_unmapped"
#: invalid_reason texts written by the data step start with this; its downgrade clears them.
INVALID_PREFIX = "data migration: "
#: The temporary table 0003 materialises the classification into.
MIGRATION_ROWS = "df_migration_rows"

_PG_JSONB = "pg_temp.df_jsonb"


def prepare_statements(dialect: str) -> list[str]:
    """Statements to run before :func:`classification_sql` in the same transaction.

    PostgreSQL 15 has no "try to parse JSON" function; a session-temporary one returns NULL
    instead of raising (it disappears with the session, nothing is left in the schema).
    """
    if dialect != "postgresql":
        return []
    return [
        f"CREATE OR REPLACE FUNCTION {_PG_JSONB}(value text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$\n"
        "BEGIN\n  RETURN value::jsonb;\nEXCEPTION WHEN others THEN\n  RETURN NULL;\nEND\n$$"
    ]


def cleanup_statements(dialect: str) -> list[str]:
    return [f"DROP FUNCTION {_PG_JSONB}(text)"] if dialect == "postgresql" else []


def now_utc(dialect: str) -> str:
    """Naive UTC now, as the legacy columns hold it."""
    return "(now() AT TIME ZONE 'utc')" if dialect == "postgresql" else "CURRENT_TIMESTAMP"


def _count_word(expr: str, word: str) -> str:
    return f"((length({expr}) - length(replace({expr}, {lit(word)}, ''))) / {len(word)})"


def _repr_to_json_text(expr: str) -> str:
    out = f"replace({expr}, '''', '\"')"
    for word, json_word in (("True", "true"), ("False", "false"), ("None", "null")):
        out = f"replace({out}, {lit(word)}, {lit(json_word)})"
    return out


def _kwargs_sqlite() -> tuple[str, str, str]:
    """Columns of the three kwargs stages (parse, repr check, outcome) for SQLite."""
    repr_pre = (
        "substr(kw_trim, 1, 1) = '{' AND substr(kw_trim, length(kw_trim), 1) = '}' "
        "AND instr(kw_trim, '\"') = 0 AND instr(kw_trim, char(92)) = 0"
    )
    parse = (
        "CASE WHEN json_valid(handler_kwargs) THEN handler_kwargs END AS kw_json, "
        f"CASE WHEN NOT json_valid(handler_kwargs) AND {repr_pre} THEN {_repr_to_json_text('kw_trim')} END AS kw_repr"
    )
    counts = " AND ".join(
        f"{_count_word('kw_trim', word)} = (SELECT count(*) FROM json_tree(kw_repr) WHERE type = {lit(jtype)})"
        for word, jtype in (("True", "true"), ("False", "false"), ("None", "null"))
    )
    check = (
        "CASE WHEN kw_repr IS NOT NULL AND json_valid(kw_repr) AND json_type(kw_repr) = 'object' "
        f"AND {counts} THEN 1 ELSE 0 END AS kw_repr_ok"
    )
    reserved = " OR ".join(f"json_type(%s, {lit('$.' + key)}) IS NOT NULL" for key in RESERVED_KWARGS)
    strip = "json_remove(%s, " + ", ".join(lit("$." + key) for key in RESERVED_KWARGS) + ")"
    outcome = (
        "CASE WHEN kw_trim IN ('', 'null', 'None') THEN 'empty' "
        "WHEN kw_json IS NOT NULL THEN CASE WHEN json_type(kw_json) = 'object' THEN 'json' ELSE 'unconvertible' END "
        "WHEN kw_repr_ok = 1 THEN 'repr' ELSE 'unconvertible' END AS kw_kind, "
        f"CASE WHEN kw_json IS NOT NULL AND json_type(kw_json) = 'object' THEN ({reserved % ('kw_json', 'kw_json')}) "
        f"WHEN kw_repr_ok = 1 THEN ({reserved % ('kw_repr', 'kw_repr')}) ELSE 0 END AS kw_reserved, "
        f"CASE WHEN kw_json IS NOT NULL THEN {strip % 'kw_json'} WHEN kw_repr_ok = 1 THEN {strip % 'kw_repr'} END "
        "AS kw_stripped"
    )
    return parse, check, outcome


def _kwargs_postgresql() -> tuple[str, str, str]:
    """Columns of the three kwargs stages (parse, repr check, outcome) for PostgreSQL."""
    repr_pre = (
        "left(kw_trim, 1) = '{' AND right(kw_trim, 1) = '}' "
        "AND strpos(kw_trim, '\"') = 0 AND strpos(kw_trim, chr(92)) = 0"
    )
    parse = (
        f"{_PG_JSONB}(handler_kwargs) AS kw_json, "
        f"CASE WHEN {repr_pre} THEN {_PG_JSONB}({_repr_to_json_text('kw_trim')}) END AS kw_repr"
    )
    counts = " AND ".join(
        f"{_count_word('kw_trim', word)} = "
        f"(SELECT count(*) FROM jsonb_path_query(kw_repr, 'strict $.**') AS v WHERE v = {lit(jword)}::jsonb)"
        for word, jword in (("True", "true"), ("False", "false"), ("None", "null"))
    )
    check = (
        "CASE WHEN kw_json IS NULL AND kw_repr IS NOT NULL AND jsonb_typeof(kw_repr) = 'object' "
        f"AND {counts} THEN 1 ELSE 0 END AS kw_repr_ok"
    )
    reserved = " OR ".join(f"jsonb_exists(%s, {lit(key)})" for key in RESERVED_KWARGS)
    strip = "(%s" + "".join(f" - {lit(key)}" for key in RESERVED_KWARGS) + ")::text"
    is_object = "kw_json IS NOT NULL AND jsonb_typeof(kw_json) = 'object'"
    outcome = (
        "CASE WHEN kw_trim IN ('', 'null', 'None') THEN 'empty' "
        f"WHEN kw_json IS NOT NULL THEN CASE WHEN {is_object} THEN 'json' ELSE 'unconvertible' END "
        "WHEN kw_repr_ok = 1 THEN 'repr' ELSE 'unconvertible' END AS kw_kind, "
        f"CASE WHEN {is_object} THEN CASE WHEN {reserved % ('kw_json', 'kw_json')} THEN 1 ELSE 0 END "
        f"WHEN kw_repr_ok = 1 THEN CASE WHEN {reserved % ('kw_repr', 'kw_repr')} THEN 1 ELSE 0 END ELSE 0 END "
        "AS kw_reserved, "
        f"CASE WHEN {is_object} THEN {strip % 'kw_json'} WHEN kw_repr_ok = 1 THEN {strip % 'kw_repr'} END "
        "AS kw_stripped"
    )
    return parse, check, outcome


def _module_expr(dialect: str, package: str) -> tuple[str, str]:
    """(module expression over ``raw_module``, ``raw_module`` expression over the trimmed
    ``hp``): the text after the package in each of the four spellings, then kept only if it
    is a job module name. The spellings are told apart by prefix/suffix, and ``:``, ``.``,
    ``/`` can never be part of a module name, so at most one spelling can match."""
    n = len(package)
    colon, dot, slash = lit(package + ":"), lit(package + "."), lit(package + "/")
    raw = (
        "CASE "
        f"WHEN substr(hp, 1, {n + 1}) = {colon} THEN substr(hp, {n + 2}) "
        f"WHEN substr(hp, 1, {n + 1}) = {dot} AND length(hp) > {n + 5} AND substr(hp, length(hp) - 3) = ':run' "
        f"THEN substr(hp, {n + 2}, length(hp) - {n + 5}) "
        f"WHEN substr(hp, 1, {n + 1}) = {dot} THEN substr(hp, {n + 2}) "
        f"WHEN substr(hp, 1, {n + 1}) = {slash} AND length(hp) > {n + 4} AND substr(hp, length(hp) - 2) = '.py' "
        f"THEN substr(hp, {n + 2}, length(hp) - {n + 4}) "
        "END"
    )
    return f"CASE WHEN {is_ident('raw_module', dialect)} THEN raw_module END", raw


def classification_sql(dialect: str, options: MigrationOptions) -> str:
    """The ``SELECT`` that classifies every ``scheduled_tasks`` row (see the module doc).

    Columns: ``id, name, status, task_name, handler_path, handler_kwargs, mapped_task_name,
    kw_kind, blocking, reasons`` (comma-separated codes), and what 0003 writes:
    ``new_task_name, new_status, new_kwargs, kwargs_changed, invalid_reason, legacy_values``.
    Reads only legacy columns, so it runs on a legacy database as well as after 0002.

    Every stage is ``MATERIALIZED``: otherwise PostgreSQL inlines the CTEs and evaluates the
    JSON parse (a function with an exception handler) once per *reference* instead of once
    per row, which made 5,000 rows take a minute.
    """
    pause = options.on_unmappable == "pause"
    module_expr, raw_module = _module_expr(dialect, options.scripts_package)
    k_parse, k_check, k_outcome = _kwargs_postgresql() if dialect == "postgresql" else _kwargs_sqlite()
    handlers = values_cte("df_handlers", ("spelling", "task_name"), sorted(options.handlers.items()))
    modules = values_cte("df_modules", ("module", "task_name"), sorted(options.modules.items()))
    placeholder = lit(UNMAPPED_TASK_NAME)
    no_task = "c3.has_task = 0 AND c3.mapped_task_name IS NULL"
    unrecognised = "c3.handler_path IS NOT NULL AND c3.hp <> ''"
    active = "c3.status = 'active'"
    block_prefix = "paused" if pause else "blocked"

    def flag(condition: str, code: str) -> str:
        return f"CASE WHEN {condition} THEN {lit(',' + code)} ELSE '' END"

    reasons = " || ".join(
        [
            flag(f"{active} AND {no_task} AND {unrecognised}", f"{block_prefix}_unrecognised_handler_path"),
            flag(f"{active} AND {no_task} AND NOT ({unrecognised})", f"{block_prefix}_no_task_name_or_handler_path"),
            flag(f"NOT ({active}) AND {no_task} AND {unrecognised}", "inactive_unrecognised_handler_path"),
            flag(f"NOT ({active}) AND {no_task} AND NOT ({unrecognised})", "inactive_no_task_name_or_handler_path"),
            flag("c3.has_task = 0 AND c3.mapped_task_name IS NOT NULL", "task_name_from_handler_path"),
            flag(
                "c3.has_task = 1 AND c3.mapped_task_name IS NOT NULL AND c3.task_name <> c3.mapped_task_name",
                "task_name_disagrees_with_handler_path",
            ),
            flag(f"c3.has_task = 1 AND c3.mapped_task_name IS NULL AND {unrecognised}", "handler_path_unrecognised"),
            flag("c3.kw_kind = 'empty'", "kwargs_empty"),
            flag("c3.kw_kind = 'repr'", "kwargs_python_repr"),
            flag("c3.kw_kind IN ('json', 'repr') AND c3.kw_reserved = 1", "kwargs_reserved_keys"),
            flag("c3.kw_kind = 'unconvertible'", "kwargs_unconvertible"),
        ]
    )
    new_kwargs = (
        "CASE WHEN c3.kw_kind = 'empty' THEN '{}' "
        "WHEN c3.kw_kind = 'repr' OR (c3.kw_kind = 'json' AND c3.kw_reserved = 1) THEN c3.kw_stripped "
        "ELSE c3.handler_kwargs END"
    )
    kwargs_changed = "(c3.kw_kind IN ('empty', 'repr') OR (c3.kw_kind = 'json' AND c3.kw_reserved = 1))"
    new_task = f"CASE WHEN c3.has_task = 1 THEN c3.task_name ELSE COALESCE(c3.mapped_task_name, {placeholder}) END"
    paused = f"{active} AND {no_task}" if pause else "1 = 0"
    new_status = f"CASE WHEN {paused} THEN 'paused' ELSE c3.status END"
    paused_text = "no task for handler_path; paused by on_unmappable=pause: set task_name, then activate"
    invalid = (
        f"CASE WHEN {paused} THEN {lit(INVALID_PREFIX + paused_text)}"
        f" WHEN {no_task} THEN {lit(INVALID_PREFIX + 'no task for handler_path: set task_name before activating')}"
        f" WHEN c3.kw_kind = 'unconvertible' THEN "
        f"{lit(INVALID_PREFIX + 'handler_kwargs is not a JSON object (kept as is): rewrite it as JSON')} END"
    )

    def jq(expr: str) -> str:
        return json_quote(expr, dialect)

    legacy_values = (
        "'{' || substr("
        f'CASE WHEN c3.has_task = 0 THEN \', "task_name": {{"legacy": \' || {jq("c3.task_name")} || '
        f"', \"migrated\": ' || {jq(new_task)} || '}}' ELSE '' END || "
        f'CASE WHEN {paused} THEN \', "status": {{"legacy": \' || {jq("c3.status")} || '
        "', \"migrated\": \"paused\"}' ELSE '' END || "
        f"CASE WHEN {kwargs_changed} THEN ', \"handler_kwargs\": {{\"migrated\": ' || {jq(new_kwargs)} || '}}' "
        "ELSE '' END, 3) || '}'"
    )
    blocking = f"CASE WHEN {active} AND {no_task} THEN 1 ELSE 0 END" if not pause else "0"
    return f"""WITH
{handlers},
{modules},
c0 AS MATERIALIZED (
  SELECT s.id, s.name, s.status, s.task_name, s.handler_path, s.handler_kwargs,
         {trim_ws("s.handler_path", dialect)} AS hp,
         {trim_ws("s.handler_kwargs", dialect)} AS kw_trim,
         CASE WHEN s.task_name IS NOT NULL AND {trim_ws("s.task_name", dialect)} <> '' THEN 1 ELSE 0 END AS has_task
  FROM scheduled_tasks s
),
c1 AS MATERIALIZED (
  SELECT c0.*, {raw_module} AS raw_module, {k_parse} FROM c0
),
c2a AS MATERIALIZED (
  SELECT c1.*, {module_expr} AS module, {k_check} FROM c1
),
c2 AS MATERIALIZED (
  SELECT c2a.*, {k_outcome} FROM c2a
),
c3 AS MATERIALIZED (
  SELECT c2.*,
         COALESCE(
           (SELECT h.task_name FROM df_handlers h WHERE h.spelling = c2.hp),
           (SELECT m.task_name FROM df_modules m WHERE m.module = c2.module),
           CASE WHEN c2.module IS NOT NULL THEN 'dataforge.' || c2.module END
         ) AS mapped_task_name
  FROM c2
)
SELECT c3.id, c3.name, c3.status, c3.task_name, c3.handler_path, c3.handler_kwargs, c3.mapped_task_name,
       c3.kw_kind,
       {blocking} AS blocking,
       substr({reasons}, 2) AS reasons,
       {new_task} AS new_task_name,
       {new_status} AS new_status,
       {new_kwargs} AS new_kwargs,
       CASE WHEN {kwargs_changed} THEN 1 ELSE 0 END AS kwargs_changed,
       {invalid} AS invalid_reason,
       {legacy_values} AS legacy_values
FROM c3"""


def duplicate_executions_sql() -> str:
    """``(id, celery_task_id, attempt)`` of every execution that is not the first of its
    ``celery_task_id`` (legacy retries), numbered by id. 0002 writes these attempts."""
    return (
        "SELECT n.id, n.celery_task_id, n.rn - 1 AS attempt FROM ("
        "SELECT e.id, e.celery_task_id, row_number() OVER (PARTITION BY e.celery_task_id ORDER BY e.id) AS rn "
        "FROM task_executions e WHERE e.celery_task_id IN ("
        "SELECT d.celery_task_id FROM task_executions d WHERE d.celery_task_id IS NOT NULL "
        "GROUP BY d.celery_task_id HAVING count(*) > 1)"
        ") n WHERE n.rn > 1"
    )


def attempt_numbering_sql() -> str:
    """The UPDATE of 0002 that numbers legacy retries (same SQL on both dialects)."""
    return (
        f"UPDATE task_executions SET attempt = dup.attempt FROM ({duplicate_executions_sql()}) AS dup "
        "WHERE task_executions.id = dup.id"
    )


def handler_path_for_task_sql(task_expr: str, options: MigrationOptions, dialect: str) -> str:
    """SQL expression: the canonical legacy spelling (``scripts:<m>``) of the task named by
    ``task_expr``, or NULL. The inverse of the map: the map's module whose task this is, else
    ``dataforge.<m>`` with ``<m>`` a job module name."""
    package = options.scripts_package
    by_module = sorted((task, module) for module, task in options.modules.items())
    suffix = f"substr({task_expr}, 11)"
    rule = (
        f"CASE WHEN substr({task_expr}, 1, 10) = 'dataforge.' AND {is_ident(suffix, dialect)} "
        f"THEN {lit(package + ':')} || {suffix} END"
    )
    if not by_module:
        return rule
    cases = " ".join(f"WHEN {task_expr} = {lit(task)} THEN {lit(package + ':' + module)}" for task, module in by_module)
    return f"CASE {cases} ELSE {rule} END"


# -- legacy_values: the per-row record of what the data step replaced ----------------------------
# {"task_name": {"legacy": <old>, "migrated": <new>}, "status": {...}, "handler_kwargs": {"migrated": <new>}}
# (the old handler_kwargs text is in handler_kwargs_legacy). A value is put back only while the
# row still holds what the migration wrote ("migrated"), so edits made since then are kept.


def lv_has(key: str, dialect: str, column: str = "legacy_values") -> str:
    if dialect == "postgresql":
        return f"jsonb_exists(CAST({column} AS jsonb), {lit(key)})"
    return f"json_type({column}, {lit('$.' + key)}) IS NOT NULL"


def lv_get(path: tuple[str, ...], dialect: str, column: str = "legacy_values") -> str:
    """A text value inside legacy_values (SQL NULL for JSON null or absent)."""
    if dialect == "postgresql":
        return f"(CAST({column} AS jsonb) #>> {lit('{' + ','.join(path) + '}')})"
    return f"json_extract({column}, {lit('$.' + '.'.join(path))})"


def restorable(column: str, dialect: str) -> str:
    """The row still holds what the data migration wrote into ``column``."""
    return f"({lv_has(column, dialect)} AND {column} = {lv_get((column, 'migrated'), dialect)})"


def lv_kwargs_only(dialect: str) -> str:
    """legacy_values reduced to its handler_kwargs entry (``{}`` without one): what 0003's
    downgrade leaves, because the kwargs are put back by 0002's downgrade (see there)."""
    if dialect == "postgresql":
        return (
            f"CASE WHEN {lv_has('handler_kwargs', dialect)} THEN jsonb_build_object('handler_kwargs', "
            "CAST(legacy_values AS jsonb) -> 'handler_kwargs')::text ELSE '{}' END"
        )
    return (
        f"CASE WHEN {lv_has('handler_kwargs', dialect)} THEN json_object('handler_kwargs', "
        "json(json_extract(legacy_values, '$.handler_kwargs'))) ELSE '{}' END"
    )


def lv_carry_kwargs(new: str, old: str, dialect: str) -> str:
    """``new`` legacy_values plus the handler_kwargs entry of ``old`` (a previous up/down
    cycle), for rows whose kwargs this run leaves alone."""
    if dialect == "postgresql":
        return (
            f"(CAST({new} AS jsonb) || jsonb_build_object('handler_kwargs', CAST({old} AS jsonb) -> 'handler_kwargs'))"
            "::text"
        )
    return f"json_set({new}, '$.handler_kwargs', json(json_extract({old}, '$.handler_kwargs')))"


@dataclass(frozen=True)
class Classified:
    """One classified row as the report needs it."""

    id: int
    name: str
    status: str
    task_name: str | None
    handler_path: str | None
    handler_kwargs: str
    mapped_task_name: str | None
    new_task_name: str
    reasons: tuple[str, ...]

    def detail(self, code: str) -> str:
        if code.startswith("kwargs_"):
            return f"handler_kwargs={_clip(self.handler_kwargs)!r}"
        if code == "task_name_disagrees_with_handler_path":
            return f"task_name={self.task_name!r}, handler_path={self.handler_path!r} -> {self.mapped_task_name!r}"
        if code == "task_name_from_handler_path":
            return f"{self.handler_path!r} -> {self.new_task_name!r}"
        return f"status={self.status!r}, handler_path={self.handler_path!r}, task_name={self.task_name!r}"


def _clip(value: str, width: int = 80) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."


def collect_report(
    connection: Connection,
    dialect: str,
    options: MigrationOptions,
    *,
    source: str | None = None,
    include_executions: bool = True,
    sample: int = 1000,
) -> MigrationReport:
    """Run the classification (``source``: a table already holding it, else the SELECT itself)
    and group the rows that have reasons. Read-only; on PostgreSQL the caller must have run
    :func:`prepare_statements` in the same transaction when ``source`` is None."""
    origin = source or f"({classification_sql(dialect, options)}) AS q"
    report = MigrationReport(title="DataForge data migration report (scheduled_tasks, task_executions)")
    if options.map_source:
        report.notes.append(f"handler map: {options.map_source}")
    else:
        report.notes.append("no handler map: task names follow the rule scripts:<m> -> dataforge.<m>")
    report.notes.append(f"on_unmappable={options.on_unmappable}; scripts package {options.scripts_package!r}")
    rows = connection.execute(
        sql(
            "SELECT id, name, status, task_name, handler_path, handler_kwargs, mapped_task_name, new_task_name, "
            f"reasons FROM {origin} WHERE reasons <> '' ORDER BY id"
        )
    )
    for row in rows:
        item = Classified(
            id=row.id, name=row.name, status=row.status, task_name=row.task_name, handler_path=row.handler_path,
            handler_kwargs=row.handler_kwargs, mapped_task_name=row.mapped_task_name,
            new_task_name=row.new_task_name, reasons=tuple(row.reasons.split(",")),
        )  # fmt: skip
        for code in item.reasons:
            report.add(code, Item(item.id, item.name, item.detail(code)))
    if include_executions:
        total = connection.execute(sql(f"SELECT count(*) FROM ({duplicate_executions_sql()}) AS d")).scalar_one()
        if total:
            found = connection.execute(
                sql(
                    f"SELECT id, celery_task_id, attempt FROM ({duplicate_executions_sql()}) AS d "
                    f"ORDER BY id LIMIT {sample}"
                )
            )
            items = [Item(r.id, str(r.celery_task_id), f"attempt {r.attempt}") for r in found]
            report.add_total("executions_attempts_numbered", int(total), items)
    return report
