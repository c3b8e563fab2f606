"""The console in a real browser (headless Chromium driven by Playwright) while a real worker
and beat run: log in, add a schedule through the form (a bad cron refused inline first), watch
its runs appear in the live executions feed, pause it, run it now, see that run arrive.

Screenshots go to ``tmp_path``, or to ``DATAFORGE_WEB_SCREENSHOTS`` when set (docs/web.md's
pictures: ``DATAFORGE_WEB_SCREENSHOTS=docs/web python3 -m pytest tests/dataforge/web/test_browser.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataforge.settings import Settings
from dataforge.tools.processes import CeleryProcess, beat_command, worker_command
from tests.conftest import create_schema
from tests.dataforge.web.support import TASK, TOKEN
from tests.dataforge.web.test_serve import env_of, free_port, serve
from tests.support.services import IN_CI

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
#: Milliseconds the page waits for an event (a run to appear) before the test fails.
WAIT_MS = 60_000


@pytest.fixture
def stack(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[str]:
    """PostgreSQL + Redis, a worker, beat and `dataforge serve` with a token: the console's URL."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    create_schema(pg_url)
    settings = Settings.from_env({
        "DATAFORGE_DATABASE_URL": pg_url, "DATAFORGE_BROKER_URL": redis_url, "DATAFORGE_RESULT_BACKEND": redis_url,
        "DATAFORGE_REDIS_URL": redis_url, "DATAFORGE_BEAT_MAX_INTERVAL": "0.5", "DATAFORGE_BEAT_LEADER_TTL": "3",
        "DATAFORGE_API_TOKEN": TOKEN,
    }, cwd=tmp_path)
    env = env_of(settings)
    port = free_port()
    worker = CeleryProcess("worker", worker_command(concurrency=1), env=env, cwd=tmp_path, stop_timeout=10,
                           log_file=tmp_path / "worker.log")
    beat = CeleryProcess("beat", beat_command(), env=env, cwd=tmp_path, stop_timeout=10, log_file=tmp_path / "beat.log")
    console = serve(settings, tmp_path, "--port", str(port))
    with worker, beat, console:
        worker.wait_ready(90)
        beat.wait_ready(60)
        console.wait_for(r"Uvicorn running on", 60)
        yield f"http://127.0.0.1:{port}"


def test_an_operator_adds_watches_pauses_and_runs_a_schedule(stack: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("DATAFORGE_WEB_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        # A viewer far from UTC: the page must show their time, with UTC on hover.
        context = browser.new_context(viewport={"width": 1440, "height": 960}, timezone_id="America/New_York",
                                      locale="en-US")
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        try:
            page.goto(f"{stack}/schedules")
            expect(page).to_have_url(re.compile(r"/login\?next=%2Fschedules$"))
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{stack}/schedules")

            # A bad cron: refused next to its field, what was typed kept, nothing written.
            add = page.locator("#add form")
            add.locator("input[name=name]").fill("nightly-cleanup")
            add.locator("select[name=task_name]").select_option(TASK)
            add.locator("select[name=task_type]").select_option("cron")
            add.locator("input[name=cron_expression]").fill("0 25 * * *")
            add.locator("textarea[name=handler_kwargs]").fill('{"days": 30}')
            add.locator("button[type=submit]").click()
            refusal = page.locator('.field-error[data-field="cron_expression"]')
            expect(refusal).to_contain_text("not a valid cron")
            expect(page.locator("#add input[name=cron_expression]")).to_have_value("0 25 * * *")
            expect(page.locator("#schedules tbody tr[data-schedule]")).to_have_count(0)
            page.locator("#add").screenshot(path=str(shots / "add-refused.png"))

            # Fixed: every 2 seconds. The form lands on the new schedule's page.
            add = page.locator("#add form")
            add.locator("select[name=task_type]").select_option("interval")
            add.locator("input[name=interval_seconds]").fill("2")
            add.locator("button[type=submit]").click()
            expect(page.locator(".flash.ok")).to_contain_text("Added schedule")
            match = re.search(r"/schedules/(\d+)$", page.url)
            assert match, page.url
            sid = match.group(1)

            # The feed refreshes itself: beat sends, the worker runs, the row appears, no reload.
            page.goto(f"{stack}/executions")
            ours = page.locator(f'#feed tr[data-schedule="{sid}"] .s-success')
            expect(ours.first).to_be_visible()
            page.wait_for_function(
                "sid => document.querySelectorAll(`#feed tr[data-schedule='${sid}'] .s-success`).length >= 3", arg=sid)
            started = page.locator(f'#feed tr[data-schedule="{sid}"] time').first
            expect(started).to_have_attribute("data-local", "America/New_York")
            expect(started).to_have_attribute("title", re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
            assert "UTC" not in started.inner_text()
            expect(page.locator("#feed tbody")).to_have_attribute("data-refreshed", re.compile(r"\d+"))
            page.screenshot(path=str(shots / "executions.png"))

            # Pause it from the list.
            page.goto(f"{stack}/schedules")
            row = page.locator(f'#schedules tr[data-schedule="{sid}"]')
            row.get_by_role("button", name="Pause").click()
            expect(page.locator(".flash.ok")).to_contain_text("Paused schedule")
            expect(page.locator(f'#schedules tr[data-schedule="{sid}"] .badge').first).to_have_text("paused")
            expect(page.locator(f'#schedules tr[data-schedule="{sid}"]').get_by_role("button", name="Resume")
                   ).to_be_visible()
            page.screenshot(path=str(shots / "schedules.png"))

            # A paused schedule still runs on demand: Run now, and the run arrives on its page.
            page.goto(f"{stack}/schedules/{sid}")
            runs = page.locator("#runs tbody tr[data-execution]")
            newest = int(runs.first.get_attribute("data-execution") or 0)
            page.get_by_role("button", name="Run now").click()
            expect(page.locator(".flash.ok")).to_contain_text("Sent dataforge.example_cleanup")
            page.wait_for_function(
                "n => [...document.querySelectorAll('#runs tbody tr[data-execution]')]"
                ".some(r => Number(r.dataset.execution) > n && r.querySelector('.s-success'))",
                arg=newest,
            )
            page.screenshot(path=str(shots / "schedule.png"), full_page=True)
        finally:
            context.close()
            browser.close()
