"""The schedule service's policies (missed runs, catch-up window, overlap, jitter) through
`dataforge schedules add/edit`, and `show` with the counters and the last runs.

The embedded default (SQLite) through click's runner, as an operator types it. Refusals exit 2
naming the option and leave the table as it was.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from dataforge.cli.main import cli
from dataforge.db import Database
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.protocol import MIN_CATCHUP_WINDOW_SECONDS
from dataforge.scheduler.schedules import jitter_offset
from dataforge.scheduler.service import ScheduleEdit, parse_catchup_window
from dataforge.settings import Settings

TASK = "dataforge.example_cleanup"
MIN_WINDOW = MIN_CATCHUP_WINDOW_SECONDS


def invoke(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={**settings.as_env(), "COLUMNS": "250"}, catch_exceptions=False)


def ok_json(settings: Settings, *args: str) -> Any:
    result = invoke(settings, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def rows(settings: Settings) -> list[dict[str, Any]]:
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            return [{c.key: getattr(r, c.key) for c in ScheduledTask.__table__.columns}
                    for r in session.scalars(select(ScheduledTask).order_by(ScheduledTask.id))]
    finally:
        db.dispose()


def test_add_with_every_policy_and_a_jittered_first_run(embedded_settings: Settings) -> None:
    before = utcnow().replace(microsecond=0)
    row = ok_json(embedded_settings, "schedules", "add", "reports", "--task", TASK, "--interval", "3600",
                  "--missed-runs", "all", "--catchup-window", "7200", "--overlap", "buffer_one", "--jitter", "300")
    assert (row["missed_run_policy"], row["catchup_window_seconds"], row["overlap_policy"], row["jitter_seconds"]) == (
        "all", 7200, "buffer_one", 300,
    )
    # Due now, sent the schedule's fixed offset later: next_run_at is the send time.
    offset = jitter_offset(row["id"], 300)
    assert before + offset <= datetime.fromisoformat(row["next_run_at"]) <= utcnow() + offset
    assert (row["missed_count"], row["skipped_count"], row["expired_count"], row["lost_count"]) == (0, 0, 0, 0)
    plain = ok_json(embedded_settings, "schedules", "add", "plain", "--task", TASK, "--interval", "60")
    assert (plain["missed_run_policy"], plain["catchup_window_seconds"], plain["overlap_policy"],
            plain["jitter_seconds"]) == (None, None, "skip", 0)


def test_edit_sets_and_clears_policies_and_a_jitter_change_replans(embedded_settings: Settings) -> None:
    row = ok_json(embedded_settings, "schedules", "add", "r", "--task", TASK, "--cron", "0 * * * *")
    due = row["next_run_at"]
    kept = ok_json(embedded_settings, "schedules", "edit", "r", "--overlap", "cancel_previous",
                   "--catchup-window", "600", "--missed-runs", "skip")
    assert (kept["overlap_policy"], kept["catchup_window_seconds"]) == ("cancel_previous", 600)
    assert kept["next_run_at"] == due, "policies are not timing: the due time stays"
    cleared = ok_json(embedded_settings, "schedules", "edit", "r", "--catchup-window", "default",
                      "--missed-runs", "default")
    assert (cleared["catchup_window_seconds"], cleared["missed_run_policy"]) == (None, None)
    jittered = ok_json(embedded_settings, "schedules", "edit", "r", "--jitter", "900")
    # Re-planned: the next top of the hour whose send time (+ the offset) is still ahead.
    sent_at = datetime.fromisoformat(jittered["next_run_at"])
    due_at = sent_at - jitter_offset(row["id"], 900)
    assert (due_at.minute, due_at.second) == (0, 0) and sent_at > utcnow() >= due_at - timedelta(hours=1)


@pytest.mark.parametrize(
    ("args", "option", "needle"),
    [
        (["--catchup-window", str(MIN_CATCHUP_WINDOW_SECONDS - 1)], "--catchup-window", f">= {MIN_WINDOW}"),
        (["--catchup-window", "an hour"], "--catchup-window", "whole seconds"),
        (["--catchup-window", "-60"], "--catchup-window", f">= {MIN_WINDOW}"),
        (["--jitter", "-1"], "--jitter", "from 0 to 86400"),
        (["--jitter", "86401"], "--jitter", "from 0 to 86400"),
        (["--overlap", "queue"], "--overlap", "buffer_one"),
        (["--missed-runs", "twice"], "--missed-runs", "all"),
    ],
)
def test_bad_policies_are_refused_naming_the_option_and_nothing_is_written(
    embedded_settings: Settings, args: list[str], option: str, needle: str
) -> None:
    ok_json(embedded_settings, "schedules", "add", "existing", "--task", TASK, "--interval", "60")
    before = rows(embedded_settings)
    for verb in (["add", "new", "--task", TASK, "--interval", "60"], ["edit", "existing"]):
        result = invoke(embedded_settings, "schedules", *verb, *args)
        assert result.exit_code == 2, result.output
        assert option in result.output and needle in result.output, result.output
        assert rows(embedded_settings) == before


def test_parse_catchup_window() -> None:
    assert parse_catchup_window(" Default ") is None
    assert parse_catchup_window("3600") == 3600
    assert ScheduleEdit(catchup_window="60").catchup_window == "60"


def test_show_prints_the_counters_and_the_last_ten_runs(embedded_settings: Settings) -> None:
    row = ok_json(embedded_settings, "schedules", "add", "counted", "--task", TASK, "--interval", "60")
    db = Database(embedded_settings.database_url)
    start = utcnow().replace(microsecond=0)
    try:
        with db.session() as session:
            stored = session.get(ScheduledTask, row["id"])
            assert stored is not None
            stored.run_count, stored.missed_count, stored.skipped_count = 12, 3, 2
            stored.expired_count, stored.lost_count, stored.success_count = 1, 1, 8
            for k in range(12):
                session.add(TaskExecution(scheduled_task_id=row["id"], celery_task_id=f"run-{k:02d}", attempt=0,
                                          task_name=TASK, status="success", started_at=start + timedelta(minutes=k)))
    finally:
        db.dispose()
    shown = ok_json(embedded_settings, "schedules", "show", "counted")
    assert [r["celery_task_id"] for r in shown["last_runs"]] == [f"run-{k:02d}" for k in range(11, 1, -1)]
    assert (shown["missed_count"], shown["skipped_count"], shown["expired_count"], shown["lost_count"]) == (3, 2, 1, 1)
    text = invoke(embedded_settings, "schedules", "show", "counted").output
    assert "12 sent, 8 succeeded, 0 failed, 3 missed" in text and "2 skipped" in text
    assert "1 expired in the queue, 1 lost" in text
    assert "last 10 run(s)" in text and "run-11" in text and "run-01" not in text
