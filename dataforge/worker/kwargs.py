"""Calling job callables with the parameters they declare (pure logic, no I/O).

The legacy executor passed every message kwarg, plus ``scheduled_task_id`` and ``_lock_key``,
to ``run(**kwargs)``. Jobs whose ``run`` named its parameters failed in production with
``TypeError: run() got an unexpected keyword argument '_lock_key'``. :func:`bind_kwargs` is the
one rule that replaces it:

* a parameter the job names (positional-or-keyword or keyword-only) gets its value;
* a job with ``**kwargs`` also gets every other *public* key, ``scheduled_task_id``
  included (the legacy executor gave it to them, and jobs read it from ``kwargs``);
* internal keys (leading ``_``, e.g. ``_lock_key``) reach a job only if it names them, or
  through ``**kwargs`` when the caller lets them pass (``passed_internal``: a converted job
  that reads the legacy lock key gets it back, see :func:`with_legacy_lock_key`);
* positional-only parameters and ``*args`` never receive keywords.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dataforge.protocol import INTERNAL_PREFIX, LEGACY_LOCK_KEY, SCHEDULE_ID_KWARG
from dataforge.worker.errors import JobArgumentError

__all__ = [
    "BoundKwargs",
    "bind_kwargs",
    "with_legacy_lock_key",
]



@dataclass(frozen=True)
class BoundKwargs:
    """The kwargs a job receives, and the keys it was not given."""

    kwargs: dict[str, Any]
    dropped: tuple[str, ...] = field(default=())

    @property
    def unaccepted(self) -> tuple[str, ...]:
        """The keys the *caller* chose that the job cannot take (a typo in ``handler_kwargs``,
        a parameter the job lost): what the run's log line reports. The runtime's own keys
        (``scheduled_task_id``, which beat adds to every scheduled message, and internal
        ``_``-prefixed keys) are left out: a job that does not want them is the normal case."""
        return tuple(k for k in self.dropped if k != SCHEDULE_ID_KWARG and not k.startswith(INTERNAL_PREFIX))


def _describe(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{name}"


@dataclass(frozen=True)
class _Shape:
    """What binding needs to know about a signature (computed once per job function)."""

    named: frozenset[str]
    takes_var_kw: bool
    required: tuple[str, ...]
    #: Required positional-only parameters: no keyword can ever satisfy them.
    unbindable: tuple[str, ...]
    introspectable: bool = True


_UNKNOWN = _Shape(frozenset(), True, (), (), introspectable=False)


@functools.lru_cache(maxsize=4096)
def _shape_cached(func: Callable[..., Any]) -> _Shape:
    return _shape(func)


def _shape(func: Callable[..., Any]) -> _Shape:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return _UNKNOWN
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    empty = inspect.Parameter.empty
    return _Shape(
        named=frozenset(n for n, p in params.items() if p.kind in kinds),
        takes_var_kw=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()),
        required=tuple(n for n, p in params.items() if p.kind in kinds and p.default is empty),
        unbindable=tuple(
            n for n, p in params.items() if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is empty
        ),
    )


def with_legacy_lock_key(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the ``_lock_key`` the legacy executor passed: ``scheduled_task:<id>``.

    The legacy call was ``run(**{"_lock_key": key, **kwargs, "scheduled_task_id": id})``, so a
    ``_lock_key`` already in the message wins, as it did there. Without a schedule id (a task
    sent by hand) there is no legacy value and nothing is added: the job sees the key missing.
    """
    schedule_id = kwargs.get(SCHEDULE_ID_KWARG)
    if schedule_id is None:
        return dict(kwargs)
    return {LEGACY_LOCK_KEY: f"scheduled_task:{schedule_id}", **kwargs}


def bind_kwargs(
    func: Callable[..., Any], kwargs: Mapping[str, Any], passed_internal: frozenset[str] = frozenset()
) -> BoundKwargs:
    """The kwargs ``func`` accepts (see the module docstring for the rule), and the keys left out.

    ``passed_internal`` names internal keys that a ``**kwargs`` job receives like public ones.
    """
    try:
        shape = _shape_cached(func)
    except TypeError:  # unhashable callable: introspect every time
        shape = _shape(func)
    if not shape.introspectable:
        # No introspectable signature (some builtins / C callables): pass the public keys.
        public = {k: v for k, v in kwargs.items() if not k.startswith(INTERNAL_PREFIX) or k in passed_internal}
        return BoundKwargs(public, tuple(k for k in kwargs if k not in public))
    bound: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in kwargs.items():
        if key in shape.named or (
            shape.takes_var_kw and (not key.startswith(INTERNAL_PREFIX) or key in passed_internal)
        ):
            bound[key] = value
        else:
            dropped.append(key)
    missing = [*shape.unbindable, *(n for n in shape.required if n not in bound)]
    if missing:
        raise JobArgumentError(_describe(func), missing, sorted(kwargs))
    return BoundKwargs(bound, tuple(dropped))
