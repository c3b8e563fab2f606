"""The app factory of ``dataforge serve``: one ASGI app (FastAPI) from the one Settings.

Routes: the JSON API (:mod:`dataforge.web.api`, described at ``/openapi.json``), the pages
(:mod:`dataforge.web.pages`), ``/metrics`` (:mod:`dataforge.web.metrics`) and ``/healthz``
(open, for load balancers: 200 when the database answers). Every refusal becomes one shape:
JSON :class:`~dataforge.web.schemas.ProblemOut` under ``/api`` and ``/metrics``, an HTML page
elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware

from dataforge import __version__
from dataforge.errors import DataForgeError
from dataforge.runtime import DataForgeApp
from dataforge.settings import Settings
from dataforge.web import api, pages
from dataforge.web.auth import SESSION_COOKIE, SESSION_MAX_AGE, Guard, LoginRequired, require_api
from dataforge.web.context import Console
from dataforge.web.errors import HTTPProblem, Problem, problem_for
from dataforge.web.metrics import ConsoleCollector
from dataforge.web.schemas import FieldProblem, ProblemOut

__all__ = ["HealthOut", "create_web_app"]

#: Scripts and styles come from /static only: an injected <script> would not run.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 422: "invalid", 503: "unavailable"}


class HealthOut(BaseModel):
    status: str
    database: str


def _time(value: Any) -> Markup:
    """A stored naive-UTC time as ``<time>``: UTC as text (no script), the viewer's zone with it."""
    if value is None or value == "":
        return Markup("&ndash;")
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    iso = when.isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{}">{} UTC</time>').format(iso, when.strftime("%Y-%m-%d %H:%M:%S"))


def _duration(ms: Any) -> str:
    if ms is None:
        return "–"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _first_line(value: Any) -> str:
    return str(value).strip().splitlines()[0] if value else ""


def _pretty_json(value: Any) -> Markup:
    try:
        return escape(json.dumps(json.loads(value), indent=2, sort_keys=True))
    except (TypeError, ValueError):
        return escape(str(value))


def templates() -> Jinja2Templates:
    env = Environment(loader=PackageLoader("dataforge.web", "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(time=_time, duration=_duration, first_line=_first_line, pretty_json=_pretty_json)
    return Jinja2Templates(env=env)


def _api_path(request: Request) -> bool:
    return request.url.path.startswith("/api") or request.url.path == "/metrics"


def _answer(request: Request, problem: Problem, *, problems: list[FieldProblem] | None = None,
            headers: Mapping[str, str] | None = None) -> Response:
    if _api_path(request):
        body = ProblemOut(error=problem.error, message=problem.message, field=problem.field, problems=problems or [])
        return JSONResponse(body.model_dump(), status_code=problem.status, headers=headers)
    return pages.render(request, "error.html", problem.status, title=problem.error.replace("_", " ").capitalize(),
                        message=problem.message)


def _install_handlers(web: FastAPI) -> None:
    @web.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/login?" + urlencode({"next": exc.next_path}), status_code=303)

    @web.exception_handler(HTTPProblem)
    async def http_problem(request: Request, exc: HTTPProblem) -> Response:
        return _answer(request, exc.problem)

    @web.exception_handler(DataForgeError)
    async def refused(request: Request, exc: DataForgeError) -> Response:
        return _answer(request, problem_for(exc))

    @web.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = _CODES.get(exc.status_code, "error")
        return _answer(request, Problem(exc.status_code, code, str(exc.detail)), headers=exc.headers)

    @web.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        found = []
        for error in exc.errors():
            location = [str(part) for part in error.get("loc", ())]
            found.append(FieldProblem(field=".".join(location[1:]) or None, message=str(error.get("msg"))))
        if any(error.get("type") == "json_invalid" for error in exc.errors()):
            return _answer(request, Problem(400, "bad_request", "the body is not valid JSON"), problems=found)
        first = found[0] if found else FieldProblem(field=None, message="invalid request")
        message = f"{first.field}: {first.message}" if first.field else first.message
        return _answer(request, Problem(422, "invalid", message, first.field), problems=found)

    @web.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> Response:
        return _answer(request, Problem(409, "conflict", "the database refused the write (a concurrent change, "
                                        "e.g. the same name taken meanwhile); nothing was written"))

    @web.exception_handler(DataError)
    async def data(request: Request, exc: DataError) -> Response:
        return _answer(request, Problem(422, "invalid", "the database refused a value: "
                                        f"{str(exc.orig).splitlines()[0] if exc.orig else exc}"))

    async def unreachable(request: Request, exc: Exception) -> Response:
        return _answer(request, Problem(503, "unavailable", f"the database cannot be reached: {type(exc).__name__}"))

    web.add_exception_handler(OperationalError, unreachable)
    web.add_exception_handler(InterfaceError, unreachable)


def create_web_app(settings: Settings, *, app: DataForgeApp | None = None) -> FastAPI:
    """The console on ``settings``; ``app``: the Celery app to publish run-now messages with
    (built from ``settings`` when not given). Closing the ASGI app's lifespan closes both."""
    if app is None:
        from dataforge.celery_app import create_app

        app = create_app(settings)
    console = Console(settings, app)
    guard = Guard.from_settings(settings)
    collector = ConsoleCollector(console.db, settings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            collector.close()
            console.close()

    web = FastAPI(
        title="DataForge console",
        version=__version__,
        description="Schedules, executions, tasks and the legacy switch of a DataForge deployment. "
        "Send `Authorization: Bearer <DATAFORGE_API_TOKEN>` when the console has a token.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    web.state.console = console
    web.state.guard = guard
    web.state.templates = templates()
    web.state.collector = collector
    web.add_middleware(SessionMiddleware, secret_key=guard.session_key, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE, same_site="strict", https_only=False)

    @web.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if _api_path(request) or request.url.path == "/healthz":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    _install_handlers(web)

    @web.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}}, tags=["health"])
    def healthz() -> Response:
        """Open (no token): 200 when the database answers, 503 when it does not."""
        try:
            with console.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return JSONResponse(HealthOut(status="unavailable", database=type(exc).__name__).model_dump(),
                                status_code=503)
        return JSONResponse(HealthOut(status="ok", database="ok").model_dump())

    @web.get("/metrics", dependencies=[Depends(require_api)], tags=["metrics"],
             responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"},
                        **api.documented()})
    def metrics() -> Response:
        """Prometheus text format (runs, durations, schedules by status, beat lag and last tick)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    web.include_router(api.router)
    web.include_router(pages.router)
    web.mount("/static", StaticFiles(packages=[("dataforge.web", "static")]), name="static")
    return web
