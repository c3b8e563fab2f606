"""Real ``celery beat`` processes on the DatabaseScheduler.

Sends are observed where they land: read straight from the Redis broker's queue (every
message, with its headers, nothing consumed), or through a real worker on the embedded
defaults (SQLite + sqla broker + database locks). Waits are on log lines and on database
conditions, each with a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from dataforge.db import Database
from dataforge.models import utcnow
from dataforge.protocol import DUE_AT_HEADER, MAX_RETRIES_HEADER, SCHEDULE_ID_HEADER
from dataforge.settings import Settings
from dataforge.tools.processes import CeleryProcess, beat_command, worker_command
from tests.conftest import REPO_ROOT, create_schema
from tests.dataforge.scheduler.support import add_row, get_row, run_sql
from tests.dataforge.worker.rig import wait_until

pytestmark = pytest.mark.slow

TASK = "sched_test.echo"
SENT = r"Scheduler: Sending due task {name} \("


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.as_env())
    env.update(
        DATAFORGE_TASK_PACKAGES="tests.dataforge.scheduler.beat_tasks",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        **extra,
    )
    return env


def beat(name: str, settings: Settings, cwd: Path, **extra: str) -> CeleryProcess:
    return CeleryProcess(name, beat_command(), env=child_env(settings, **extra), cwd=cwd, stop_timeout=20)


def broker_messages(url: str, queue: str = "celery") -> list[dict[str, Any]]:
    """Every message waiting in the Redis queue: headers plus decoded kwargs."""
    client = redis.Redis.from_url(url)
    try:
        raw = client.lrange(queue, 0, -1)
    finally:
        client.close()
    out = []
    for item in reversed(raw):  # kombu LPUSHes: oldest last
        envelope = json.loads(item)
        _args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        out.append({**envelope["headers"], "kwargs": kwargs})
    return out


@pytest.fixture
def server(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Settings]:
    """PostgreSQL schedules, Redis broker and leader lease; beat ticks at least every 0.5 s."""
    create_schema(pg_url)
    settings = Settings.from_env(
        {
            "DATAFORGE_DATABASE_URL": pg_url,
            "DATAFORGE_BROKER_URL": redis_url,
            "DATAFORGE_RESULT_BACKEND": redis_url,
            "DATAFORGE_REDIS_URL": redis_url,
            "DATAFORGE_BEAT_MAX_INTERVAL": "0.5",
            "DATAFORGE_BEAT_LEADER_TTL": "3",
        },
        cwd=tmp_path,
    )
    yield settings


def test_beat_sends_due_rows_and_picks_up_raw_sql_and_bad_rows(server: Settings, tmp_path: Path) -> None:
    db = Database(server.database_url)
    every_second = add_row(db, name="every-second", task_name=TASK, interval_seconds=1,
                           handler_kwargs='{"days": 7}', timeout_seconds=20, max_retries=2)
    bad = add_row(db, name="bad-cron", task_name=TASK, task_type="cron", interval_seconds=None,
                  cron_expression="0 25 * * *")
    with beat("beat", server, tmp_path) as b:
        b.wait_for(r"is the leader now", 60)
        b.wait_for(SENT.format(name="every-second"), 30, count=3)
        # A row inserted by raw SQL while beat runs, the way an operator (or the legacy app) would.
        run_sql(
            server.database_url,
            "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, "
            "status, max_retries, run_count, success_count, failure_count, created_at, updated_at) VALUES "
            "('raw-sql', 'interval', :task, 3600, 'UTC', '{}', 'active', 0, 0, 0, 0, :now, :now)",
            task=TASK, now=utcnow(),
        )
        b.wait_for(SENT.format(name="raw-sql"), 10)
        # The bad row: flagged once, never sent, while the good one keeps going.
        b.wait_for(SENT.format(name="every-second"), 30, count=6)
        assert len(re.findall(rf"schedule {bad} \(bad-cron\) is invalid", b.log)) == 1
        assert get_row(db, bad)["invalid_reason"].startswith("cron_expression='0 25 * * *'")
    assert "released the leader lease" in b.log
    messages = broker_messages(server.broker_url)
    ours = [m for m in messages if m[SCHEDULE_ID_HEADER] == every_second]
    assert len(ours) >= 6
    due = [datetime.fromisoformat(m[DUE_AT_HEADER]) for m in ours]
    assert due == sorted(set(due)), "each due time once, in order"
    # On the grid (no drift). A run beat reached more than half a second late (a loaded
    # machine) stands for the next one too: such a due time is skipped and counted missed.
    gaps = [(b - a).total_seconds() for a, b in zip(due, due[1:], strict=False)]
    assert all(g == int(g) for g in gaps), due
    row = get_row(db, every_second)
    assert sum(int(g) - 1 for g in gaps) <= row["missed_count"], (gaps, row["missed_count"])
    assert row["run_count"] == len(ours)
    first = ours[0]
    assert first["task"] == TASK
    assert first["kwargs"] == {"days": 7, "scheduled_task_id": every_second}
    assert first["timelimit"] == [50, 20]  # hard = timeout + grace, soft = timeout
    assert first[MAX_RETRIES_HEADER] == 2
    assert first["expires"] is not None
    assert bad not in {m[SCHEDULE_ID_HEADER] for m in messages}
    db.dispose()


def test_two_beats_and_kill_9_of_the_leader(server: Settings, tmp_path: Path) -> None:
    """No run sent twice under two ids, no gap in the due times beyond the failover bound.

    The kill lands right after a publish log line, so on purpose inside the window between
    publish and commit: the runs of that last, uncommitted batch are sent again by the new
    leader *with the same task ids* (docs/scheduler.md, "Guarantees"), never lost.
    """
    db = Database(server.database_url)
    ids = [add_row(db, name=f"tick-{k}", task_name=TASK, interval_seconds=1) for k in range(3)]
    with beat("beat-a", server, tmp_path) as a:
        a.wait_for(r"is the leader now", 60)
        with beat("beat-b", server, tmp_path) as b:
            b.wait_for(r"stands by", 60)
            a.wait_for(SENT.format(name="tick-0"), 30, count=4)
            a.kill()  # kill -9 of the whole group: no release, no graceful anything
            killed = time.monotonic()
            b.wait_for(r"is the leader now", 30)
            took_over = time.monotonic() - killed
            b.wait_for(SENT.format(name="tick-0"), 30, count=3)
    failover = server.beat_leader_ttl
    assert took_over <= failover + 2.0, f"standby took {took_over:.1f}s (bound {failover}s + scheduling slack)"
    by_a = set(re.findall(r"id=([0-9a-f-]{36})", a.log))
    by_b = set(re.findall(r"id=([0-9a-f-]{36})", b.log))
    assert by_a and by_b
    messages = broker_messages(server.broker_url)
    repeats = {tid: n for tid, n in Counter(m["id"] for m in messages).items() if n > 1}
    assert all(n == 2 for n in repeats.values()), repeats
    assert len(repeats) <= len(ids), "only the killed leader's last batch may be re-sent"
    # The new leader logs every run it re-sends. The killed leader's log is not compared: kill -9
    # can land between its publish and its log line (or between the line and the publish).
    assert set(repeats) <= by_b, "a re-sent run is re-sent by the new leader under the same id"
    runs: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for m in messages:
        runs[m[SCHEDULE_ID_HEADER]][m[DUE_AT_HEADER]].add(m["id"])
    for schedule_id in ids:
        assert all(len(task_ids) == 1 for task_ids in runs[schedule_id].values()), "a run sent twice"
        due = sorted(datetime.fromisoformat(d) for d in runs[schedule_id])
        gaps = [(b - a).total_seconds() for a, b in zip(due, due[1:], strict=False)]
        # Runs that fell due while nobody led are collapsed into one (missed_runs=once).
        assert max(gaps) <= failover + 1 + 1.5, gaps
    db.dispose()


@pytest.fixture
def embedded(tmp_path: Path) -> Settings:
    """The embedded defaults: SQLite file, sqla+sqlite broker, database locks and lease."""
    settings = Settings.from_env({"DATAFORGE_BEAT_MAX_INTERVAL": "1"}, cwd=tmp_path)
    create_schema(settings.database_url)
    return settings


def test_restart_after_downtime_fires_each_overdue_row_once(embedded: Settings, tmp_path: Path) -> None:
    """Beat was down two hours (the rows' due times are in the past): each overdue row runs
    once through a real worker, then realigns; a row with missed_run_policy=skip does not."""
    db = Database(embedded.database_url)
    two_hours_ago = utcnow() - timedelta(hours=2)
    rows = {
        "hourly-interval": add_row(db, name="hourly-interval", task_name=TASK, interval_seconds=3600,
                                   next_run_at=two_hours_ago, last_run_at=two_hours_ago - timedelta(hours=1)),
        "hourly-cron": add_row(db, name="hourly-cron", task_name=TASK, task_type="cron", interval_seconds=None,
                               cron_expression="0 * * * *", next_run_at=two_hours_ago),
        "once": add_row(db, name="once", task_name=TASK, task_type="once", interval_seconds=None,
                        run_at=two_hours_ago),
    }
    # Ten minutes off the others' grid: its newest missed run is late too, so nothing is sent.
    skip = add_row(db, name="skipper", task_name=TASK, interval_seconds=3600,
                   next_run_at=two_hours_ago - timedelta(minutes=10), missed_run_policy="skip")
    env = child_env(embedded)
    with CeleryProcess("worker", worker_command(concurrency=1), env=env, cwd=tmp_path) as worker:
        worker.wait_ready(60)
        with beat("beat", embedded, tmp_path) as b:
            b.wait_for(r"is the leader now", 60)
            b.wait_for(r"Scheduler: Sending due task .*\(catch-up; \d+ missed run\(s\) not sent\)", 60, count=3)
            b.wait_for(r"skipper\): \d+ missed run\(s\) from .* not sent", 30)
            worker.wait_for(rf"Task {re.escape(TASK)}\[.*\] succeeded", 60, count=3)
    received = Counter(re.findall(r"'scheduled_task_id': (\d+)", worker.log))
    assert received == Counter({str(i): 1 for i in rows.values()}), worker.log
    now = utcnow()
    for name in ("hourly-interval", "hourly-cron"):
        row = get_row(db, rows[name])
        assert row["run_count"] == 1 and row["next_run_at"] > now, name
    assert get_row(db, rows["hourly-interval"])["next_run_at"] == two_hours_ago + timedelta(hours=3)
    assert (get_row(db, rows["once"])["status"], get_row(db, rows["once"])["run_count"]) == ("done", 1)
    assert get_row(db, skip)["run_count"] == 0 and get_row(db, skip)["next_run_at"] > now
    db.dispose()


# --- failover, restarts and catch-up with the default lease ---------------------------------------

_SENT_AT = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] Scheduler: Sending due task (\S+) .* "
    r"id=([0-9a-f-]{36})"
)


def sends(*beats: CeleryProcess, name: str) -> list[tuple[datetime, str]]:
    """(when, task id) of every send of schedule ``name`` the beats logged, first send of an id only."""
    seen: dict[str, datetime] = {}
    for b in beats:
        for line in b.lines():
            match = _SENT_AT.search(line)
            if match and match.group(2) == name:
                at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                seen[match.group(3)] = min(at, seen.get(match.group(3), at))
    return sorted((at, tid) for tid, at in seen.items())


def assert_never_bunched(sent: list[tuple[datetime, str]], period: float) -> None:
    """No two different runs of one schedule went out closer than half its period."""
    times = [at for at, _ in sent]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert gaps and min(gaps) >= period / 2 - 0.05, f"runs sent {min(gaps):.2f}s apart (period {period}s): {gaps}"


@pytest.fixture
def default_lease(tmp_path: Path, pg_url: str, redis_url: str) -> Settings:
    """PostgreSQL + Redis with the default leader lease and beat interval (no test shortcuts)."""
    create_schema(pg_url)
    return Settings.from_env(
        {"DATAFORGE_DATABASE_URL": pg_url, "DATAFORGE_BROKER_URL": redis_url, "DATAFORGE_RESULT_BACKEND": redis_url,
         "DATAFORGE_REDIS_URL": redis_url},
        cwd=tmp_path,
    )  # fmt: skip


FAILOVER_BOUND = 10.0
#: Beat's own start (imports, connections) on a loaded 2-core machine, and log latency.
START_SLACK = 3.0


def test_kill_9_of_the_leader_a_standby_leads_within_10s_and_the_catch_up_is_not_bunched(
    default_lease: Settings, tmp_path: Path
) -> None:
    assert default_lease.beat_leader_ttl == FAILOVER_BOUND
    db = Database(default_lease.database_url)
    row = add_row(db, name="every-3s", task_name=TASK, interval_seconds=3)
    with beat("beat-a", default_lease, tmp_path) as a:
        a.wait_for(r"is the leader now", 60)
        with beat("beat-b", default_lease, tmp_path) as b:
            b.wait_for(r"stands by", 60)
            a.wait_for(SENT.format(name="every-3s"), 30, count=3)
            a.kill()
            killed = time.monotonic()
            b.wait_for(r"is the leader now", FAILOVER_BOUND + 10)
            took_over = time.monotonic() - killed
            b.wait_for(SENT.format(name="every-3s"), 30, count=3)
    assert took_over <= FAILOVER_BOUND + 1.0, f"standby took over {took_over:.1f}s after kill -9"
    sent = sends(a, b, name="every-3s")
    assert_never_bunched(sent, 3)
    assert re.search(r"every-3s.*\(catch-up; \d+ missed run\(s\) not sent\)", b.log), "the takeover sent a catch-up"
    stored = get_row(db, row)
    assert stored["missed_count"] >= 1
    db.dispose()


def test_a_beat_restarted_after_kill_9_reclaims_the_dead_leaders_lease_at_once(
    default_lease: Settings, tmp_path: Path
) -> None:
    """Same host, same working directory (Celery's beat state file, next to which the leader
    writes its identity): the restarted beat sees that the recorded leader's process is gone
    and takes its lease without waiting for it to run out."""
    db = Database(default_lease.database_url)
    add_row(db, name="every-3s", task_name=TASK, interval_seconds=3)
    with beat("beat-1", default_lease, tmp_path) as first:
        first.wait_for(r"is the leader now", 60)
        first.wait_for(SENT.format(name="every-3s"), 30, count=2)
        first.kill()
        killed = time.monotonic()
    with beat("beat-2", default_lease, tmp_path) as second:  # restarted at once, as systemd would
        second.wait_for(r"is the leader now", FAILOVER_BOUND + START_SLACK + 10)
        resumed = time.monotonic() - killed
        second.wait_for(SENT.format(name="every-3s"), 30, count=2)
    assert "which is gone, is released" in second.log
    # Its own start, not the lease: well within the 10 s bound.
    assert resumed <= START_SLACK + 1.0, f"the restarted beat led {resumed:.1f}s after the kill"
    assert_never_bunched(sends(first, second, name="every-3s"), 3)
    db.dispose()


def test_a_restart_in_another_directory_still_resumes_within_10s(default_lease: Settings, tmp_path: Path) -> None:
    """Nothing recorded where it starts (another host, another directory): it waits for the
    lease to run out, within the bound."""
    db = Database(default_lease.database_url)
    add_row(db, name="every-3s", task_name=TASK, interval_seconds=3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with beat("beat-1", default_lease, tmp_path) as first:
        first.wait_for(r"is the leader now", 60)
        first.wait_for(SENT.format(name="every-3s"), 30, count=2)
        first.kill()
        killed = time.monotonic()
    with beat("beat-2", default_lease, elsewhere) as second:
        second.wait_for(r"is the leader now", FAILOVER_BOUND + START_SLACK + 10)
        resumed = time.monotonic() - killed
    assert "is released" not in second.log
    assert resumed <= FAILOVER_BOUND + 1.0, f"the restarted beat led {resumed:.1f}s after the kill"
    db.dispose()


def test_a_beat_started_long_after_the_previous_one_died_sends_one_catch_up_in_place_of_a_regular_run(
    server: Settings, tmp_path: Path
) -> None:
    """The reported case: a 3 s schedule, beat killed, another beat 20 s later. One catch-up, no
    regular run a fraction of a second after it; the skipped due times are counted."""
    db = Database(server.database_url)
    row = add_row(db, name="every-3s", task_name=TASK, interval_seconds=3)
    with beat("beat-1", server, tmp_path) as first:
        first.wait_for(SENT.format(name="every-3s"), 30, count=2)
        first.kill()
    before = get_row(db, row)
    outage = time.monotonic() + 20
    wait_until(lambda: time.monotonic() >= outage, 30, "20 s of outage")  # the outage itself is the point
    with beat("beat-2", server, tmp_path) as second:
        second.wait_for(r"every-3s.*\(catch-up; \d+ missed run\(s\) not sent\)", 60)
        second.wait_for(SENT.format(name="every-3s"), 30, count=3)
    sent = sends(first, second, name="every-3s")
    assert_never_bunched(sent, 3)
    after = get_row(db, row)
    due_times_passed = (after["next_run_at"] - before["next_run_at"]).total_seconds() / 3
    sent_since = after["run_count"] - before["run_count"]
    assert sent_since + after["missed_count"] - before["missed_count"] == due_times_passed
    db.dispose()


def test_a_cron_catch_up_close_to_the_next_minute_takes_its_place(server: Settings, tmp_path: Path) -> None:
    """Every minute; at :40 or later, the row is found due since the minute before (its beat
    died): one run now, and the next one at the minute after next, not 20 s from now."""
    db = Database(server.database_url)
    # Late enough in the minute that the next one is under half a period away, early enough
    # that beat starts before it.
    wait_until(lambda: 40 <= utcnow().second <= 48, 70, "the wall clock between :40 and :48 of a minute")
    now = utcnow()
    this_minute = now.replace(second=0, microsecond=0)
    row = add_row(db, name="cron-minutely", task_name=TASK, task_type="cron", interval_seconds=None,
                  cron_expression="* * * * *", next_run_at=this_minute - timedelta(minutes=1))
    with beat("beat", server, tmp_path) as b:
        b.wait_for(SENT.format(name="cron-minutely"), 20)
        stored = get_row(db, row)
        assert stored["next_run_at"] == this_minute + timedelta(minutes=2), stored
        wait_until(lambda: utcnow() > this_minute + timedelta(minutes=1, seconds=3), 40, "the next minute passed")
    messages = [m for m in broker_messages(server.broker_url) if m[SCHEDULE_ID_HEADER] == row]
    assert [m[DUE_AT_HEADER] for m in messages] == [this_minute.isoformat()], "one run: the newest missed minute"
    assert get_row(db, row)["missed_count"] == 2  # the minute before, and the next one it stood for
    db.dispose()
