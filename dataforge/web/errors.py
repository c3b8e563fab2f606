"""Errors of the web console, and the one mapping of every refusal to an HTTP answer.

The schedule service raises the same errors for the CLI and for HTTP; :func:`problem_for` says
which status each gets, so the JSON API and the pages answer a refusal alike: 422 names the
field at fault, 404 an unknown id, 409 a verb that does not apply to the row as it is, 503 a
store (database, broker, task packages) that cannot be reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataforge.errors import DataForgeError, ScheduleError, UnknownTaskError
from dataforge.legacy.errors import LegacySwitchError
from dataforge.scheduler.errors import ScheduleCannotRunError, ScheduleNotFoundError, ScheduleStateError

__all__ = ["CatalogUnavailableError", "HTTPProblem", "Problem", "UnsafeBindError", "WebError", "problem_for"]


class WebError(DataForgeError):
    """Root of the console's own errors."""


class UnsafeBindError(WebError):
    """``dataforge serve`` was asked to listen beyond loopback without an API token."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"refusing to listen on {host!r} without DATAFORGE_API_TOKEN: anyone who can reach it could edit "
            "and run schedules. Set DATAFORGE_API_TOKEN (e.g. `python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`) or listen on 127.0.0.1 / ::1 / localhost"
        )


class CatalogUnavailableError(WebError):
    """The task packages cannot be imported, so no write can be checked against them."""

    def __init__(self, packages: tuple[str, ...], cause: BaseException) -> None:
        self.packages = packages
        self.cause = cause
        super().__init__(f"cannot import the task packages {', '.join(packages)} (DATAFORGE_TASK_PACKAGES): "
                         f"{type(cause).__name__}: {cause}")


@dataclass(frozen=True)
class Problem:
    """What a refusal becomes on the wire: a status, a short code, the field, a sentence."""

    status: int
    error: str
    message: str
    field: str | None = None


def problem_for(exc: DataForgeError, *, stored_row: bool = False) -> Problem:
    """The HTTP answer to a refusal of the service.

    ``stored_row``: the verb takes no input (resume, run-now), so a definition that does not
    evaluate is the row's state, not a bad request: 409, naming the column to fix.
    """
    if isinstance(exc, ScheduleNotFoundError):
        return Problem(404, "not_found", str(exc))
    if isinstance(exc, ScheduleStateError):
        return Problem(409, "conflict", str(exc))
    if isinstance(exc, ScheduleCannotRunError):
        return Problem(409, "row_invalid", str(exc), exc.field)
    if isinstance(exc, ScheduleError):
        status, code = (409, "row_invalid") if stored_row else (422, "invalid")
        return Problem(status, code, f"{exc.field}: {exc.reason}", exc.field)
    if isinstance(exc, UnknownTaskError):
        status, code = (409, "row_invalid") if stored_row else (422, "invalid")
        return Problem(status, code, f"task_name: {exc}", "task_name")
    if isinstance(exc, (CatalogUnavailableError, LegacySwitchError)):
        return Problem(503, "unavailable", str(exc))
    return Problem(400, "refused", str(exc))


class HTTPProblem(WebError):
    """A refusal decided by a route (a stored row that cannot run, a broker that is down)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.message)
