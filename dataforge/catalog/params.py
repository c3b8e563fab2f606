"""What a task declares it takes, and the one rule that checks a schedule's kwargs against it.

``REGISTERED_TASKS`` entries carry ``params`` in the design's format: a list of names, or of
dicts ``{"name", "required", "default", "kind"}``. Three shapes say three different things:

* ``[]`` (or no ``params``) declares nothing, so any key passes: the design's own example lists
  ``"params": []`` for a task written as ``def sync_accounts(self, **kwargs)``;
* a list of parameters declares exactly those; an item of kind ``"var_keyword"`` (or a name
  starting with ``**``), e.g. ``{"name": "kwargs", "kind": "var_keyword"}``, says the task also
  takes keys it does not name;
* the single item :func:`no_params_item` (``{"name": "(none)", "kind": "none"}``) says the task
  takes no parameter at all, so every key is refused. ``[]`` cannot say that, since it already
  means "undeclared".

``dataforge convert`` writes the last two from each job's signature (:func:`var_keyword_item`,
:func:`no_params_item`), so a converted job's entry is exact.

Pure: no I/O, no Celery. The schedule writers (CLI, HTTP API) and the codemod's registry
entries all read a task's params through :meth:`TaskParams.from_registry` and check kwargs
with :func:`check_kwargs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dataforge.errors import ScheduleError
from dataforge.protocol import INTERNAL_PREFIX, SCHEDULE_ID_KWARG

__all__ = [
    "NO_PARAMS_KIND",
    "VAR_KEYWORD_KIND",
    "ParamSpec",
    "TaskParams",
    "check_kwargs",
    "no_params_item",
    "var_keyword_item",
]

#: ``kind`` of the item that records ``**kwargs``: the task also takes keys it does not name.
VAR_KEYWORD_KIND = "var_keyword"
#: ``kind`` of the one item that says the task takes no parameter at all.
NO_PARAMS_KIND = "none"
#: Kinds of parameters that no keyword can fill (they are not schedule keys).
_NOT_KEYWORDS = frozenset({"var_positional", "positional_only"})


def var_keyword_item(name: str = "kwargs") -> dict[str, Any]:
    """The params item for ``**name``."""
    return {"name": name, "kind": VAR_KEYWORD_KIND}


def no_params_item() -> dict[str, Any]:
    """The params item (alone in its list) of a task that takes no parameter at all."""
    return {"name": "(none)", "kind": NO_PARAMS_KIND}


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
        """Normalise the design's ``params`` (see the module docstring for the three shapes).

        An item that cannot be read (not a name, not a dict with a string ``name`` or a
        ``kind``) makes the whole list undeclared: it is better to check nothing than to
        refuse keys the task takes.
        """
        if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
            return cls()
        specs: list[ParamSpec] = []
        open_ended = False
        for item in raw:
            if isinstance(item, str):
                name, required, kind = item, False, ""
            elif isinstance(item, Mapping) and isinstance(item.get("name", ""), str):
                name = item.get("name", "")
                required = bool(item.get("required", False))
                kind = str(item.get("kind", "")).lower()
            else:
                return cls()
            if kind == NO_PARAMS_KIND:
                continue
            if not name and not kind:
                return cls()
            if name.startswith("**") or kind in {VAR_KEYWORD_KIND, "**"}:
                open_ended = True
                continue
            if name.startswith("*") or kind in _NOT_KEYWORDS:
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
