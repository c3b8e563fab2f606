"""The JSON API, every route and refusal, on SQLite and on PostgreSQL.

Writes are checked against the table afterwards: a refused write leaves it exactly as it was.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from kombu.simple import SimpleQueue
from sqlalchemy import select, text

from dataforge.celery_app import create_app
from dataforge.db import Database
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.protocol import SCHEDULE_ID_HEADER
from dataforge.scheduler import service
from dataforge.settings import Settings
from tests.dataforge.web.support import TASK, TOKEN, add_execution, add_schedule, auth, console

H = auth()


def rows(db: Database) -> list[dict[str, Any]]:
    with db.session() as session:
        return [{c.key: getattr(r, c.key) for c in ScheduledTask.__table__.columns}
                for r in session.scalars(select(ScheduledTask).order_by(ScheduledTask.id))]


def create(client: TestClient, **body: Any) -> Any:
    response = client.post("/api/schedules", json={"name": "nightly", "task_name": TASK, **body}, headers=H)
    assert response.status_code == 201, response.text
    return response.json()


def refused(response: Any, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["field"] == field, body
    assert body["message"]
    return body


# --- tasks ---------------------------------------------------------------------------------------


def test_tasks_join_both_registries(client: TestClient) -> None:
    body = client.get("/api/tasks", headers=H).json()
    entry = next(t for t in body["items"] if t["task_name"] == TASK)
    assert entry["in_celery"] and entry["in_registry"]
    assert [p["name"] for p in entry["params"]] == ["days", "dry_run"]
    assert body["check"]["ok"] is True


# --- create ----------------------------------------------------------------------------------------


def test_create_infers_the_type_and_plans_the_first_run(client: TestClient, db: Database) -> None:
    response = client.post("/api/schedules", headers=H, json={
        "name": "nightly", "task_name": TASK, "cron_expression": "0 3 * * *", "timezone": "Europe/Berlin",
        "handler_kwargs": {"days": 3}, "timeout_seconds": 600, "max_retries": 2, "missed_run_policy": "skip",
        "description": "purge"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/api/schedules/{body['id']}"
    assert body["task_type"] == "cron" and body["status"] == "active"
    assert body["handler_kwargs"] == {"days": 3}
    assert body["next_run_at"].endswith("Z")
    (row,) = rows(db)
    assert row["handler_kwargs"] == '{"days": 3}' and row["timeout_seconds"] == 600
    assert row["missed_run_policy"] == "skip" and row["next_run_at"] is not None


def test_create_paused_and_with_an_explicit_type(client: TestClient) -> None:
    body = create(client, task_type="interval", interval_seconds=60, status="paused")
    assert (body["task_type"], body["status"], body["interval_seconds"]) == ("interval", "paused", 60)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron_expression": "0 25 * * *"}, "cron_expression"),
        ({"cron_expression": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": -5}, "interval_seconds"),
        ({"run_at": "2001-01-01T00:00"}, "run_at"),
        ({"run_at": "tomorrow"}, "run_at"),
        ({"task_name": "no.such.task", "interval_seconds": 60}, "task_name"),
        ({"interval_seconds": 60, "handler_kwargs": {"_lock_key": "x"}}, "handler_kwargs"),
        ({"interval_seconds": 60, "handler_kwargs": {"unknown_param": 1}}, "handler_kwargs"),
        ({"interval_seconds": 60, "handler_kwargs": [1, 2]}, "handler_kwargs"),
        ({"interval_seconds": 60, "handler_kwargs": None}, "handler_kwargs"),
        ({"interval_seconds": 60, "cron_expression": "0 3 * * *"}, "task_type"),
        ({"task_type": "cron", "interval_seconds": 60}, "task_type"),
        ({"task_type": "cron"}, "cron_expression"),
        ({}, "task_type"),
        ({"interval_seconds": "60"}, "interval_seconds"),
        ({"interval_seconds": True}, "interval_seconds"),
        ({"interval_seconds": 2**40}, "interval_seconds"),
        ({"interval_seconds": 60, "name": "x" * 129}, "name"),
        ({"interval_seconds": 60, "name": "   "}, "name"),
        ({"interval_seconds": 60, "max_retries": -1}, "max_retries"),
        ({"interval_seconds": 60, "status": "sleeping"}, "status"),
        ({"interval_seconds": 60, "next_run_at": "2030-01-01T00:00"}, "next_run_at"),
    ],
)
def test_create_refusals_name_the_field_and_write_nothing(
    client: TestClient, db: Database, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/schedules", json={"name": "nightly", "task_name": TASK, **body}, headers=H)
    refused(response, 422, field)
    assert rows(db) == []


def test_create_refuses_a_taken_name(client: TestClient, db: Database) -> None:
    create(client, interval_seconds=60)
    before = rows(db)
    refused(client.post("/api/schedules", json={"name": "nightly", "task_name": TASK, "interval_seconds": 5},
                        headers=H), 422, "name")
    assert rows(db) == before


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\"text\""])
def test_a_body_that_is_not_a_json_object_is_400_or_422(client: TestClient, db: Database, content: bytes) -> None:
    response = client.post("/api/schedules", content=content,
                           headers={**H, "Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    if content.startswith(b"{"):
        assert response.status_code == 400
    assert rows(db) == []


# --- read, edit, delete -----------------------------------------------------------------------------


def test_get_patch_delete_and_404(client: TestClient, db: Database) -> None:
    made = create(client, interval_seconds=60, timeout_seconds=30)
    sid = made["id"]
    assert client.get(f"/api/schedules/{sid}", headers=H).json()["name"] == "nightly"
    patched = client.patch(f"/api/schedules/{sid}", headers=H, json={
        "cron_expression": "*/5 * * * *", "timeout_seconds": None, "description": "every five", "name": "five"})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["task_type"], body["interval_seconds"], body["cron_expression"]) == ("cron", None, "*/5 * * * *")
    assert body["timeout_seconds"] is None and body["name"] == "five" and body["description"] == "every five"
    before = rows(db)
    refused(client.patch(f"/api/schedules/{sid}", headers=H, json={"timezone": "Nowhere/City"}), 422, "timezone")
    refused(client.patch(f"/api/schedules/{sid}", headers=H, json={"name": None}), 422, "name")
    refused(client.patch(f"/api/schedules/{sid}", headers=H, json={"handler_kwargs": {"days": "x", "bad": 1}}), 422,
            "handler_kwargs")
    assert rows(db) == before
    run = add_execution(db, sid)
    gone = client.delete(f"/api/schedules/{sid}", headers=H)
    assert gone.status_code == 200 and gone.json()["id"] == sid
    assert rows(db) == []
    with db.session() as session:
        execution = session.get(TaskExecution, run)
        assert execution is not None and execution.scheduled_task_id is None
    for method in ("get", "patch", "delete"):
        kwargs: dict[str, Any] = {"json": {"description": "x"}} if method == "patch" else {}
        refused(getattr(client, method)(f"/api/schedules/{sid}", headers=H, **kwargs), 404, None)


def test_an_id_never_falls_back_to_a_name(client: TestClient, db: Database) -> None:
    """DELETE /api/schedules/5 of a gone id must not delete the schedule *named* "5"."""
    named = add_schedule(db, name="999")
    refused(client.delete("/api/schedules/999", headers=H), 404, None)
    assert [r["id"] for r in rows(db)] == [named]


@pytest.mark.parametrize("path", ["/api/schedules/0", "/api/schedules/-1", "/api/schedules/abc",
                                  f"/api/schedules/{2**31}"])
def test_ids_outside_the_column_are_422(client: TestClient, path: str) -> None:
    assert client.get(path, headers=H).status_code == 422


# --- pause, resume, run now -------------------------------------------------------------------------


def test_pause_and_resume(client: TestClient, db: Database) -> None:
    sid = create(client, interval_seconds=60)["id"]
    assert client.post(f"/api/schedules/{sid}/pause", headers=H).json()["status"] == "paused"
    assert client.post(f"/api/schedules/{sid}/pause", headers=H).json()["status"] == "paused"  # no-op
    resumed = client.post(f"/api/schedules/{sid}/resume", headers=H)
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    again = client.post(f"/api/schedules/{sid}/resume", headers=H)  # idempotent, like the CLI
    assert again.status_code == 200 and again.json()["status"] == "active"
    done = add_schedule(db, status="done", task_type="once", interval_seconds=None, run_at=utcnow())
    refused(client.post(f"/api/schedules/{done}/pause", headers=H), 409, None)
    refused(client.post(f"/api/schedules/{done}/resume", headers=H), 409, None)
    for verb in ("pause", "resume", "run-now"):
        refused(client.post(f"/api/schedules/424242/{verb}", headers=H), 404, None)


def test_a_stored_row_that_cannot_run_is_409_naming_the_column(client: TestClient, db: Database) -> None:
    unknown = add_schedule(db, task_name="gone.task", status="paused")
    refused(client.post(f"/api/schedules/{unknown}/resume", headers=H), 409, "task_name")
    refused(client.post(f"/api/schedules/{unknown}/run-now", headers=H), 409, "task_name")
    bad_cron = add_schedule(db, task_type="cron", interval_seconds=None, cron_expression="61 * * * *",
                            status="paused")
    refused(client.post(f"/api/schedules/{bad_cron}/resume", headers=H), 409, "cron_expression")
    assert {r["id"]: r["status"] for r in rows(db)} == {unknown: "paused", bad_cron: "paused"}


def test_run_now_sends_the_message_beat_would(client: TestClient, db: Database, db_settings: Settings) -> None:
    sid = create(client, interval_seconds=3600, handler_kwargs={"days": 9})["id"]
    before = rows(db)
    response = client.post(f"/api/schedules/{sid}/run-now", headers=H)
    assert response.status_code == 202, response.text
    sent = response.json()
    assert sent["schedule_id"] == sid and sent["kwargs"] == {"days": 9}
    assert rows(db) == before, "run-now does not touch the row's timing"
    app = create_app(db_settings)
    try:
        with app.connection_for_read() as conn:
            queue = SimpleQueue(conn, "celery")  # type: ignore[no-untyped-call]
            message = queue.get(timeout=10)  # type: ignore[no-untyped-call]
            message.ack()
            queue.close()  # type: ignore[no-untyped-call]
        assert message.headers["id"] == sent["celery_task_id"]
        assert message.headers["task"] == TASK
        assert message.headers[SCHEDULE_ID_HEADER] == sid
    finally:
        app.runtime.close()


def test_run_now_with_the_broker_down_is_503(db_settings: Settings, db: Database) -> None:
    settings = db_settings.with_(broker_url="redis://127.0.0.1:9/0")
    sid = add_schedule(db)
    with console(settings) as (_, client):
        body = refused(client.post(f"/api/schedules/{sid}/run-now", headers=H), 503, None)
    assert "broker" in body["message"]


# --- listings ---------------------------------------------------------------------------------------


def test_schedule_pages_follow_the_cursor(client: TestClient, db: Database) -> None:
    ids = [add_schedule(db, status="paused" if i % 3 == 0 else "active") for i in range(7)]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/schedules", params=params, headers=H).json()
        seen += [r["id"] for r in page["items"]]
        assert page["total"] == 7 and page["total_exact"] is True
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    paused = client.get("/api/schedules", params={"status": "paused"}, headers=H).json()["items"]
    assert [r["id"] for r in paused] == ids[::3]
    both = client.get("/api/schedules", params=[("status", "paused"), ("status", "active")], headers=H).json()
    assert len(both["items"]) == 7


def test_schedule_filters_task_and_invalid(client: TestClient, db: Database) -> None:
    plain = add_schedule(db)
    other = add_schedule(db, task_name="other.task")
    flagged = add_schedule(db, invalid_reason="cron_expression: out of range", next_run_at=None)
    by_task = client.get("/api/schedules", params={"task": "other.task"}, headers=H).json()
    assert [r["id"] for r in by_task["items"]] == [other]
    invalid = client.get("/api/schedules", params={"invalid": "true"}, headers=H).json()["items"]
    assert [(r["id"], r["invalid_reason"]) for r in invalid] == [(flagged, "cron_expression: out of range")]
    healthy = client.get("/api/schedules", params={"invalid": "false"}, headers=H).json()["items"]
    assert [r["id"] for r in healthy] == [plain, other]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": service.MAX_PAGE + 1}, "limit"), ({"cursor": "abc"}, "cursor"),
     ({"status": "sleeping"}, "status"), ({"invalid": "maybe"}, "invalid")],
)
def test_bad_listing_parameters_are_422(client: TestClient, params: dict[str, Any], field: str) -> None:
    body = client.get("/api/schedules", params=params, headers=H)
    assert body.status_code == 422, body.text
    assert field in (body.json()["field"] or "")


def test_executions_of_a_schedule_page_by_start_time(client: TestClient, db: Database) -> None:
    sid = add_schedule(db)
    other = add_schedule(db)
    start = utcnow() - timedelta(hours=1)
    made = [add_execution(db, sid, started_at=start + timedelta(seconds=i), status="failure" if i == 2 else "success",
                          error="boom" if i == 2 else None) for i in range(5)]
    add_execution(db, other)
    seen, cursor = [], None
    while True:
        page = client.get(f"/api/schedules/{sid}/executions", params={"limit": 2, **({"cursor": cursor} if cursor
                                                                                       else {})}, headers=H).json()
        assert page["schedule"]["id"] == sid
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    failed = client.get(f"/api/schedules/{sid}/executions", params={"status": "failure"}, headers=H).json()
    assert [(r["id"], r["error"], r["schedule_name"]) for r in failed["items"]] == [
        (made[2], "boom", failed["schedule"]["name"])]
    refused(client.get("/api/schedules/424242/executions", headers=H), 404, None)
    assert client.get(f"/api/schedules/{sid}/executions", params={"cursor": "x"}, headers=H).status_code == 422


def test_the_executions_feed(client: TestClient, db: Database) -> None:
    sid = add_schedule(db, name="feed-me")
    old = add_execution(db, sid, started_at=utcnow() - timedelta(days=2))
    new = [add_execution(db, sid, status=s) for s in ("success", "failure", "success")]
    orphan = add_execution(db, None, task_name="other.task")
    page = client.get("/api/executions", headers=H).json()
    assert [r["id"] for r in page["items"]] == [orphan, *new[::-1], old]
    assert page["items"][1]["schedule_name"] == "feed-me" and page["items"][0]["schedule_name"] is None
    assert page["items"][1]["started_at"].endswith("Z")
    two = client.get("/api/executions", params={"limit": 2}, headers=H).json()
    rest = client.get("/api/executions", params={"limit": 10, "cursor": two["next_cursor"]}, headers=H).json()
    assert [r["id"] for r in two["items"] + rest["items"]] == [r["id"] for r in page["items"]]
    failures = client.get("/api/executions", params={"status": "failure"}, headers=H).json()["items"]
    assert [r["id"] for r in failures] == [new[1]]
    by_task = client.get("/api/executions", params={"task": "other.task"}, headers=H).json()["items"]
    assert [r["id"] for r in by_task] == [orphan]
    since = (utcnow() - timedelta(hours=1)).isoformat() + "+00:00"
    recent = client.get("/api/executions", params={"since": since}, headers=H).json()
    assert old not in [r["id"] for r in recent["items"]] and len(recent["items"]) == 4
    assert client.get("/api/executions", params={"since": "yesterday"}, headers=H).status_code == 422


# --- legacy, health, metrics ------------------------------------------------------------------------


def test_legacy_switch_state(client: TestClient, db: Database) -> None:
    body = client.get("/api/legacy", headers=H).json()
    assert body["effective"] is False and body["persisted"] is None and body["rows_needing_shim"] == []
    with db.session() as session:
        session.execute(text("DROP TABLE dataforge_flags"))
    refused(client.get("/api/legacy", headers=H), 503, None)


def test_healthz_is_open_and_says_when_the_database_is_down(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    down = Settings.from_env({"DATAFORGE_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none"}, cwd=tmp_path)
    with console(down) as (_, dead):
        response = dead.get("/healthz")
        assert response.status_code == 503 and response.json()["status"] == "unavailable"
        assert dead.get("/api/schedules").status_code == 503


def test_metrics_need_the_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers=H)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert "dataforge_database_up 1.0" in response.text


# --- auth, on every route the app has ---------------------------------------------------------------

OPEN = {"/healthz", "/openapi.json", "/login"}


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps included routers whole
            found += _api_routes(route.original_router.routes)
    return found


def _routes(web: FastAPI) -> list[tuple[str, str]]:
    routes = [route for route in _api_routes(list(web.routes)) if route.path not in OPEN]
    return [(method, route.path.replace("{schedule_id}", "1"))
            for route in routes for method in sorted(route.methods or ())]


def test_every_api_route_needs_the_bearer_token(web: tuple[FastAPI, TestClient], db: Database) -> None:
    app, client = web
    add_schedule(db)
    api = [(m, p) for m, p in _routes(app) if p.startswith("/api") or p == "/metrics"]
    assert len(api) >= 13, api
    before = rows(db)
    for method, path in api:
        for headers in ({}, auth("wrong-token-0123456789abcdef"), {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
        # A query-string token is never accepted (URLs end up in logs).
        assert client.request(method, f"{path}?token={TOKEN}", json={}).status_code == 401
    assert rows(db) == before


def test_every_page_needs_a_login(web: tuple[FastAPI, TestClient], db: Database) -> None:
    app, client = web
    add_schedule(db)
    pages = [(m, p) for m, p in _routes(app) if not (p.startswith("/api") or p == "/metrics")]
    assert len(pages) >= 12, pages
    before = rows(db)
    for method, path in pages:
        response = client.request(method, path)
        if method == "GET":
            assert response.status_code == 303, (method, path)
            assert response.headers["location"].startswith("/login?next=")
        else:
            assert response.status_code in (303, 403), (method, path, response.status_code)
    assert rows(db) == before


def test_openapi_describes_every_api_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/api/tasks", "/api/schedules", "/api/schedules/{schedule_id}", "/api/schedules/{schedule_id}/pause",
            "/api/schedules/{schedule_id}/resume", "/api/schedules/{schedule_id}/run-now",
            "/api/schedules/{schedule_id}/executions", "/api/executions", "/api/legacy", "/metrics",
            "/healthz"} <= paths
    assert not any(p.startswith("/schedules") for p in paths), "pages are not part of the API"
    assert TOKEN not in str(schema)
