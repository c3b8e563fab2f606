"""Strict JSON: the one validity rule for every JSON value DataForge stores or sends.

Python's :mod:`json` accepts and writes more than JSON: ``NaN`` and ``Infinity`` (which strict
parsers, Node and PostgreSQL's ``::json`` reject), duplicate keys (last one silently wins),
lone UTF-16 surrogates (which no UTF-8 encoder, SQLite's and psycopg's included, can write),
unbounded nesting (``RecursionError``) and integers of any size. Schedule kwargs are typed by
people, read by beat, sent to workers and printed by ``--json``; a value one of them accepts
and another rejects would be a row that saves but never runs. So every writer (the CLI, the
HTTP API, the codemod's registry entries) and beat check with the same rule, here:

* the text is at most :data:`MAX_BYTES` of UTF-8, with no duplicate keys;
* numbers are finite; integers fit in 64 bits (a PostgreSQL ``bigint``, a Java ``long``);
* strings and keys are valid Unicode (no lone surrogates);
* containers nest at most :data:`MAX_DEPTH` deep;
* only JSON types: dict with string keys, list, str, int, float, bool, None.

Pure: no I/O. :class:`~dataforge.errors.JsonValueError` names the offending part (``$.a[2]``).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from dataforge.errors import JsonValueError

__all__ = ["INT_MAX", "INT_MIN", "MAX_BYTES", "MAX_DEPTH", "check_value", "dumps", "loads"]

#: Largest JSON text accepted, in UTF-8 bytes: far above any real kwargs, small enough that
#: beat, the broker and the execution log never carry megabytes per run.
MAX_BYTES: Final = 65536
#: Deepest nesting of objects and arrays (the top-level object is depth 1).
MAX_DEPTH: Final = 32
#: Integers must fit in 64 bits, signed.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key, ensure_ascii=True)}]"


def _unicode_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_value(value: object, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JsonValueError` unless ``value`` is strict JSON under the module's rule.

    Iterative, so a hostile value nested a million deep is refused, not a ``RecursionError``.
    """
    stack: list[tuple[object, str, int]] = [(value, "$", 1)]
    while stack:
        item, path, depth = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise JsonValueError(path, "integer out of range: integers must fit in 64 bits (-2^63 .. 2^63-1)")
        elif isinstance(item, float):
            if math.isnan(item):
                raise JsonValueError(path, "NaN is not a JSON number; use a finite number, or null")
            if math.isinf(item):
                raise JsonValueError(path, "number out of range (it overflows to infinity)")
        elif isinstance(item, str):
            if not _unicode_ok(item):
                raise JsonValueError(path, "string is not valid Unicode (a lone UTF-16 surrogate)")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise JsonValueError(path, f"nested deeper than {max_depth} levels")
            if isinstance(item, list):
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
                continue
            for key, child in item.items():
                if not isinstance(key, str):
                    raise JsonValueError(path, f"key {key!r} is not a string; JSON object keys are strings")
                if not _unicode_ok(key):
                    raise JsonValueError(path, "a key is not valid Unicode (a lone UTF-16 surrogate)")
                stack.append((child, _key_path(path, key), depth + 1))
        else:
            raise JsonValueError(path, f"a {type(item).__name__} is not a JSON value")


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise JsonValueError("$", f"{name} is not a JSON number; use a finite number, or null")


def loads(text: str) -> Any:
    """Parse ``text`` under the strict rule. :class:`JsonValueError` says what is wrong."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise JsonValueError("$", f"{size} bytes; at most {MAX_BYTES} bytes of JSON are accepted")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except _Duplicate as exc:
        raise JsonValueError("$", f"duplicate key {json.dumps(exc.args[0])}; give each key once") from None
    except RecursionError:
        raise JsonValueError("$", f"nested deeper than {MAX_DEPTH} levels") from None
    except JsonValueError:
        raise
    except ValueError as exc:
        # JSONDecodeError ("Expecting value: line 1 column 1 (char 0)"), or an integer literal
        # longer than Python's int/str conversion limit.
        raise JsonValueError("$", f"not valid JSON ({exc.args[0]})") from None
    check_value(value)
    return value


def dumps(value: object) -> str:
    """The stored form: keys sorted, ASCII only (any database encoding can hold it). Checks first."""
    check_value(value)
    return json.dumps(value, sort_keys=True, allow_nan=False)
