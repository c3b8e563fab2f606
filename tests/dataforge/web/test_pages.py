"""The pages, logged in, on SQLite and PostgreSQL: what they show and what their forms write."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape as html_unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dataforge.db import Database
from dataforge.models import ScheduledTask, utcnow
from dataforge.settings import Settings
from tests.dataforge.web.support import TASK, add_execution, add_schedule, console
from tests.dataforge.web.test_auth import csrf_of, log_in


@pytest.fixture
def page(client: TestClient) -> TestClient:
    assert log_in(client).status_code == 303
    return client


def row(db: Database, sid: int) -> dict[str, Any]:
    with db.session() as session:
        found = session.get(ScheduledTask, sid)
        assert found is not None
        return {c.key: getattr(found, c.key) for c in ScheduledTask.__table__.columns}


def count(db: Database) -> int:
    with db.session() as session:
        return len(session.scalars(select(ScheduledTask.id)).all())


def form(client: TestClient, **fields: str) -> dict[str, str]:
    base = {"name": "nightly", "task_name": TASK, "task_type": "interval", "interval_seconds": "",
            "cron_expression": "", "run_at": "", "timezone": "UTC", "handler_kwargs": "{}", "description": "",
            "timeout_seconds": "", "max_retries": "0", "missed_run_policy": "default"}
    return {**base, **fields, "csrf_token": csrf_of(client.get("/schedules").text)}


def field_error(html: str, field: str) -> str:
    match = re.search(rf'<span class="field-error" role="alert" data-field="{field}">([^<]*)</span>', html)
    assert match, f"no inline error for {field}"
    return html_unescape(match.group(1))


def test_the_schedule_list_shows_state_and_actions(page: TestClient, db: Database) -> None:
    active = add_schedule(db, name="sync-accounts", next_run_at=utcnow() + timedelta(minutes=5),
                          last_run_at=utcnow(), last_status="failure", failure_count=2, success_count=5)
    paused = add_schedule(db, name="paused-one", status="paused")
    flagged = add_schedule(db, name="bad-cron", invalid_reason="cron_expression='61 * * * *': out of range")
    html = page.get("/schedules").text
    assert "3 in all" in html
    assert re.search(rf'<tr data-schedule="{active}">.*?sync-accounts.*?every 3600s.*?s-active.*?<time datetime="'
                     r'\d{4}-\d\d-\d\dT[\d:.]+Z">.*?s-failure.*?5 / 2.*?Pause.*?Run now', html, re.S)
    assert re.search(rf'<tr data-schedule="{paused}">.*?Resume', html, re.S)
    assert "cron_expression=&#39;61 * * * *&#39;: out of range" in html
    filtered = page.get("/schedules", params={"invalid": "yes"}).text
    assert f'data-schedule="{flagged}"' in filtered and f'data-schedule="{active}"' not in filtered
    assert page.get("/schedules", params={"cursor": "nope"}).status_code == 422


def test_the_list_pages_with_a_cursor(page: TestClient, db: Database) -> None:
    ids = [add_schedule(db) for _ in range(53)]
    first = page.get("/schedules").text
    assert f'data-schedule="{ids[49]}"' in first and f'data-schedule="{ids[50]}"' not in first
    next_url = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert next_url
    second = page.get(next_url.group(1).replace("&amp;", "&")).text
    assert [int(i) for i in re.findall(r'<tr data-schedule="(\d+)">', second)] == ids[50:]
    assert 'rel="next"' not in second


def test_add_through_the_form(page: TestClient, db: Database) -> None:
    response = page.post("/schedules", data=form(page, task_type="cron", cron_expression="30 2 * * *",
                                                  timezone="Europe/Berlin", handler_kwargs='{"days": 3}',
                                                  description="nightly purge", paused="1"))
    assert response.status_code == 303, response.text
    sid = int(response.headers["location"].rsplit("/", 1)[1])
    stored = row(db, sid)
    assert (stored["task_type"], stored["cron_expression"], stored["timezone"], stored["status"]) == (
        "cron", "30 2 * * *", "Europe/Berlin", "paused")
    assert stored["handler_kwargs"] == '{"days": 3}' and stored["description"] == "nightly purge"
    shown = page.get(response.headers["location"]).text
    assert "Added schedule" in shown and "cron 30 2 * * * (Europe/Berlin)" in shown


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"task_type": "cron", "cron_expression": "0 25 * * *"}, "cron_expression", "not a valid cron"),
        ({"interval_seconds": "ten"}, "interval_seconds", "whole number"),
        ({"interval_seconds": "0"}, "interval_seconds", "between 1 and"),
        ({"interval_seconds": "60", "task_name": "no.such.task"}, "task_name", "not registered"),
        ({"interval_seconds": "60", "handler_kwargs": "{days: 3}"}, "handler_kwargs", "JSON"),
        ({"interval_seconds": "60", "handler_kwargs": '{"nope": 1}'}, "handler_kwargs", "nope"),
        ({"interval_seconds": "60", "timezone": "Atlantis/Capital"}, "timezone", ""),
        ({"task_type": "once", "run_at": "1999-12-31T23:59"}, "run_at", "past"),
        ({"task_type": "cron"}, "cron_expression", "required"),
        ({"interval_seconds": "60", "name": ""}, "name", "name"),
    ],
)
def test_a_refused_form_shows_the_reason_at_the_field_and_keeps_the_input(
    page: TestClient, db: Database, fields: dict[str, str], field: str, says: str
) -> None:
    response = page.post("/schedules", data=form(page, **fields))
    assert response.status_code == 422
    assert says in field_error(response.text, field)
    shown = html_unescape(response.text)
    for value in fields.values():
        assert value in shown, f"the typed {value!r} is kept"
    assert count(db) == 0


def test_edit_changes_only_what_was_changed(page: TestClient, db: Database) -> None:
    sid = add_schedule(db, name="edit-me", handler_kwargs='{"days": 2}', timeout_seconds=30,
                       next_run_at=utcnow().replace(microsecond=0) + timedelta(minutes=30))
    html = page.get(f"/schedules/{sid}").text
    assert 'name="interval_seconds" value="3600"' in html
    before = row(db, sid)
    fields = {"name": "edit-me", "task_name": TASK, "task_type": "interval", "interval_seconds": "3600",
              "cron_expression": "", "run_at": "", "timezone": "UTC", "handler_kwargs": '{"days": 2}',
              "description": "", "timeout_seconds": "30", "max_retries": "0", "missed_run_policy": "default",
              "csrf_token": csrf_of(html)}
    assert page.post(f"/schedules/{sid}/edit", data=fields).status_code == 303
    assert row(db, sid) == before, "saving an untouched form writes nothing"
    fields.update(task_type="cron", cron_expression="*/10 * * * *", timeout_seconds="")
    assert page.post(f"/schedules/{sid}/edit", data=fields).status_code == 303
    after = row(db, sid)
    assert (after["task_type"], after["cron_expression"], after["interval_seconds"], after["timeout_seconds"]) == (
        "cron", "*/10 * * * *", None, None)
    assert after["handler_kwargs"] == before["handler_kwargs"]
    fields.update(cron_expression="99 * * * *")
    refused = page.post(f"/schedules/{sid}/edit", data=fields)
    assert refused.status_code == 422 and "not a valid cron" in field_error(refused.text, "cron_expression")
    assert row(db, sid) == after


def test_saving_a_done_once_row_unchanged_is_not_refused_for_its_past_time(page: TestClient, db: Database) -> None:
    sid = add_schedule(db, task_type="once", interval_seconds=None, run_at=utcnow() - timedelta(days=3),
                       status="done")
    html = page.get(f"/schedules/{sid}").text
    shown = re.search(r'name="run_at" value="([^"]+)"', html)
    assert shown and shown.group(1).endswith("+00:00")
    fields = {name: value for name, value in re.findall(r'<input name="(\w+)" value="([^"]*)"', html)}
    fields |= {"task_type": "once", "task_name": TASK, "missed_run_policy": "default", "handler_kwargs": "{}",
               "description": "kept", "csrf_token": csrf_of(html)}
    response = page.post(f"/schedules/{sid}/edit", data=fields)
    assert response.status_code == 303, response.text
    assert row(db, sid)["description"] == "kept" and row(db, sid)["status"] == "done"


def test_the_buttons(page: TestClient, db: Database, db_settings: Settings) -> None:
    sid = add_schedule(db, name="buttons")
    csrf = csrf_of(page.get("/schedules").text)
    assert page.post(f"/schedules/{sid}/pause", data={"csrf_token": csrf, "next": "/schedules"}).headers[
        "location"] == "/schedules"
    assert row(db, sid)["status"] == "paused"
    assert "Paused schedule" in page.get("/schedules").text
    page.post(f"/schedules/{sid}/resume", data={"csrf_token": csrf})
    assert row(db, sid)["status"] == "active"
    page.post(f"/schedules/{sid}/resume", data={"csrf_token": csrf})
    assert "already active" in page.get(f"/schedules/{sid}").text
    page.post(f"/schedules/{sid}/run-now", data={"csrf_token": csrf})
    assert "Sent dataforge.example_cleanup" in page.get(f"/schedules/{sid}").text
    response = page.post(f"/schedules/{sid}/delete", data={"csrf_token": csrf})
    assert response.headers["location"] == "/schedules"
    assert "Deleted schedule" in page.get("/schedules").text and count(db) == 0
    assert page.get(f"/schedules/{sid}").status_code == 404


def test_run_now_with_the_broker_down_says_so(db_settings: Settings, db: Database) -> None:
    sid = add_schedule(db)
    with console(db_settings.with_(broker_url="redis://127.0.0.1:9/0")) as (_, client):
        log_in(client)
        client.post(f"/schedules/{sid}/run-now", data={"csrf_token": csrf_of(client.get("/schedules").text)})
        assert "broker cannot be reached" in client.get(f"/schedules/{sid}").text


def test_one_schedule_shows_its_runs(page: TestClient, db: Database) -> None:
    sid = add_schedule(db, name="with-runs")
    add_execution(db, sid, status="success", duration_ms=1530)
    add_execution(db, sid, status="failure", duration_ms=42, error="ValueError: bad input\nmore")
    html = page.get(f"/schedules/{sid}").text
    assert re.search(r"s-failure.*?42 ms.*?ValueError: bad input", html, re.S)
    assert "1.53 s" in html
    fragment = page.get(f"/schedules/{sid}/runs").text
    assert "<html" not in fragment and "ValueError: bad input" in fragment
    assert 'data-refresh="/schedules/' in html


def test_the_executions_feed_filters_and_refreshes(page: TestClient, db: Database) -> None:
    sid = add_schedule(db, name="feed")
    add_execution(db, sid, status="success", started_at=utcnow() - timedelta(days=3))
    recent = add_execution(db, sid, status="failure", error="boom")
    html = page.get("/executions").text
    assert 'data-refresh="/executions/rows?"' in html and "feed" in html
    failures = page.get("/executions", params={"status": "failure", "since": "1h"}).text
    assert re.findall(r'<tr data-execution="(\d+)"', failures) == [str(recent)]
    assert 'data-refresh="/executions/rows?status=failure&amp;since=1h"' in failures
    rows = page.get("/executions/rows", params={"status": "success"}).text
    assert "<html" not in rows and len(re.findall(r"<tr data-execution", rows)) == 1
    assert page.get("/executions", params={"cursor": "-1"}).status_code == 422


def test_tasks_and_legacy_pages(page: TestClient) -> None:
    tasks = page.get("/tasks").text
    assert "dataforge.example_cleanup" in tasks and "days</code>" in tasks
    legacy = page.get("/legacy").text
    assert "Legacy switch" in legacy and "dataforge legacy enable" in legacy


def test_pages_carry_a_strict_content_security_policy(page: TestClient) -> None:
    response = page.get("/schedules")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script>" not in response.text and " style=" not in response.text
    assert page.get("/static/console.js").status_code == 200
