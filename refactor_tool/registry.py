"""``REGISTERED_TASKS`` entries (the catalog's format) built from a module's facts, and their source text.

Pure functions: facts in, plain dicts and text out. The catalog's format is::

    "dataforge.sync_accounts": {"name": ..., "description": ..., "category": ..., "params": [...]}

A job's entry comes from its ``NAME`` / ``DESCRIPTION`` / ``CATEGORY`` / ``PARAMS`` constants when
they are literals, else from its docstrings and ``run``'s signature. Every fallback is reported.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Mapping
from typing import Any

from dataforge.catalog.params import TaskParams, no_params_item, var_keyword_item
from dataforge.errors import JsonValueError
from dataforge.strict_json import check_value
from refactor_tool.analysis import NOT_LITERAL, ModuleFacts, Param, TaskDef

__all__ = [
    "DEFAULT_CATEGORY",
    "INTERNAL_PARAMS",
    "describe",
    "job_entry",
    "render_entry",
    "render_literal",
    "signature_params",
    "task_entry",
]

#: Category of a job that declares none: it came from the legacy scripts folder.
DEFAULT_CATEGORY = "legacy"
#: Parameters the runtime (or the legacy executor) supplies; they are not user parameters.
INTERNAL_PARAMS = frozenset({"scheduled_task_id"})


def describe(docstring: str | None) -> str:
    """The first paragraph of a docstring, on one line (what a task list shows)."""
    if not docstring:
        return ""
    text = inspect.cleandoc(docstring)
    paragraph = text.split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines() if line.strip())


def _param_dict(param: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.name, "required": param.required}
    if param.default is not None:
        try:
            value = ast.literal_eval(param.default)
            # A default is shown as data (`dataforge tasks --json`) only if it is strict JSON,
            # the rule schedule kwargs follow; `1e999`, `()` or `{1: 2}` stay source text.
            check_value(value)
            out["default"] = value
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, JsonValueError):
            out["default_expr"] = param.default
    if param.annotation is not None:
        out["annotation"] = param.annotation
    return out


def signature_params(params: tuple[Param, ...] | None) -> list[dict[str, Any]]:
    """User-facing parameters: named ones a keyword call can fill, minus internal keys, then
    ``**kwargs`` as a ``var_keyword`` item; a signature that takes no key at all gets the
    "takes nothing" item (``[]`` would mean "undeclared", see :mod:`dataforge.catalog.params`).
    An unknown signature (``None``) declares nothing: ``[]``."""
    if params is None:
        return []
    out = [
        _param_dict(p)
        for p in params
        if p.kind in ("positional", "keyword_only") and p.name not in INTERNAL_PARAMS and not p.name.startswith("_")
    ]
    var_kw = next((p for p in params if p.kind == "var_keyword"), None)
    if var_kw is not None:
        out.append(var_keyword_item(var_kw.name))
    return out or [no_params_item()]


def _literal(facts: ModuleFacts, name: str, notes: list[str]) -> object | None:
    found = facts.metadata.get(name)
    if found is None:
        return None
    line, value = found
    if value is NOT_LITERAL:
        notes.append(f"{name} (line {line}) is not a literal; REGISTERED_TASKS uses the fallback")
        return None
    return value


def _params_from_constant(value: object, facts: ModuleFacts, notes: list[str]) -> list[dict[str, Any]] | None:
    if not isinstance(value, list | tuple):
        notes.append("PARAMS is not a list; REGISTERED_TASKS params come from run's signature")
        return None
    signature = facts.run.params if facts.run else None
    by_name = {p["name"]: p for p in signature_params(signature)}
    out: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, str):
            out.append(by_name.get(item, {"name": item}))
        elif isinstance(item, dict):
            out.append(dict(item))
        else:
            notes.append(f"PARAMS item {item!r} is neither a name nor a dict; REGISTERED_TASKS uses run's signature")
            return None
    var_kw = next((p for p in signature or () if p.kind == "var_keyword"), None)
    if out and var_kw is not None and not TaskParams.from_registry(out).open_ended:
        # run takes any key (legacy passed them all): say so, or schedules would refuse them.
        out.append(var_keyword_item(var_kw.name))
    return out


def job_entry(facts: ModuleFacts, module: str, notes: list[str]) -> dict[str, Any]:
    """The entry of the job in ``scripts/<module>.py``; fallbacks are appended to ``notes``."""
    name = _literal(facts, "NAME", notes)
    description = _literal(facts, "DESCRIPTION", notes)
    category = _literal(facts, "CATEGORY", notes)
    params_value = _literal(facts, "PARAMS", notes)
    params = _params_from_constant(params_value, facts, notes) if params_value is not None else None
    if params is None:
        params = signature_params(facts.run.params if facts.run else None)
    if description is None:
        description = describe(facts.docstring) or describe(facts.run.docstring if facts.run else None)
    for key in ("SCHEDULE", "INTERVAL"):
        if key in facts.metadata:
            notes.append(
                f"{key} (line {facts.metadata[key][0]}) is not carried over: schedules live in the "
                "scheduled_tasks table (`dataforge schedules`)"
            )
    return {
        "name": str(name) if name is not None else module,
        "description": str(description),
        "category": str(category) if category is not None else DEFAULT_CATEGORY,
        "params": params,
    }


def task_entry(task: TaskDef, facts: ModuleFacts, default_name: str) -> dict[str, Any]:
    """The entry of a task already written the new way (or converted on an earlier run)."""
    notes: list[str] = []
    if task.delegates_to is not None and facts.run is not None and task.delegates_to == "run":
        return job_entry(facts, default_name, notes)
    params = tuple(task.params[1:] if task.bind else task.params)
    category = _literal(facts, "CATEGORY", notes)
    return {
        "name": default_name,
        "description": describe(task.docstring) or describe(facts.docstring),
        "category": str(category) if category is not None else DEFAULT_CATEGORY,
        "params": signature_params(params),
    }


def _scalar(value: object) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid Python literal and keeps non-ASCII text readable.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    return repr(value)


def render_literal(value: object, indent: str = "    ", level: int = 0, column: int = 0, width: int = 100) -> str:
    """Python source for ``value``: inline when it fits in ``width``, else one item per line.

    The first line is not indented (the caller places it at ``column``); later lines are
    indented ``level`` + 1 units. Deterministic, so re-runs produce identical text.
    """
    if isinstance(value, Mapping):
        items = [f"{_scalar(k)}: {render_literal(v, indent, level + 1, width=width)}" for k, v in value.items()]
        open_, close = "{", "}"
    elif isinstance(value, list | tuple):
        items = [render_literal(v, indent, level + 1, width=width) for v in value]
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
    else:
        return _scalar(value)
    if not items:
        return open_ + close
    single_tuple = isinstance(value, tuple) and len(items) == 1
    inline = open_ + ", ".join(items) + ("," if single_tuple else "") + close
    if "\n" not in inline and column + len(inline) <= width:
        return inline
    pad = indent * (level + 1)
    lines = []
    for v in value.items() if isinstance(value, Mapping) else value:
        if isinstance(value, Mapping):
            k, item = v
            head = f"{pad}{_scalar(k)}: "
        else:
            item, head = v, pad
        lines.append(head + render_literal(item, indent, level + 1, len(head), width) + ",")
    return open_ + "\n" + "\n".join(lines) + "\n" + indent * level + close


def render_entry(task_name: str, entry: Mapping[str, Any], indent: str) -> str:
    """One ``"task": {...},`` element of ``REGISTERED_TASKS`` at one indent level, always multi-line."""
    pad = indent * 2
    lines = [f"{indent}{_scalar(task_name)}: {{"]
    for key, value in entry.items():
        head = f"{pad}{_scalar(key)}: "
        lines.append(head + render_literal(value, indent, 2, len(head)) + ",")
    lines.append(f"{indent}}},")
    return "\n".join(lines)
