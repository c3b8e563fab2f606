"""Errors of the worker side: what a job run can fail with besides the job's own exceptions."""

from __future__ import annotations

from dataforge.errors import DataForgeError

__all__ = ["JobArgumentError", "JobCancelledError"]


class JobArgumentError(DataForgeError, TypeError):
    """A job needs a parameter the schedule does not provide.

    It is a ``TypeError`` too (what calling the job would have raised) but names the job, the
    missing parameters and the keys that were available, so the fix (add the key to the
    schedule's ``handler_kwargs`` or give the parameter a default) is obvious.

    Its ``args`` are its constructor's arguments, so it survives pickling and Celery's JSON
    result encoding as itself: Celery rebuilds an exception as ``cls(*args)`` and, when that
    fails, falls back to the nearest base class that can be rebuilt (``DataForgeError``),
    which is what the result backend and the execution record used to show.
    """

    def __init__(self, job: str, missing: list[str], available: list[str]) -> None:
        self.job = job
        self.missing = list(missing)
        self.available = list(available)
        super().__init__(job, self.missing, self.available)

    def __str__(self) -> str:
        return (
            f"job {self.job} needs parameter(s) {', '.join(self.missing)} that the call does not provide "
            f"(given: {', '.join(self.available) or 'nothing'}); add them to the schedule's handler_kwargs "
            "or give them a default"
        )


class JobCancelledError(DataForgeError):
    """The job's coroutine was cancelled by something other than the runtime.

    ``asyncio.CancelledError`` is a ``BaseException``: let through, it would take the worker
    child down instead of failing the one task. It is reported as this error instead.
    """
