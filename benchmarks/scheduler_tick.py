"""Benchmark: beat's cost per tick versus the number of schedules, a top-of-the-hour burst, and
failover, against two peers.

    python benchmarks/scheduler_tick.py            # everything below
    python benchmarks/scheduler_tick.py --quick    # N = 1,000, a 10,000-row burst, one failover round
    python benchmarks/scheduler_tick.py --sections burst --systems dataforge

**idle** (each N and system, a fresh child process, so RSS belongs to that run alone):

* ``startup_s``: the first tick (load, leader lease, first read).
* ``idle_tick_ms``: median / p99 of ticks when nothing is due and nothing changed.
* ``publish_1000_s``: 1,000 rows made due at once -> until all 1,000 messages are in the
  broker (the tick(s) that send them, as beat's loop runs them).
* ``change_to_effect_s``: a committed edit that makes one row due -> its message in the broker,
  with the scheduler running its real loop (tick + the wait/sleep it asks for).
* ``rss_mb``: peak resident memory of the child.

N = 1,000 / 10,000 / 100,000 for every system, and 1,000,000 for dataforge (the peers keep every
schedule in beat's memory, or load it per tick: a million would take each of them minutes per
tick and gigabytes).

**burst**: ``--burst`` rows (100,000) with cron ``0 * * * *``, all due at the same second, beat
already running its loop: from that second until the last message is in the broker
(``runs_per_s``). For dataforge the time is split into database (read the due rows, the
compare-and-set, the commit), planning (per-row decisions and message objects), message
building (Celery's and kombu's message and the buffered publish) and broker (the pipeline
flushes to Redis). A peer that has not published the burst after ``CAP_S`` is reported with
how many it had sent by then.

**failover** (dataforge, real ``celery beat`` processes, default settings): two beats, kill -9
of the leader: seconds until the standby leads and until its first message; then kill -9 of
the leader and an immediate restart on the same host (same directory: it reclaims the dead
leader's lease): seconds until the new process leads.

Systems: ``dataforge`` (this project, PostgreSQL), ``sqlalchemy-celery-beat`` (same PostgreSQL
server, its own tables) and ``redbeat`` (celery-redbeat, same Redis). The two peers are
installed by this script into a throwaway directory (``pip install --target``), never into
the project. Every system publishes to the same Redis broker (db from
``DATAFORGE_BENCH_REDIS_URL``, flushed); idle schedules are interval schedules of one hour.

Writes benchmarks/results/scheduler_tick.json. Environment: ``DATAFORGE_BENCH_PG_URL`` (admin
URL; default the test server), ``DATAFORGE_BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/2).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This checkout's code, not whatever an installed copy points at (the failover section starts
# beat processes with settings built here, and the children run with ROOT first on their path).
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "scheduler_tick.json"
PG_ADMIN = os.environ.get("DATAFORGE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DATAFORGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/2")
PEERS_DIR = Path(tempfile.gettempdir()) / "dataforge-bench-peers"
PEERS = ["sqlalchemy-celery-beat==0.9.1", "celery-redbeat==2.4.2", "ephem", "tzdata"]
SYSTEMS = ("dataforge", "sqlalchemy-celery-beat", "redbeat")
SECTIONS = ("idle", "burst", "failover")
TASK = "bench.noop"
BURST = 1000
#: The top-of-the-hour burst: rows due at the same second.
BURST_N = 100_000
#: The peers are measured idle up to this many schedules (see the module docstring).
PEER_MAX_N = 100_000
#: A peer that has not published the burst after this long is reported as ">= CAP".
CAP_S = 300.0


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------


def ensure_peers() -> None:
    marker = PEERS_DIR / ".installed"
    if marker.exists() and marker.read_text() == " ".join(PEERS):
        return
    print(f"installing {', '.join(PEERS)} into {PEERS_DIR} (benchmark only)", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(PEERS_DIR), *PEERS],
        check=True,
    )
    marker.write_text(" ".join(PEERS))


def fresh_database() -> tuple[str, Callable[[], None]]:
    import psycopg

    name = f"dfbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}", drop


def run_child(system: str, n: int, section: str = "idle") -> dict[str, Any]:
    db_url, drop = fresh_database()
    env = dict(os.environ)
    paths = [str(ROOT), *([str(PEERS_DIR)] if system != "dataforge" else []), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", system, "--section", section, "--n", str(n), "--db", db_url],
            env=env, capture_output=True, text=True, timeout=CAP_S * 4,
        )
    finally:
        drop()
    if proc.returncode != 0:
        raise RuntimeError(f"{system} {section} N={n} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    # Not published within the cap: recorded as null with the cap, JSON has no infinity.
    for key, value in list(result.items()):
        if value == float("inf"):
            result[key] = None
            result[f"{key}_over"] = CAP_S
    return result


def _show(result: dict[str, Any]) -> None:
    print("   " + ", ".join(f"{k}={v}" for k, v in result.items() if k not in ("system", "n")), flush=True)


def idle_section(sizes: list[int], systems: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for n in sizes:
        for system in systems:
            if system != "dataforge" and n > PEER_MAX_N:
                continue
            print(f"-- idle: {system} N={n:,}", flush=True)
            results.append(run_child(system, n))
            _show(results[-1])
    ratios = {}
    for n in sizes:
        ours = next((r for r in results if r["system"] == "dataforge" and r["n"] == n), None)
        for r in results:
            if ours is None or r["n"] != n or r["system"] == "dataforge":
                continue
            ratios[f"{r['system']} / dataforge, N={n}"] = {
                k: round(r[k] / ours[k], 1) if ours[k] and r[k] is not None else None
                for k in ("idle_tick_ms", "publish_1000_s", "change_to_effect_s", "rss_mb")
            }
    return results, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000, a 10,000-row burst, one failover round")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--burst", type=int, help=f"rows due at the same second (default {BURST_N:,})")
    parser.add_argument("--child")
    parser.add_argument("--section", default="idle")
    parser.add_argument("--n", type=int)
    parser.add_argument("--db")
    args = parser.parse_args()
    if args.child:
        children = BURST_CHILDREN if args.section == "burst" else CHILDREN
        print(json.dumps(children[args.child](args.n, args.db)))
        return
    systems = [s for s in args.systems.split(",") if s]
    sections = [s for s in args.sections.split(",") if s]
    if any(s != "dataforge" for s in systems):
        ensure_peers()
    out: dict[str, Any] = {
        "command": "python benchmarks/scheduler_tick.py" + (" --quick" if args.quick else ""),
        "machine": f"{os.cpu_count()} cpu, python {sys.version.split()[0]}",
        "load_before": os.getloadavg(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if "idle" in sections:
        sizes = [1_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
        out["results"], out["ratios_peer_over_dataforge"] = idle_section(sizes, systems)
        flat = {r["n"]: r["rss_mb"] for r in out["results"] if r["system"] == "dataforge"}
        if 1_000 in flat:
            out["dataforge_rss_over_n1000_mb"] = {n: round(mb - flat[1_000], 1) for n, mb in flat.items()}
    if "burst" in sections:
        burst_n = args.burst or (10_000 if args.quick else BURST_N)
        out["burst"] = []
        for system in systems:
            print(f"-- burst: {system}, {burst_n:,} rows due at the same second", flush=True)
            out["burst"].append(run_child(system, burst_n, "burst"))
            _show(out["burst"][-1])
    if "failover" in sections:
        print("-- failover: real celery beat processes, kill -9", flush=True)
        out["failover"] = failover(rounds=1 if args.quick else 3)
        print("   " + json.dumps(out["failover"]["summary"]), flush=True)
    out["load_after"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


# --------------------------------------------------------------------------------------------
# children: common
# --------------------------------------------------------------------------------------------


def noop(**kwargs: Any) -> None:
    """The benchmark task: never run (nothing consumes the queue), only published."""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def broker_count() -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.llen("celery"))
    finally:
        client.close()


def flush_broker() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()


def wait_broker(target: int, cap: float = CAP_S) -> float:
    started = time.perf_counter()
    while broker_count() < target:
        if time.perf_counter() - started > cap:
            return float("inf")
        time.sleep(0.0005)
    return time.perf_counter() - started


def ms_stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "idle_tick_ms": round(statistics.median(ordered) * 1000, 4),
        "idle_tick_p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 4),
    }


def run_loop(tick: Callable[[], float], stop: threading.Event) -> None:
    """celery.beat.Service's loop: tick, then sleep what it asked for."""
    while not stop.is_set():
        delay = tick()
        if delay and delay > 0:
            time.sleep(delay)


def change_latency(make_due: Callable[[int], None], tick: Callable[[], float], rounds: int = 5) -> float:
    stop = threading.Event()
    loop = threading.Thread(target=run_loop, args=(tick, stop), daemon=True)
    loop.start()
    time.sleep(1.0)  # let the loop settle into its idle wait
    samples = []
    for k in range(rounds):
        before = broker_count()
        started = time.perf_counter()
        make_due(k)
        waited = wait_broker(before + 1, cap=60)
        samples.append(waited if waited == float("inf") else time.perf_counter() - started)
        time.sleep(0.3)
    stop.set()
    return round(statistics.median(samples), 4)


def pg_engine(db_url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine("postgresql+psycopg://" + db_url.split("://", 1)[1])


# --------------------------------------------------------------------------------------------
# child: dataforge
# --------------------------------------------------------------------------------------------


def child_dataforge(n: int, db_url: str) -> dict[str, Any]:
    from sqlalchemy import text

    from dataforge.celery_app import create_app
    from dataforge.celery_scheduler import DatabaseScheduler
    from dataforge.models import Base
    from dataforge.settings import Settings

    flush_broker()
    settings = Settings.from_env(
        {
            "DATAFORGE_DATABASE_URL": db_url,
            "DATAFORGE_BROKER_URL": REDIS_URL,
            "DATAFORGE_RESULT_BACKEND": REDIS_URL,
            "DATAFORGE_REDIS_URL": REDIS_URL,
        },
        cwd=Path(tempfile.mkdtemp()),
    )
    app = create_app(settings)
    app.task(name=TASK, shared=False)(noop)
    engine = app.runtime.db.engine
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, "
                "status, max_retries, run_count, success_count, failure_count, created_at, updated_at, next_run_at) "
                "SELECT 'bench-' || g, 'interval', :task, 3600, 'UTC', '{}', 'active', 0, 0, 0, 0, now(), now(), "
                "(now() AT TIME ZONE 'utc') + make_interval(secs => 120 + g % 3000) FROM generate_series(1, :n) g"
            ),
            {"task": TASK, "n": n},
        )
        conn.execute(text("ANALYZE scheduled_tasks"))

    sch = DatabaseScheduler(app=app)
    started = time.perf_counter()
    sch.tick_once()
    startup = time.perf_counter() - started

    samples = []
    for _ in range(3000):
        t0 = time.perf_counter()
        sch.tick_once()
        samples.append(time.perf_counter() - t0)

    with engine.begin() as conn:
        conn.execute(
            text("UPDATE scheduled_tasks SET next_run_at = (now() AT TIME ZONE 'utc') - interval '1 second' "
                 "WHERE id <= :k"),
            {"k": BURST},
        )
    feed = sch._feed
    assert feed is not None and feed.live
    feed.wait(10)  # the NOTIFY of that commit: what wakes a real beat
    sch._need_refresh = True
    t0 = time.perf_counter()
    sch.tick_once()
    burst = time.perf_counter() - t0
    assert broker_count() == BURST, broker_count()

    # The same burst with the publisher's task-sent events on (the app's default is off): what they cost.
    sent_events_default = sch.app.conf.task_send_sent_event
    sch.app.conf.task_send_sent_event = not sent_events_default
    flush_broker()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE scheduled_tasks SET next_run_at = (now() AT TIME ZONE 'utc') - interval '1 second' "
                 "WHERE id <= :k"),
            {"k": BURST},
        )
    feed.wait(10)
    sch._need_refresh = True
    t0 = time.perf_counter()
    sch.tick_once()
    burst_other = time.perf_counter() - t0
    assert broker_count() == BURST, broker_count()
    sch.app.conf.task_send_sent_event = sent_events_default
    burst_no_events, burst_with_events = (burst, burst_other) if not sent_events_default else (burst_other, burst)

    def make_due(k: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE scheduled_tasks SET next_run_at = (now() AT TIME ZONE 'utc') WHERE id = :i"),
                {"i": n - k},
            )

    latency = change_latency(make_due, sch.tick)
    return {
        "system": "dataforge", "n": n, "startup_s": round(startup, 4), **ms_stats(samples),
        "publish_1000_s": round(burst, 4), "publish_1000_no_sent_events_s": round(burst_no_events, 4),
        "publish_1000_with_sent_events_s": round(burst_with_events, 4),
        "change_to_effect_s": latency, "rss_mb": rss_mb(),
    }


# --------------------------------------------------------------------------------------------
# child: sqlalchemy-celery-beat
# --------------------------------------------------------------------------------------------


def child_sqlalchemy_celery_beat(n: int, db_url: str) -> dict[str, Any]:
    from celery import Celery
    from sqlalchemy import text
    from sqlalchemy_celery_beat.models import PeriodicTaskChanged  # noqa: F401 (registers the model)
    from sqlalchemy_celery_beat.schedulers import DatabaseScheduler

    flush_broker()
    sa_url = "postgresql+psycopg://" + db_url.split("://", 1)[1]
    app = Celery("bench", broker=REDIS_URL)
    app.conf.update(beat_dburi=sa_url, beat_max_loop_interval=5, enable_utc=True, timezone="UTC")
    app.task(name=TASK, shared=False)(noop)

    sch = DatabaseScheduler(app=app, lazy=True)  # creates its tables; schedule not read yet
    engine = sch.engine
    schema = sch.schema
    t = f"{schema}.celery_periodictask" if schema else "celery_periodictask"
    ti = f"{schema}.celery_intervalschedule" if schema else "celery_intervalschedule"
    tc = f"{schema}.celery_periodictaskchanged" if schema else "celery_periodictaskchanged"
    with engine.begin() as conn:
        interval_id = conn.execute(
            text(f"INSERT INTO {ti} (every, period) VALUES (3600, 'seconds') RETURNING id")
        ).scalar_one()
        conn.execute(
            text(
                f"INSERT INTO {t} (name, task, args, kwargs, one_off, enabled, total_run_count, description, "
                "discriminator, schedule_id, last_run_at, date_changed) "
                "SELECT 'bench-' || g, :task, '[]', '{}', false, true, 0, '', 'intervalschedule', :sid, "
                "now() - make_interval(secs => 3000 - g % 3000), now() FROM generate_series(1, :n) g"
            ),
            {"task": TASK, "n": n, "sid": interval_id},
        )
        conn.execute(text(f"ANALYZE {t}"))

    started = time.perf_counter()
    sch.setup_schedule()
    sch.tick()
    startup = time.perf_counter() - started

    rounds = 30 if n <= 10_000 else 10
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sch.tick()
        samples.append(time.perf_counter() - t0)

    def bump(conn: Any) -> None:
        conn.execute(text(f"UPDATE {tc} SET last_update = now()"))

    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {t} SET last_run_at = now() - interval '2 hours' WHERE id <= :k"), {"k": BURST})
        bump(conn)
    stop = threading.Event()
    loop = threading.Thread(target=run_loop, args=(sch.tick, stop), daemon=True)
    loop.start()
    burst = wait_broker(BURST)
    stop.set()
    loop.join(CAP_S)

    def make_due(k: int) -> None:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {t} SET last_run_at = now() - interval '2 hours' WHERE id = :i"),
                         {"i": n - k})
            bump(conn)

    latency = change_latency(make_due, sch.tick)
    return {
        "system": "sqlalchemy-celery-beat", "n": n, "startup_s": round(startup, 4), **ms_stats(samples),
        "publish_1000_s": round(burst, 4), "change_to_effect_s": latency, "rss_mb": rss_mb(),
    }


# --------------------------------------------------------------------------------------------
# child: redbeat
# --------------------------------------------------------------------------------------------


def child_redbeat(n: int, db_url: str) -> dict[str, Any]:
    from celery import Celery
    from celery.schedules import schedule
    from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry

    flush_broker()
    app = Celery("bench", broker=REDIS_URL)
    app.conf.update(
        redbeat_redis_url=REDIS_URL, redbeat_key_prefix="bench-redbeat:", redbeat_lock_key=None,
        beat_max_loop_interval=5, enable_utc=True, timezone="UTC",
    )
    app.task(name=TASK, shared=False)(noop)
    every_hour = schedule(run_every=timedelta(seconds=3600))
    # last_run_at = now, as RedBeat itself leaves an entry after running it: RedBeat scores an
    # entry at last_run_at + (time remaining from *now*), so an older last_run_at would score
    # it in the past and make every tick load it.
    now = datetime.now(UTC)
    for g in range(1, n + 1):
        e = RedBeatSchedulerEntry(f"bench-{g}", TASK, every_hour, app=app)
        e.last_run_at = now
        e.save()

    sch = RedBeatScheduler(app=app, lazy=True)
    started = time.perf_counter()
    sch.setup_schedule()
    sch.tick()
    startup = time.perf_counter() - started

    samples = []
    for _ in range(3000):
        t0 = time.perf_counter()
        sch.tick()
        samples.append(time.perf_counter() - t0)

    def make_due_entry(g: int) -> None:
        e = RedBeatSchedulerEntry.from_key(RedBeatSchedulerEntry.generate_key(app, f"bench-{g}"), app=app)
        e.reschedule(datetime.now(UTC) - timedelta(hours=2))

    for g in range(1, BURST + 1):
        make_due_entry(g)
    t0 = time.perf_counter()
    stop = threading.Event()
    loop = threading.Thread(target=run_loop, args=(sch.tick, stop), daemon=True)
    loop.start()
    burst = wait_broker(BURST)
    burst = min(burst, time.perf_counter() - t0)
    stop.set()
    loop.join(CAP_S)

    latency = change_latency(lambda k: make_due_entry(n - k), sch.tick)
    return {
        "system": "redbeat", "n": n, "startup_s": round(startup, 4), **ms_stats(samples),
        "publish_1000_s": round(burst, 4), "change_to_effect_s": latency, "rss_mb": rss_mb(),
    }


# --------------------------------------------------------------------------------------------
# burst: N rows with cron "0 * * * *" due at the same second
# --------------------------------------------------------------------------------------------


def _due_second(lead: float = 3.0) -> datetime:
    """A whole second ``lead`` seconds or more from now (naive UTC): when the burst falls due."""
    return (datetime.now(UTC) + timedelta(seconds=lead + 1)).replace(microsecond=0, tzinfo=None)


def _until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()))


def _burst_result(system: str, n: int, due: datetime, sent: int, done_at: float | None) -> dict[str, Any]:
    elapsed = None if done_at is None else done_at - due.replace(tzinfo=UTC).timestamp()
    return {
        "system": system, "n": n, "burst_s": float("inf") if elapsed is None else round(elapsed, 3),
        "runs_per_s": round(n / elapsed) if elapsed else round(sent / CAP_S), "sent": sent, "rss_mb": rss_mb(),
    }


def _watch_broker(n: int) -> tuple[int, float | None]:
    """Wait until ``n`` messages are in the broker (or CAP_S): how many, and when (epoch)."""
    started = time.monotonic()
    while True:
        count = broker_count()
        if count >= n:
            return count, time.time()
        if time.monotonic() - started > CAP_S:
            return count, None
        time.sleep(0.005)


def _process_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (Linux /proc; 0 for a pid that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def _redis_cpu_s() -> float:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _backend_pids(engine: Any) -> list[int]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return [int(p) for p in conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()]


class _Timer:
    """Cumulative CPU time of beat's threads in the functions it wraps (the dataforge burst's
    breakdown): thread CPU, not wall time, so waits and other processes on the machine do not
    count; database and broker are then the client's side of those round trips."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return real(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.thread_time() - t0

        setattr(owner, name, timed)


def burst_dataforge(n: int, db_url: str) -> dict[str, Any]:
    from sqlalchemy import text

    import dataforge.scheduler.beat as beat
    from dataforge.celery_app import create_app
    from dataforge.celery_scheduler import DatabaseScheduler
    from dataforge.models import Base
    from dataforge.scheduler.store import ScheduleStore
    from dataforge.settings import Settings

    flush_broker()
    settings = Settings.from_env(
        {"DATAFORGE_DATABASE_URL": db_url, "DATAFORGE_BROKER_URL": REDIS_URL, "DATAFORGE_RESULT_BACKEND": REDIS_URL,
         "DATAFORGE_REDIS_URL": REDIS_URL},
        cwd=Path(tempfile.mkdtemp()),
    )  # fmt: skip
    app = create_app(settings)
    app.task(name=TASK, shared=False)(noop)
    engine = app.runtime.db.engine
    Base.metadata.create_all(engine)
    due = _due_second(lead=max(3.0, n / 40_000))
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO scheduled_tasks (name, task_type, task_name, cron_expression, timezone, handler_kwargs, "
                 "status, max_retries, run_count, success_count, failure_count, created_at, updated_at, next_run_at, "
                 "overlap_policy, jitter_seconds, missed_count, skipped_count, expired_count, lost_count) "
                 "SELECT 'burst-' || g, 'cron', :task, '0 * * * *', 'UTC', '{}', 'active', 0, 0, 0, 0, now(), now(), "
                 ":due, 'skip', 0, 0, 0, 0, 0 FROM generate_series(1, :n) g"),
            {"task": TASK, "n": n, "due": due},
        )
        conn.execute(text("ANALYZE scheduled_tasks"))
    timer = _Timer()
    for name in ("fetch_due", "advance_many"):
        timer.wrap(ScheduleStore, name, "database")
    timer.wrap(beat, "plan_due_row", "planning")
    timer.wrap(DatabaseScheduler, "publish", "message building (celery + kombu)")
    timer.wrap(DatabaseScheduler, "_dispatch_batch", "batch total")
    real_batch = DatabaseScheduler.producer_for_batch

    def producer_for_batch(self: Any) -> Any:
        import contextlib

        @contextlib.contextmanager
        def timed() -> Any:
            with real_batch(self) as batch:
                def flush() -> None:
                    t0 = time.thread_time()
                    batch.flush()
                    spent = time.thread_time() - t0
                    timer.spent["broker (flushes)"] = timer.spent.get("broker (flushes)", 0.0) + spent

                yield beat.PublishBatch(batch.producer, batch.buffered, flush)

        return timed()

    DatabaseScheduler.producer_for_batch = producer_for_batch  # type: ignore[method-assign]
    sch = DatabaseScheduler(app=app)
    sch.tick_once()  # leader, first read: the burst is the next due time
    stop = threading.Event()
    loop = threading.Thread(target=run_loop, args=(sch.tick, stop), daemon=True)
    loop.start()
    # CPU seconds spent by each side during the burst: independent of what else runs on the
    # machine (wall time is not), so they say what a quiet machine would do.
    sch._pool = concurrent.futures.ThreadPoolExecutor(sch.dispatch_threads, thread_name_prefix="beat-dispatch")
    list(sch._pool.map(lambda _: engine.connect().close(), range(sch.dispatch_threads)))  # pool the connections
    backends = _backend_pids(engine)
    cpu_before = (time.process_time(), _process_cpu_s(backends), _redis_cpu_s())
    _until(due)
    sent, done_at = _watch_broker(n)
    stop.set()
    loop.join(60)
    result = _burst_result("dataforge", n, due, sent, done_at)
    backends = sorted(set(backends) | set(_backend_pids(engine)))
    cpu_after = (time.process_time(), _process_cpu_s(backends), _redis_cpu_s())
    cpu = dict(zip(("beat", "postgresql", "redis"), (b - a for a, b in zip(cpu_before, cpu_after, strict=True)),
                   strict=True))
    result["cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}
    result["cpu_us_per_run"] = {k: round(v / n * 1e6, 1) for k, v in cpu.items()}
    spent = dict(timer.spent)
    total = spent.pop("batch total", 0.0)
    commit_other = total - sum(spent.values())
    result["beat_cpu_s_in"] = {k: round(v, 3) for k, v in {**spent, "commit and the rest": commit_other}.items()}
    result["batches"] = -(-n // sch.batch_size)
    with engine.connect() as conn:
        advanced = conn.execute(text("SELECT count(*) FROM scheduled_tasks WHERE run_count = 1")).scalar()
    result["rows_advanced"] = advanced
    sch.close()
    app.runtime.close()
    return result


def burst_sqlalchemy_celery_beat(n: int, db_url: str) -> dict[str, Any]:
    from celery import Celery
    from sqlalchemy import text
    from sqlalchemy_celery_beat.models import PeriodicTaskChanged  # noqa: F401 (registers the model)
    from sqlalchemy_celery_beat.schedulers import DatabaseScheduler

    flush_broker()
    app = Celery("bench", broker=REDIS_URL)
    app.conf.update(beat_dburi="postgresql+psycopg://" + db_url.split("://", 1)[1], beat_max_loop_interval=5,
                    enable_utc=True, timezone="UTC")  # fmt: skip
    app.task(name=TASK, shared=False)(noop)
    sch = DatabaseScheduler(app=app, lazy=True)
    prefix = f"{sch.schema}." if sch.schema else ""
    with sch.engine.begin() as conn:
        cron_id = conn.execute(
            text(f"INSERT INTO {prefix}celery_crontabschedule (minute, hour, day_of_week, day_of_month, month_of_year, "
                 "timezone) VALUES ('0', '*', '*', '*', '*', 'UTC') RETURNING id")
        ).scalar_one()
        # Last run two hours ago: every entry is due at the next evaluation, all at once.
        conn.execute(
            text(f"INSERT INTO {prefix}celery_periodictask (name, task, args, kwargs, one_off, enabled, "
                 "total_run_count, description, discriminator, schedule_id, last_run_at, date_changed) "
                 "SELECT 'burst-' || g, :task, '[]', '{}', false, true, 0, '', 'crontabschedule', :sid, "
                 "now() - interval '2 hours', now() FROM generate_series(1, :n) g"),
            {"task": TASK, "n": n, "sid": cron_id},
        )
        conn.execute(text(f"ANALYZE {prefix}celery_periodictask"))
    due = _due_second(lead=1.0)
    _until(due)
    sch.setup_schedule()
    stop = threading.Event()
    loop = threading.Thread(target=run_loop, args=(sch.tick, stop), daemon=True)
    loop.start()
    sent, done_at = _watch_broker(n)
    stop.set()
    loop.join(CAP_S)
    return _burst_result("sqlalchemy-celery-beat", n, due, sent, done_at)


def burst_redbeat(n: int, db_url: str) -> dict[str, Any]:
    from celery import Celery
    from celery.schedules import crontab
    from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry

    flush_broker()
    app = Celery("bench", broker=REDIS_URL)
    app.conf.update(redbeat_redis_url=REDIS_URL, redbeat_key_prefix="bench-redbeat:", redbeat_lock_key=None,
                    beat_max_loop_interval=5, enable_utc=True, timezone="UTC")  # fmt: skip
    app.task(name=TASK, shared=False)(noop)
    hourly = crontab(minute=0)
    past = datetime.now(UTC) - timedelta(hours=2)
    for g in range(1, n + 1):
        entry = RedBeatSchedulerEntry(f"burst-{g}", TASK, hourly, app=app)
        entry.last_run_at = past
        entry.save()
    sch = RedBeatScheduler(app=app, lazy=True)
    due = _due_second(lead=1.0)
    _until(due)
    sch.setup_schedule()
    stop = threading.Event()
    loop = threading.Thread(target=run_loop, args=(sch.tick, stop), daemon=True)
    loop.start()
    sent, done_at = _watch_broker(n)
    stop.set()
    loop.join(CAP_S)
    return _burst_result("redbeat", n, due, sent, done_at)


# --------------------------------------------------------------------------------------------
# failover: real celery beat processes
# --------------------------------------------------------------------------------------------


def _leader_at(proc: Any, timeout: float) -> float:
    """monotonic() when ``proc`` logged that it leads."""
    proc.wait_for(r"is the leader now", timeout)
    return time.monotonic()


def failover(rounds: int) -> dict[str, Any]:
    """Kill -9 of the leader: standby takeover, and a restart on the same host. Seconds from the
    kill (default settings: a 10 s bound)."""
    from sqlalchemy import text

    from dataforge.db import Database
    from dataforge.models import Base
    from dataforge.settings import Settings
    from dataforge.tools.processes import CeleryProcess, beat_command

    db_url, drop = fresh_database()
    flush_broker()
    tmp = Path(tempfile.mkdtemp())
    settings = Settings.from_env(
        {"DATAFORGE_DATABASE_URL": db_url, "DATAFORGE_BROKER_URL": REDIS_URL, "DATAFORGE_RESULT_BACKEND": REDIS_URL,
         "DATAFORGE_REDIS_URL": REDIS_URL},
        cwd=tmp,
    )  # fmt: skip
    db = Database(settings.database_url)
    Base.metadata.create_all(db.engine)
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, "
            "status, max_retries, run_count, success_count, failure_count, created_at, updated_at) VALUES "
            "('every-second', 'interval', 'dataforge.example_cleanup', 1, 'UTC', '{}', 'active', 0, 0, 0, 0, "
            "now(), now())"
        ))
    db.dispose()
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get(
        "PYTHONPATH", "")) if p)}

    def start(name: str) -> Any:
        return CeleryProcess(name, beat_command(), env=env, cwd=tmp, stop_timeout=20).start()

    takeover, first_send, restart = [], [], []
    try:
        for k in range(rounds):
            leader, standby = start(f"a{k}"), None
            _leader_at(leader, 60)
            standby = start(f"b{k}")
            standby.wait_for(r"stands by", 60)
            leader.wait_for(r"Sending due task", 30, count=2)
            sent_before = len([line for line in standby.lines() if "Sending due task" in line])
            leader.kill()
            killed = time.monotonic()
            takeover.append(_leader_at(standby, 60) - killed)
            standby.wait_for(r"Sending due task", 30, count=sent_before + 1)
            first_send.append(time.monotonic() - killed)
            standby.kill()
            killed = time.monotonic()
            restarted = start(f"c{k}")
            restart.append(_leader_at(restarted, 60) - killed)
            restarted.stop()
            leader.stop()
            standby.stop()
    finally:
        drop()

    def stats(values: list[float]) -> dict[str, float]:
        return {"median_s": round(statistics.median(values), 2), "max_s": round(max(values), 2)}

    return {
        "rounds": rounds, "leader_ttl_s": settings.beat_leader_ttl,
        "standby_leads_after_kill_s": [round(v, 2) for v in takeover],
        "standby_first_send_after_kill_s": [round(v, 2) for v in first_send],
        "restarted_beat_leads_after_kill_s": [round(v, 2) for v in restart],
        "summary": {"takeover": stats(takeover), "first_send": stats(first_send), "restart": stats(restart)},
    }


CHILDREN: dict[str, Callable[[int, str], dict[str, Any]]] = {
    "dataforge": child_dataforge,
    "sqlalchemy-celery-beat": child_sqlalchemy_celery_beat,
    "redbeat": child_redbeat,
}

BURST_CHILDREN: dict[str, Callable[[int, str], dict[str, Any]]] = {
    "dataforge": burst_dataforge,
    "sqlalchemy-celery-beat": burst_sqlalchemy_celery_beat,
    "redbeat": burst_redbeat,
}

if __name__ == "__main__":
    main()
