"""What a task declares it takes, and the one rule that checks a schedule's kwargs against it.

``REGISTERED_TASKS`` entries carry ``params`` in the design's format: a list of names, or of
dicts ``{"name", "required", "default", "kind"}``. A ``kind`` of ``"var_keyword"`` (or a name
starting with ``**``) says the task also takes keys it does not name. An empty or missing list
declares nothing, so any key passes: the design's own example lists ``"params": []`` for a
task written as ``def sync_accounts(self, **kwargs)``.

Pure: no I/O, no Celery. The schedule writers (CLI, HTTP API), beat and the codemod's registry
entries all read a task's params through :meth:`TaskParams.from_registry` and check kwargs
with :func:`check_kwargs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dataforge.errors import ScheduleError
from dataforge.protocol import INTERNAL_PREFIX, SCHEDULE_ID_KWARG

__all__ = ["ParamSpec", "TaskParams", "check_kwargs"]


@dataclass(frozen=True)
class ParamSpec:
    """One declared task parameter (from REGISTERED_TASKS ``params``)."""

    name: str
    required: bool = False


@dataclass(frozen=True)
class TaskParams:
    """What a task declares it takes. ``declared=False``: nothing is known, any keys pass."""

    params: tuple[ParamSpec, ...] = ()
    declared: bool = False
    #: The task also takes arbitrary keys (a ``**kwargs`` entry in its params).
    open_ended: bool = False

    @classmethod
    def from_registry(cls, raw: object) -> TaskParams:
        """Normalise the design's ``params``: a list of names or of dicts
        (``{"name", "required", "default", "kind"...}``). An empty or missing list declares
        nothing: the design's own example has ``"params": []`` on a ``**kwargs`` task."""
        if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
            return cls()
        specs: list[ParamSpec] = []
        open_ended = False
        for item in raw:
            if isinstance(item, str):
                name, required, kind = item, False, ""
            elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
                name = item["name"]
                required = bool(item.get("required", False))
                kind = str(item.get("kind", "")).lower()
            else:
                # An entry we cannot read: do not pretend to know the task's params.
                return cls()
            if name.startswith("**") or kind in {"var_keyword", "**"}:
                open_ended = True
                continue
            if name.startswith("*") or kind in {"var_positional", "positional_only"}:
                continue
            specs.append(ParamSpec(name=name, required=required))
        return cls(params=tuple(specs), declared=True, open_ended=open_ended)


def check_kwargs(task_name: str, kwargs: Mapping[str, Any], params: TaskParams) -> None:
    """Refuse kwargs the task cannot take: reserved keys always; unknown keys and missing
    required ones when the task declares its params."""
    reserved = sorted(k for k in kwargs if k == SCHEDULE_ID_KWARG or k.startswith(INTERNAL_PREFIX))
    if reserved:
        raise ScheduleError(
            "handler_kwargs", dict(kwargs),
            f"key(s) {', '.join(reserved)} are reserved: beat adds {SCHEDULE_ID_KWARG} to every run and "
            f"keys starting with {INTERNAL_PREFIX!r} are runtime plumbing; remove them",
        )
    if not params.declared:
        return
    names = [p.name for p in params.params]
    if not params.open_ended:
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ScheduleError(
                "handler_kwargs", dict(kwargs),
                f"task {task_name!r} takes no parameter(s) {', '.join(unknown)}; "
                f"it declares: {', '.join(names) or 'none'}",
            )
    missing = [p.name for p in params.params if p.required and p.name not in kwargs]
    if missing:
        raise ScheduleError(
            "handler_kwargs", dict(kwargs),
            f"task {task_name!r} requires parameter(s) {', '.join(missing)}; add them to --kwargs",
        )
