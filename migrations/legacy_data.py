"""The data step as SQL: one classification of every schedule row, used by both sides.

:func:`classification_sql` is a single ``SELECT`` that computes, for each ``scheduled_tasks``
row, the task name its ``handler_path`` maps to, the JSON object its ``handler_kwargs``
become, the row's reason codes (see :data:`migrations.report.REASONS`) and what the
migration writes. The data revision (0003) materialises it into a temporary table and
updates from it; ``dataforge db check`` runs the very same statements in a transaction it
rolls back (:mod:`migrations.data_step`). So the preflight and the upgrade cannot disagree.

Set-based: SQL does every row it can prove, and only the rest of the ``handler_kwargs`` go
to Python (:mod:`migrations.python_kwargs`), in batches. ``--sql`` renders the same
statements (the handler map becomes a ``VALUES`` list, the Python results literal
``UPDATE`` statements when the legacy database is given to read). The rules:

* ``handler_path`` → task name follows :class:`dataforge.legacy.paths.HandlerMap` exactly:
  the map's exact spelling, else the module parsed from the four spellings (map's module
  entry, else ``dataforge.<module>``). ``tests/migrations`` compares this SQL with the Python
  on a corpus of spellings.
* ``handler_kwargs`` (:func:`kwargs_sql`): JSON objects stay byte-identical unless they hold
  ``_lock_key`` / ``scheduled_task_id`` (removed, every other value's text kept); ``''``,
  ``'null'``, ``'None'`` become ``{}``; JSON that is not an object is kept, flagged and
  reported; a Python repr is converted in SQL only when the conversion is provably exact
  (below), else by Python (``ast.literal_eval``, exactly, or the exact reason there is no
  JSON form: :mod:`migrations.literal_kwargs`). Every rewritten value keeps its original in
  ``handler_kwargs_legacy``.
* Python repr in SQL: a ``{...}`` text with no ``"``, no backslash and no number that could
  overflow to ``inf`` (an exponent, or 250 digits in a row), where every ``'`` is therefore a
  string delimiter, becomes JSON by swapping quotes and ``True``/``False``/``None``
  for ``true``/``false``/``null``. The result is accepted only if it is a valid JSON object
  AND it holds exactly as many ``true``/``false``/``null`` values as the text held ``True``/
  ``False``/``None`` words, which proves no word inside a string was rewritten. The swapped
  text itself is written (not the database's re-serialisation, which may rewrite numbers).
  Everything else (escapes, quotes inside strings, tuples, ``True`` inside a string...) is
  left to Python: the tests check that SQL and Python agree with ``ast.literal_eval``.
"""

from __future__ import annotations

from migrations.options import MigrationOptions
from migrations.sql import is_ident, json_quote, lit, trim_ws, values_cte

__all__ = [
    "INVALID_PREFIX",
    "KWARGS_ROWS",
    "MIGRATION_ROWS",
    "NOT_CONVERTED",
    "RESERVED_KWARGS",
    "UNMAPPED_TASK_NAME",
    "attempt_numbering_sql",
    "classification_sql",
    "cleanup_statements",
    "duplicate_executions_sql",
    "handler_path_for_task_sql",
    "kwargs_sql",
    "kwargs_table_statements",
    "lv_carry_kwargs",
    "lv_get",
    "lv_has",
    "lv_kwargs_only",
    "now_utc",
    "prepare_statements",
    "restorable",
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
#: The temporary table of the kwargs stage (:func:`kwargs_sql`), which the Python step completes.
KWARGS_ROWS = "df_migration_kwargs"
#: The reason a row gets when the Python step did not run for it (an offline script rendered
#: without the legacy database stops before that can be written: see 0003).
NOT_CONVERTED = "only the Python conversion can tell, and it did not run for this row"

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


#: A float literal reaches ``inf`` (no JSON form; Python reads ``1e999`` as inf from JSON as
#: well) only with an exponent or 309 integer digits: texts with an exponent or a run of this
#: many digits go to Python (a PostgreSQL regular expression repeats at most 255 times).
_FLOAT_DIGITS = 250


def _kwargs_columns(dialect: str) -> tuple[str, str, str, str]:
    """The per-dialect pieces of :func:`kwargs_sql`: parse, stage, reserved check, strip.

    ``kw_stage`` (over the parsed columns): ``empty``, ``json`` (a JSON object), ``not_object``
    (JSON, but a list, number...), ``repr`` (the quote swap is proven exact) or ``python``.
    ``kw_src`` is the JSON object text a ``json``/``repr`` row stands for (the original text,
    or the swapped one); stripping reserved keys must keep every other value's text as it is
    (PostgreSQL's ``jsonb`` would rewrite ``1e300`` as 301 digits, a different float).
    """
    if dialect == "postgresql":
        repr_pre = (
            "left(kw_trim, 1) = '{' AND right(kw_trim, 1) = '}' "
            "AND strpos(kw_trim, '\"') = 0 AND strpos(kw_trim, chr(92)) = 0 "
            f"AND kw_trim !~ '[0-9][eE]' AND kw_trim !~ '[0-9]{{{_FLOAT_DIGITS}}}'"
        )
        parse = (
            f"{_PG_JSONB}(handler_kwargs) AS kw_json, "
            f"CASE WHEN {repr_pre} THEN {_repr_to_json_text('kw_trim')} END AS kw_repr_text"
        )
        counts = " AND ".join(
            f"{_count_word('kw_trim', word)} = "
            f"(SELECT count(*) FROM jsonb_path_query(kw_repr, 'strict $.**') AS v WHERE v = {lit(jword)}::jsonb)"
            for word, jword in (("True", "true"), ("False", "false"), ("None", "null"))
        )
        stage = (
            "CASE WHEN kw_trim IN ('', 'null', 'None') THEN 'empty' "
            "WHEN kw_json IS NOT NULL THEN CASE WHEN jsonb_typeof(kw_json) = 'object' THEN 'json' "
            "ELSE 'not_object' END "
            f"WHEN kw_repr IS NOT NULL AND jsonb_typeof(kw_repr) = 'object' AND {counts} THEN 'repr' "
            "ELSE 'python' END AS kw_stage, "
            "CASE WHEN kw_json IS NOT NULL THEN jsonb_typeof(kw_json) END AS kw_json_type"
        )
        src_jsonb = "CASE kw_stage WHEN 'json' THEN kw_json WHEN 'repr' THEN kw_repr END"
        reserved = " OR ".join(f"jsonb_exists({src_jsonb}, {lit(key)})" for key in RESERVED_KWARGS)
        keys = ", ".join(lit(key) for key in RESERVED_KWARGS)
        # json (not jsonb) keeps each value's text exactly; json_object_agg puts them back in order.
        strip = (
            "COALESCE((SELECT json_object_agg(e.key, e.value ORDER BY e.n) "
            "FROM json_each(CAST(kw_src AS json)) WITH ORDINALITY AS e(key, value, n) "
            f"WHERE e.key NOT IN ({keys}))::text, '{{}}')"
        )
        return parse, stage, f"CASE WHEN {reserved} THEN 1 ELSE 0 END", strip
    repr_pre = (
        "substr(kw_trim, 1, 1) = '{' AND substr(kw_trim, length(kw_trim), 1) = '}' "
        "AND instr(kw_trim, '\"') = 0 AND instr(kw_trim, char(92)) = 0 "
        f"AND kw_trim NOT GLOB '*[0-9][eE]*' AND kw_trim NOT GLOB '*{'[0-9]' * _FLOAT_DIGITS}*'"
    )
    parse = (
        "CASE WHEN json_valid(handler_kwargs) THEN handler_kwargs END AS kw_json, "
        f"CASE WHEN NOT json_valid(handler_kwargs) AND {repr_pre} THEN {_repr_to_json_text('kw_trim')} END "
        "AS kw_repr_text"
    )
    counts = " AND ".join(
        f"{_count_word('kw_trim', word)} = (SELECT count(*) FROM json_tree(kw_repr_text) WHERE type = {lit(jtype)})"
        for word, jtype in (("True", "true"), ("False", "false"), ("None", "null"))
    )
    stage = (
        "CASE WHEN kw_trim IN ('', 'null', 'None') THEN 'empty' "
        "WHEN kw_json IS NOT NULL THEN CASE WHEN json_type(kw_json) = 'object' THEN 'json' ELSE 'not_object' END "
        "WHEN kw_repr_text IS NOT NULL AND json_valid(kw_repr_text) AND json_type(kw_repr_text) = 'object' "
        f"AND {counts} THEN 'repr' "
        "ELSE 'python' END AS kw_stage, "
        "CASE WHEN kw_json IS NOT NULL THEN json_type(kw_json) END AS kw_json_type"
    )
    reserved = " OR ".join(f"json_type(kw_src, {lit('$.' + key)}) IS NOT NULL" for key in RESERVED_KWARGS)
    # json_remove keeps the text of numbers; a key written twice loses only its first copy,
    # which kwargs_sql catches (the row goes to Python).
    strip = "json_remove(kw_src, " + ", ".join(lit("$." + key) for key in RESERVED_KWARGS) + ")"
    return parse, stage, f"CASE WHEN kw_src IS NOT NULL AND ({reserved}) THEN 1 ELSE 0 END", strip


def _reserved_left(expr: str, dialect: str) -> str:
    """``expr`` (a JSON object text) still holds a reserved key."""
    if dialect == "postgresql":
        return "(" + " OR ".join(f"jsonb_exists(CAST({expr} AS jsonb), {lit(k)})" for k in RESERVED_KWARGS) + ")"
    return "(" + " OR ".join(f"json_type({expr}, {lit('$.' + k)}) IS NOT NULL" for k in RESERVED_KWARGS) + ")"


#: The words the report uses for a JSON value that is not an object, per dialect's type name.
_JSON_TYPE_WORDS = {
    "array": "an array", "string": "a string", "text": "a string", "number": "a number", "integer": "a number",
    "real": "a number", "boolean": "a boolean", "true": "a boolean", "false": "a boolean", "null": "null",
}  # fmt: skip


def kwargs_sql(dialect: str) -> str:
    """The ``SELECT`` that rows of :data:`KWARGS_ROWS` are made of: per schedule row, what SQL
    can prove about its ``handler_kwargs`` (see the module doc).

    Columns: ``id, handler_kwargs, kw_kind, kw_reserved, kw_new, kw_problem``. ``kw_kind``:
    ``empty`` (becomes ``{}``), ``json`` (a JSON object; kept, or stripped of reserved keys),
    ``repr`` (converted by the quote swap), ``unconvertible`` (JSON, not an object) or
    ``python``: SQL proves nothing, :mod:`migrations.python_kwargs` decides. ``kw_new``: the
    text 0003 writes (``NULL`` for ``python`` and ``unconvertible``).
    """
    parse, stage, reserved, strip = _kwargs_columns(dialect)
    repr_parse = (
        f", CASE WHEN kw_json IS NULL THEN {_PG_JSONB}(kw_repr_text) END AS kw_repr" if dialect == "postgresql" else ""
    )
    type_words = " ".join(f"WHEN {lit(name)} THEN {lit(word)}" for name, word in _JSON_TYPE_WORDS.items())
    return f"""WITH
k0 AS MATERIALIZED (
  SELECT s.id, s.handler_kwargs, {trim_ws("s.handler_kwargs", dialect)} AS kw_trim FROM scheduled_tasks s
),
k1 AS MATERIALIZED (
  SELECT k0.*, {parse} FROM k0
),
k2 AS MATERIALIZED (
  SELECT k1.*{repr_parse} FROM k1
),
k3 AS MATERIALIZED (
  SELECT k2.*, {stage} FROM k2
),
k4 AS MATERIALIZED (
  SELECT k3.*, CASE kw_stage WHEN 'json' THEN handler_kwargs WHEN 'repr' THEN kw_repr_text END AS kw_src FROM k3
),
k5 AS MATERIALIZED (
  SELECT k4.*, {reserved} AS kw_reserved FROM k4
),
k6 AS MATERIALIZED (
  SELECT k5.*, CASE WHEN kw_reserved = 1 THEN {strip} END AS kw_stripped FROM k5
),
k7 AS MATERIALIZED (
  SELECT k6.*,
         CASE WHEN kw_stage = 'not_object' THEN 'unconvertible'
              WHEN kw_reserved = 1 AND {_reserved_left("kw_stripped", dialect)} THEN 'python'
              ELSE kw_stage END AS kw_kind
  FROM k6
)
SELECT id, handler_kwargs, kw_kind,
       CASE WHEN kw_kind = 'python' THEN 0 ELSE kw_reserved END AS kw_reserved,
       CASE WHEN kw_kind = 'empty' THEN '{{}}'
            WHEN kw_kind IN ('json', 'repr') AND kw_reserved = 1 THEN kw_stripped
            WHEN kw_kind = 'json' THEN handler_kwargs
            WHEN kw_kind = 'repr' THEN kw_repr_text END AS kw_new,
       CASE WHEN kw_kind = 'unconvertible' THEN
         'JSON ' || CASE kw_json_type {type_words} ELSE kw_json_type END || ', not an object' END AS kw_problem
FROM k7"""


def kwargs_table_statements(dialect: str) -> list[str]:
    """Create :data:`KWARGS_ROWS` and fill it from :func:`kwargs_sql` (declared with a primary
    key: the Python step updates it by id, and the classification joins it by id)."""
    return [
        f"CREATE TEMPORARY TABLE {KWARGS_ROWS} (id INTEGER PRIMARY KEY, handler_kwargs TEXT NOT NULL, "
        "kw_kind VARCHAR(16) NOT NULL, kw_reserved INTEGER NOT NULL, kw_new TEXT, kw_problem TEXT)",
        f"INSERT INTO {KWARGS_ROWS} (id, handler_kwargs, kw_kind, kw_reserved, kw_new, kw_problem) "
        f"SELECT id, handler_kwargs, kw_kind, kw_reserved, kw_new, kw_problem FROM ({kwargs_sql(dialect)}) AS k",
    ]


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
    kw_kind, kw_problem, blocking, reasons`` (comma-separated codes), and what 0003 writes:
    ``new_task_name, new_status, new_kwargs, kwargs_changed, invalid_reason, legacy_values``.
    Reads only legacy columns and :data:`KWARGS_ROWS` (which must exist, completed by the
    Python step), so it runs on a legacy database as well as after 0002.

    Every stage is ``MATERIALIZED``: otherwise PostgreSQL inlines the CTEs and evaluates the
    JSON parse (a function with an exception handler) once per *reference* instead of once
    per row, which made 5,000 rows take a minute.
    """
    pause = options.on_unmappable == "pause"
    module_expr, raw_module = _module_expr(dialect, options.scripts_package)
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
            flag("c3.kw_kind IN ('unconvertible', 'python')", "kwargs_unconvertible"),
        ]
    )
    kwargs_changed = "(c3.kw_kind IN ('empty', 'repr') OR (c3.kw_kind = 'json' AND c3.kw_reserved = 1))"
    new_kwargs = f"CASE WHEN {kwargs_changed} THEN c3.kw_new ELSE c3.handler_kwargs END"
    new_task = f"CASE WHEN c3.has_task = 1 THEN c3.task_name ELSE COALESCE(c3.mapped_task_name, {placeholder}) END"
    paused = f"{active} AND {no_task}" if pause else "1 = 0"
    new_status = f"CASE WHEN {paused} THEN 'paused' ELSE c3.status END"
    paused_text = "no task for handler_path; paused by on_unmappable=pause: set task_name, then activate"
    invalid = (
        f"CASE WHEN {paused} THEN {lit(INVALID_PREFIX + paused_text)}"
        f" WHEN {no_task} THEN {lit(INVALID_PREFIX + 'no task for handler_path: set task_name before activating')}"
        f" WHEN c3.kw_kind IN ('unconvertible', 'python') THEN "
        f"{lit(INVALID_PREFIX + 'handler_kwargs is not a JSON object (kept as is): ')} || "
        f"COALESCE(c3.kw_problem, {lit(NOT_CONVERTED)}) || '; rewrite it as JSON' END"
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
         CASE WHEN s.task_name IS NOT NULL AND {trim_ws("s.task_name", dialect)} <> '' THEN 1 ELSE 0 END AS has_task,
         k.kw_kind, k.kw_reserved, k.kw_new, k.kw_problem
  FROM scheduled_tasks s JOIN {KWARGS_ROWS} k ON k.id = s.id
),
c1 AS MATERIALIZED (
  SELECT c0.*, {raw_module} AS raw_module FROM c0
),
c2 AS MATERIALIZED (
  SELECT c1.*, {module_expr} AS module FROM c1
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
       c3.kw_kind, c3.kw_problem,
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
