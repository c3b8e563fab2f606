"""Errors of the worker side: what a job run can fail with besides the job's own exceptions."""

from __future__ import annotations

from dataforge.errors import DataForgeError

__all__ = ["JobArgumentError", "JobCancelledError"]


class JobArgumentError(DataForgeError, TypeError):
    """A job needs a parameter the schedule does not provide.

    It is a ``TypeError`` too (what calling the job would have raised) but names the job, the
    missing parameters and the keys that were available, so the fix (add the key to the
    schedule's ``handler_kwargs`` or give the parameter a default) is obvious.
    """

    def __init__(self, job: str, missing: list[str], available: list[str]) -> None:
        self.job = job
        self.missing = missing
        self.available = available
        super().__init__(
            f"job {job} needs parameter(s) {', '.join(missing)} that the call does not provide "
            f"(given: {', '.join(available) or 'nothing'}); add them to the schedule's handler_kwargs "
            "or give them a default"
        )


class JobCancelledError(DataForgeError):
    """The job's coroutine was cancelled by something other than the runtime.

    ``asyncio.CancelledError`` is a ``BaseException``: let through, it would take the worker
    child down instead of failing the one task. It is reported as this error instead.
    """
