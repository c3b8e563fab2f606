"""The schedule form of the pages: HTML fields to the service's edit, and a row back to fields.

Pure. A form posts text; this module turns it into the column values of the JSON API (the
same :func:`~dataforge.scheduler.service.edit_from_columns`, so the rules are the service's)
and keeps only what a person can get wrong before the service sees it: a number field that
is not a whole number. On an edit, fields left as they were rendered are not sent, so saving
a form never rewrites a value nobody touched (a ``once`` time now in the past, kwargs text).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from dataforge.errors import ScheduleError
from dataforge.protocol import TaskType
from dataforge.scheduler.service import ScheduleEdit, edit_from_columns

__all__ = ["FIELDS", "FormRefused", "edit_from_form", "form_values"]

#: Every field of the schedule form, named as the column it sets (``task_type`` picks which
#: of the three timing fields counts).
FIELDS: Final = (
    "name", "task_name", "task_type", "interval_seconds", "cron_expression", "run_at", "timezone",
    "handler_kwargs", "description", "timeout_seconds", "max_retries", "missed_run_policy",
)  # fmt: skip
_NUMBERS: Final = ("interval_seconds", "timeout_seconds", "max_retries")
_TIMING: Final = {TaskType.INTERVAL: "interval_seconds", TaskType.CRON: "cron_expression", TaskType.ONCE: "run_at"}


class FormRefused(ScheduleError):
    """A form field the service never saw (a number that is not one)."""


def form_values(row: Mapping[str, Any] | None) -> dict[str, str]:
    """The text each field shows for ``row`` (``None``: an empty add form)."""
    if row is None:
        return {"task_type": TaskType.INTERVAL, "timezone": "UTC", "handler_kwargs": "{}", "max_retries": "0",
                "missed_run_policy": "default"}
    out = {name: "" if row.get(name) is None else str(row[name]) for name in FIELDS}
    run_at = row.get("run_at")
    if run_at:
        # Stored as naive UTC: say so, or the service would read it in the row's time zone.
        text = run_at.isoformat() if isinstance(run_at, datetime) else str(run_at)
        out["run_at"] = f"{text}+00:00"
    out["missed_run_policy"] = row.get("missed_run_policy") or "default"
    try:
        out["handler_kwargs"] = json.dumps(json.loads(row.get("handler_kwargs") or "{}"), sort_keys=True)
    except json.JSONDecodeError:
        out["handler_kwargs"] = str(row.get("handler_kwargs"))
    return out


def _number(name: str, text: str) -> int | None:
    stripped = text.strip()
    if not stripped:
        return None
    try:
        return int(stripped)
    except ValueError:
        raise FormRefused(name, text, "must be a whole number") from None


def edit_from_form(form: Mapping[str, str], current: Mapping[str, Any] | None = None) -> ScheduleEdit:
    """The edit a submitted form asks for. ``current``: the row the form was rendered from
    (an edit); fields whose text did not change are left out."""
    shown = form_values(current) if current is not None else {}
    fields = {name: form.get(name, "") for name in FIELDS}
    if current is not None:
        kind = fields["task_type"].strip()
        timing = _TIMING.get(TaskType(kind)) if kind in tuple(TaskType) else None
        unchanged = {name for name in FIELDS if fields[name].strip() == shown.get(name, "").strip()}
        # The timing is one unit: the type and its field are sent together or not at all.
        if timing is not None and kind == shown.get("task_type") and timing in unchanged:
            unchanged |= {"task_type", *_TIMING.values()}
        else:
            unchanged -= {"task_type", *_TIMING.values()}
        fields = {name: text for name, text in fields.items() if name not in unchanged}
    columns: dict[str, Any] = {}
    kind = fields.get("task_type", "").strip()
    if kind:
        columns["task_type"] = kind
        timing = _TIMING.get(TaskType(kind)) if kind in tuple(TaskType) else None
        if timing is not None:
            value = fields.get(timing, "").strip()
            if value:
                columns[timing] = _number(timing, value) if timing in _NUMBERS else value
    for name in ("name", "task_name", "timezone"):
        if fields.get(name, "").strip():
            columns[name] = fields[name].strip()
    if "description" in fields:
        columns["description"] = fields["description"].strip() or None
    if "timeout_seconds" in fields:
        columns["timeout_seconds"] = _number("timeout_seconds", fields["timeout_seconds"])
    if fields.get("max_retries", "").strip():
        columns["max_retries"] = _number("max_retries", fields["max_retries"])
    if fields.get("missed_run_policy", "").strip():
        policy = fields["missed_run_policy"].strip()
        columns["missed_run_policy"] = None if policy == "default" else policy
    edit = edit_from_columns(columns)
    kwargs_text = fields.get("handler_kwargs", "").strip()
    if kwargs_text:
        # The text goes to the service as typed: its JSON rule, its message.
        edit = replace(edit, handler_kwargs=kwargs_text)
    return edit
