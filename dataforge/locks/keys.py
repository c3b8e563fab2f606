"""Lock keys and owner tokens: which runs exclude each other, and who holds a lock.

Pure: no I/O. Every backend stores the tokens :func:`make_token` makes, so the worker's parent
process can recognise a dead child's lock by its task id (:func:`token_owner`) without knowing
the token's random part.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from dataforge.protocol import INTERNAL_PREFIX, SCHEDULE_ID_KWARG

__all__ = ["KEY_PREFIX", "TOKEN_RANDOM", "canonical_kwargs", "lock_key", "make_token", "owner_part", "token_owner"]

KEY_PREFIX = "dataforge:lock:"
#: ``dataforge_locks.key`` is VARCHAR(255); longer keys are hashed to stay within it.
_MAX_KEY = 255
#: ``dataforge_locks.owner`` is VARCHAR(64): 16 hex + "@" + at most 47 characters of owner.
TOKEN_RANDOM = 16
_MAX_OWNER = 47


def canonical_kwargs(kwargs: Mapping[str, Any]) -> str:
    """Canonical JSON of the job parameters (internal keys dropped), the input of the hash."""
    public = {k: v for k, v in kwargs.items() if not str(k).startswith(INTERNAL_PREFIX)}
    return json.dumps(public, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def lock_key(task_name: str, kwargs: Mapping[str, Any]) -> str:
    """The run lock key of ``task_name`` called with ``kwargs``.

    ``dataforge:lock:<task_name>:<scheduled_task_id>`` for a scheduled run (two runs of the
    same schedule exclude each other whatever their kwargs), else
    ``dataforge:lock:<task_name>:kwargs-<sha256 of canonical JSON>`` (two manual calls with the
    same parameters exclude each other). ``task_name`` is whatever the task's ``lock_name``
    says (see :class:`dataforge.worker.task.DataForgeTask`), so the legacy compat shim can take
    the same key as the new task for the same schedule.
    """
    schedule_id = kwargs.get(SCHEDULE_ID_KWARG)
    if schedule_id is not None and str(schedule_id) != "":
        key = f"{KEY_PREFIX}{task_name}:{schedule_id}"
    else:
        digest = hashlib.sha256(canonical_kwargs(kwargs).encode("utf-8")).hexdigest()
        key = f"{KEY_PREFIX}{task_name}:kwargs-{digest}"
    if len(key) > _MAX_KEY:
        key = f"{KEY_PREFIX}sha256-{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return key


def owner_part(owner: str | None) -> str:
    if not owner:
        return ""
    if len(owner) <= _MAX_OWNER:
        return owner
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:_MAX_OWNER]


def make_token(owner: str | None = None) -> str:
    """A fresh owner token: 16 random hex characters, ``@``, then the owner (a task id).

    The random part makes every acquisition distinct (a redelivered message never shares a
    token with the run it replaces); the owner part lets :meth:`LockBackend.release_owned_by`
    recognise the holder without knowing the random part.
    """
    return f"{secrets.token_hex(TOKEN_RANDOM // 2)}@{owner_part(owner)}"


def token_owner(token: str) -> str:
    """The owner part of a token made by :func:`make_token` ("" when it had none)."""
    return token[TOKEN_RANDOM + 1 :]
