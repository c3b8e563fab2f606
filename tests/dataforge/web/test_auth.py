"""Who may use the console: the token, the session cookie, CSRF, loopback without a token."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from dataforge.db import Database
from dataforge.settings import Settings
from dataforge.web.auth import SESSION_COOKIE, Guard, check_bind, is_loopback
from dataforge.web.errors import UnsafeBindError
from tests.conftest import create_schema
from tests.dataforge.web.support import TASK, TOKEN, add_schedule, auth, console


def csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start: html.index('"', start)]


def log_in(client: TestClient, token: str = TOKEN) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"token": token, "csrf_token": csrf_of(page.text), "next": "/schedules"})


# --- binding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST",
                                  "app.localhost"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.5", "192.168.1.2", "example.com", "localhost.evil.com",
                                  "127.0.0.1.nip.io", "::ffff:10.0.0.1"])
def test_other_hosts_are_refused_without_a_token(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(UnsafeBindError) as info:
        check_bind(host, None)
    assert "DATAFORGE_API_TOKEN" in str(info.value)
    check_bind(host, TOKEN)


@given(st.ip_addresses())
def test_is_loopback_agrees_with_ipaddress(address: Any) -> None:
    assert is_loopback(str(address)) is address.is_loopback


# --- the token --------------------------------------------------------------------------------------


@given(st.text(max_size=60))
def test_only_the_token_matches(given_token: str) -> None:
    guard = Guard(TOKEN, "k")
    assert guard.token_matches(given_token) is (given_token == TOKEN)


def test_short_tokens_are_refused_at_start_and_never_echoed(tmp_path: Path) -> None:
    from dataforge.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"DATAFORGE_API_TOKEN": "hunter2"}, cwd=tmp_path)
    assert "hunter2" not in str(info.value) and info.value.name == "DATAFORGE_API_TOKEN"
    settings = Settings.from_env({"DATAFORGE_API_TOKEN": TOKEN}, cwd=tmp_path)
    assert TOKEN not in repr(settings)


# --- pages: login, cookie, CSRF ---------------------------------------------------------------------


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'dataforge.db'}"
    create_schema(url)
    return Settings.from_env({"DATAFORGE_DATABASE_URL": url, "DATAFORGE_API_TOKEN": TOKEN}, cwd=tmp_path)


def test_login_sets_an_httponly_strict_cookie_and_logout_ends_it(sqlite_settings: Settings) -> None:
    with console(sqlite_settings) as (_, client):
        assert client.get("/schedules").headers["location"] == "/login?next=%2Fschedules"
        wrong = log_in(client, "wrong-token-0123456789abcdef")
        assert wrong.status_code == 401 and "Wrong token" in wrong.text
        ok = log_in(client)
        assert ok.status_code == 303 and ok.headers["location"] == "/schedules"
        cookie = next(h for h in ok.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert "httponly" in flags and "samesite=strict" in flags
        assert TOKEN not in cookie
        page = client.get("/schedules")
        assert page.status_code == 200
        client.post("/logout", data={"csrf_token": csrf_of(page.text)})
        assert client.get("/schedules").status_code == 303


def test_login_redirects_only_within_the_console(sqlite_settings: Settings) -> None:
    with console(sqlite_settings) as (_, client):
        for target, expected in [("https://evil.example/", "/schedules"), ("//evil.example/", "/schedules"),
                                 ("/tasks", "/tasks"), ("/\\evil.example", "/schedules")]:
            client.cookies.clear()
            page = client.get("/login")
            response = client.post("/login", data={"token": TOKEN, "csrf_token": csrf_of(page.text), "next": target})
            assert response.headers["location"] == expected, target


def test_forms_need_the_session_csrf_token(sqlite_settings: Settings) -> None:
    db = Database(sqlite_settings.database_url)
    sid = add_schedule(db)
    try:
        with console(sqlite_settings) as (_, client):
            log_in(client)
            for token in ("", "forged", None):
                data = {"next": "/schedules"} | ({"csrf_token": token} if token is not None else {})
                response = client.post(f"/schedules/{sid}/pause", data=data)
                assert response.status_code == 403, token
            csrf = csrf_of(client.get("/schedules").text)
            assert client.post(f"/schedules/{sid}/pause", data={"csrf_token": csrf}).status_code == 303
            # Another browser's session has another token: a leaked form token is useless to it.
            with TestClient(client.app, base_url="http://127.0.0.1:8080") as other:
                log_in(other)
                assert other.post(f"/schedules/{sid}/resume", data={"csrf_token": csrf}).status_code == 403
        with db.session() as session:
            from dataforge.models import ScheduledTask

            row = session.get(ScheduledTask, sid)
            assert row is not None and row.status == "paused"
    finally:
        db.dispose()


def test_login_form_needs_its_csrf_token(sqlite_settings: Settings) -> None:
    with console(sqlite_settings) as (_, client):
        client.get("/login")
        response = client.post("/login", data={"token": TOKEN, "csrf_token": "forged"})
        assert response.status_code == 403
        assert client.get("/schedules").status_code == 303


def test_a_new_token_ends_every_session(sqlite_settings: Settings) -> None:
    with console(sqlite_settings) as (_, client):
        log_in(client)
        cookie = client.cookies.get(SESSION_COOKIE)
    rotated = sqlite_settings.with_(api_token="another-token-0123456789-abcdef")
    with console(rotated) as (_, client):
        assert cookie is not None
        client.cookies.set(SESSION_COOKIE, cookie)
        assert client.get("/schedules").status_code == 303


def test_a_cross_site_write_is_refused_even_with_the_token(sqlite_settings: Settings) -> None:
    db = Database(sqlite_settings.database_url)
    sid = add_schedule(db)
    db.dispose()
    with console(sqlite_settings) as (_, client):
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            response = client.post(f"/api/schedules/{sid}/pause", headers={**auth(), **headers})
            assert response.status_code == 403, headers
        same = client.post(f"/api/schedules/{sid}/pause",
                           headers={**auth(), "Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 200


def test_the_token_is_never_logged(sqlite_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with console(sqlite_settings) as (_, client):
        log_in(client, TOKEN[:-1] + "X")
        log_in(client)
        client.get("/api/schedules", headers=auth())
        client.post("/api/schedules", headers=auth(), json={"name": "n", "task_name": TASK, "interval_seconds": 5})
        client.get("/metrics", headers=auth("x" * 40))
    assert "refused a login" in caplog.text
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text


# --- no token: loopback only ------------------------------------------------------------------------


def test_without_a_token_only_loopback_host_names_are_answered(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dataforge.db'}"
    create_schema(url)
    settings = Settings.from_env({"DATAFORGE_DATABASE_URL": url}, cwd=tmp_path)
    for base in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        with console(settings, base_url=base) as (_, client):
            assert client.get("/api/schedules").status_code == 200, base
            assert client.get("/schedules").status_code == 200, base
    # A DNS name rebound to 127.0.0.1 by a page the operator visits: its requests carry its Host.
    with console(settings, base_url="http://attacker.example:8080") as (_, client):
        assert client.get("/api/schedules").status_code == 400
        assert client.get("/schedules").status_code == 400
        assert client.get("/healthz").status_code == 200
    with console(settings) as (_, client):
        # A form another site posts to the console: refused by Origin, and it has no CSRF token.
        database = Database(url)
        sid = add_schedule(database)
        database.dispose()
        assert client.post(f"/api/schedules/{sid}/pause", headers={"Origin": "https://evil.example"}).status_code == 403
        assert client.post(f"/schedules/{sid}/pause", data={"csrf_token": "x"}).status_code == 403
        assert client.post(f"/api/schedules/{sid}/pause").status_code == 200


def test_console_settings_parse_and_round_trip(tmp_path: Path) -> None:
    from dataforge.errors import ConfigurationError

    settings = Settings.from_env({"DATAFORGE_API_TOKEN": f"  {TOKEN} ", "DATAFORGE_WEB_HOST": "::1",
                                  "DATAFORGE_WEB_PORT": "9090"}, cwd=tmp_path)
    assert (settings.api_token, settings.web_host, settings.web_port) == (TOKEN, "::1", 9090)
    assert Settings.from_env(settings.as_env(), cwd=tmp_path) == settings
    defaults = Settings.from_env({}, cwd=tmp_path)
    assert (defaults.api_token, defaults.web_host, defaults.web_port) == (None, "127.0.0.1", 8080)
    for bad in ("0", "65536", "http", "80.5"):
        with pytest.raises(ConfigurationError) as info:
            Settings.from_env({"DATAFORGE_WEB_PORT": bad}, cwd=tmp_path)
        assert info.value.name == "DATAFORGE_WEB_PORT"
