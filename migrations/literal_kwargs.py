"""A legacy ``handler_kwargs`` text as the equal JSON object, or the exact reason it has none.

Legacy code wrote Python reprs where JSON was meant (``{'days': 7}``); what such a text means
is what Python reads from it, :func:`ast.literal_eval`. The data step converts in SQL only
what SQL can prove exact (docs/migrations.md); every other row comes here. The rule:

* a text that is a JSON object means what JSON says (``"\\/"`` is ``/`` in JSON and a
  backslash in Python, so JSON is read first); a JSON text that is not an object has no
  object form;
* otherwise ``ast.literal_eval``: exactly the values it reads as a dict with string keys and
  JSON values convert, tuples becoming lists (JSON has one sequence type); a set, bytes, a
  complex number, ``Ellipsis``, ``inf``, a non-string key, a text that is not a literal, a
  literal that is not a dict have no JSON form and the result names the value and where it is;
* a string holding U+0000 (PostgreSQL's ``jsonb`` cannot hold it, and the migration reads its
  own output as ``jsonb``) or a lone surrogate (no UTF-8 form) is refused on both databases,
  so SQLite and PostgreSQL convert the same rows.

The reserved keys old messages leaked (``_lock_key``...) are dropped from the top level, as
the SQL does. Output is ``json.dumps`` of the value, keys in their order, non-ASCII kept:
``json.loads(output) == value`` holds exactly (floats are written by ``repr``, which reads
back to the same float). Pure: no I/O, never raises for any input text.
"""

from __future__ import annotations

import ast
import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["KwargsConversion", "WHITESPACE", "convert_kwargs"]

#: What the data step strips around a value: ASCII whitespace as ``str.strip()`` knows it
#: (SQL trims the same set, :func:`migrations.sql.trim_ws`).
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_CLIP = 40

Kind = Literal["json", "repr", "unconvertible"]


@dataclass(frozen=True)
class KwargsConversion:
    """What one text becomes.

    ``kind``: ``json`` (the text was a JSON object), ``repr`` (a Python literal dict) or
    ``unconvertible``; ``json``: the JSON object text (``None`` when unconvertible);
    ``reserved``: reserved keys were dropped; ``problem``: why there is no JSON form.
    """

    kind: Kind
    json: str | None = None
    reserved: bool = False
    problem: str | None = None


class _NoJsonForm(ValueError):
    pass


def convert_kwargs(text: str, drop_keys: Iterable[str] = ()) -> KwargsConversion:
    """``text`` as a JSON object without the top-level ``drop_keys``, or why it has none."""
    source = text.strip(WHITESPACE)
    kind: Kind
    try:
        value: Any = json.loads(source, parse_constant=_no_constant)
        kind = "json"
    except (ValueError, RecursionError):
        try:
            value = _literal(source)
        except _NoJsonForm as exc:
            return KwargsConversion("unconvertible", problem=str(exc))
        kind = "repr"
    if not isinstance(value, dict):
        origin = "JSON" if kind == "json" else "a Python literal"
        return KwargsConversion("unconvertible", problem=f"{_a(value)}, not a dict (read as {origin})")
    try:
        plain = _plain(value, ())
        dropped = [key for key in drop_keys if key in plain]
        for key in dropped:
            del plain[key]
        out = json.dumps(plain, ensure_ascii=False, allow_nan=False)
    except _NoJsonForm as exc:
        return KwargsConversion("unconvertible", problem=str(exc))
    except (ValueError, RecursionError) as exc:  # nesting too deep to write, integer too long
        return KwargsConversion("unconvertible", problem=f"cannot be written as JSON: {type(exc).__name__}")
    return KwargsConversion(kind, json=out, reserved=bool(dropped))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _literal(source: str) -> Any:
    """``ast.literal_eval`` with a message that names the offending part (never an address)."""
    try:
        with warnings.catch_warnings():
            # '\d' reads as a backslash and a d (a DeprecationWarning, SyntaxWarning from 3.12):
            # what Python reads, whatever the process's warning filters say.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        where = f" (line {exc.lineno}, column {exc.offset})" if exc.lineno is not None else ""
        raise _NoJsonForm(f"not a Python literal: {exc.msg}{where}") from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise _NoJsonForm(f"not a Python literal: {type(exc).__name__}") from None
    try:
        return ast.literal_eval(tree)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _NoJsonForm(f"not a Python literal: {_offender(tree)}") from None


def _offender(tree: ast.AST) -> str:
    """The outermost part of ``tree`` that is not a literal (a name, a call, ``1 + 1``...)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression | ast.Constant | ast.Dict | ast.List | ast.Tuple | ast.Set):
            continue
        if isinstance(node, ast.expr_context | ast.operator | ast.unaryop):
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
            continue  # -1, +1.5
        if isinstance(node, ast.BinOp) and isinstance(node.right, ast.Constant):
            if isinstance(node.right.value, complex):
                continue  # 1+2j
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "set":
            if not node.args and not node.keywords:
                continue  # set(), the empty set
        text = _clip(ast.unparse(node)) if isinstance(node, ast.expr) else type(node).__name__
        at = f" at line {node.lineno}, column {node.col_offset + 1}" if isinstance(node, ast.expr) else ""
        return f"{type(node).__name__.lower()} {text!r}{at}"
    return "an expression literal_eval does not accept"


def _plain(value: Any, path: tuple[object, ...]) -> Any:
    """``value`` with tuples as lists, or _NoJsonForm naming the first value without a JSON form."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NoJsonForm(f"{value!r} {_where(path)} has no JSON form")
        return value
    if isinstance(value, str):
        _check_string(value, f"a string {_where(path)}")
        return value
    if isinstance(value, list | tuple):
        return [_plain(item, (*path, index)) for index, item in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NoJsonForm(
                    f"the key {_clip(repr(key))} {_where(path)} is {_a(key)}, not a string: "
                    "JSON object keys are strings"
                )
            _check_string(key, f"the key {_clip(repr(key))} {_where(path)}")
            out[key] = _plain(item, (*path, key))
        return out
    raise _NoJsonForm(f"{_a(value)} {_where(path)} has no JSON form")


def _check_string(value: str, what: str) -> None:
    if "\x00" in value:
        raise _NoJsonForm(f"{what} holds U+0000, which PostgreSQL cannot store in JSON")
    for char in value:
        if "\ud800" <= char <= "\udfff":
            raise _NoJsonForm(f"{what} holds the lone surrogate U+{ord(char):04X}, which has no UTF-8 form")


def _a(value: object) -> str:
    names = {
        dict: "a dict", list: "a list", tuple: "a tuple", set: "a set", frozenset: "a frozenset",
        bytes: "bytes", str: "a string", int: "an integer", float: "a float", bool: "a boolean",
        complex: "a complex number", type(None): "None", type(Ellipsis): "Ellipsis",
    }  # fmt: skip
    return names.get(type(value), f"a {type(value).__name__}")


def _where(path: tuple[object, ...]) -> str:
    if not path:
        return "at the top level"
    return "at " + "".join(f"[{_clip(repr(part))}]" for part in path)


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[: _CLIP - 3] + "..."
