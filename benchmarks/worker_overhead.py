"""Worker overhead: plain Celery tasks vs DataForgeTask (lock + recording), same worker, same run.

A real ``celery worker`` (prefork, concurrency 2) on Redis (broker, results, locks) +
PostgreSQL (executions, counters). For each block and kind, the worker's consumer is paused,
the block's messages are queued (one per schedule row, so every DataForgeTask run takes its
own lock and bumps its own row's counters), the consumer is resumed and the clock runs until
every result is stored. Blocks alternate kinds in ABBA order, so load from other processes
hits both kinds alike; the ratio is reported overall and as the median of per-block ratios.

The peer a user would pick instead for a history of runs, ``celery_sqla``: plain Celery with
Celery's own SQLAlchemy result backend on the same PostgreSQL (``db+postgresql+psycopg://``),
run by a second worker of the same shape (benchmarks/worker_overhead_peer.py) on its own
queue, in the same ABBA rotation.

    python benchmarks/worker_overhead.py                 # 2,000 tasks per kind, in 10 blocks
    python benchmarks/worker_overhead.py --breakdown     # + lock-only and recording-only tasks
    python benchmarks/worker_overhead.py --tasks 400 --blocks 2

Prints tasks/s and the ratios; writes benchmarks/results/worker_overhead.json. Uses a fresh
PostgreSQL database (dropped afterwards) and FLUSHES the given Redis db.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from celery import Celery  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from dataforge.celery_app import create_app  # noqa: E402
from dataforge.models import Base, ScheduledTask  # noqa: E402
from dataforge.settings import Settings  # noqa: E402
from dataforge.tools.processes import CeleryProcess, worker_command  # noqa: E402

KINDS = {"plain": "bench.plain", "dataforge": "bench.dataforge"}
#: Run by the peer worker (plain Celery, results in PostgreSQL), on its own queue.
PEER = {"celery_sqla": "bench.peer"}
PEER_QUEUE = "peer"
#: --breakdown adds these: where the DataForgeTask cost goes.
BREAKDOWN = {"bare": "bench.bare", "lock_only": "bench.lock_only", "record_only": "bench.record_only"}
QUEUE = "celery"


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"dfbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_batch(app: Celery, hostname: str, task_name: str, n: int, timeout: float, *, queue: str = QUEUE,
              peer_db: str | None = None) -> float:
    """Queue ``n`` messages with the consumer paused, resume it, time until all are stored
    (in Redis; for the peer, in its PostgreSQL result table)."""
    replies = app.control.cancel_consumer(queue, reply=True, destination=[hostname], timeout=10)
    if not replies:
        raise RuntimeError(f"worker {hostname} did not answer cancel_consumer")
    ids = [app.send_task(task_name, kwargs={"scheduled_task_id": i + 1}, queue=queue).id for i in range(n)]
    start = time.perf_counter()
    app.control.add_consumer(queue, reply=True, destination=[hostname], timeout=10)
    deadline = time.monotonic() + timeout
    if peer_db is not None:
        import psycopg

        with psycopg.connect(peer_db, autocommit=True) as conn:
            while True:
                done = conn.execute(
                    "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS' AND task_id = ANY(%s)", (ids,)
                ).fetchone()
                if done is not None and done[0] == n:
                    return time.perf_counter() - start
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{n - (done[0] if done else 0)} of {n} {task_name} results missing")
                time.sleep(0.05)
    client = app.backend.client
    keys = {app.backend.get_key_for_task(task_id): task_id for task_id in ids}
    pending = list(keys)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} of {n} {task_name} results missing after {timeout}s")
        values = client.mget(pending)
        pending = [k for k, v in zip(pending, values, strict=True) if v is None or b'"SUCCESS"' not in v]
        if pending:
            time.sleep(0.05)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=10, help="the tasks of each kind are sent in this many blocks")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--breakdown", action="store_true",
                        help="also run DataForgeTask without lock and recording, lock-only and recording-only")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/1", help="a db number it may FLUSH")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "worker_overhead.json")
    args = parser.parse_args(argv)

    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    load_before = os.getloadavg()
    blocks: list[dict[str, Any]] = []
    with fresh_database(args.pg_admin_url) as db_url, tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(
            {
                "DATAFORGE_DATABASE_URL": db_url,
                "DATAFORGE_BROKER_URL": args.redis_url,
                "DATAFORGE_RESULT_BACKEND": args.redis_url,
                "DATAFORGE_REDIS_URL": args.redis_url,
                "DATAFORGE_TASK_PACKAGES": "worker_overhead_tasks",
            },
            cwd=Path(tmp),
        )
        sys.path.insert(0, str(HERE))
        app = create_app(settings)
        Base.metadata.create_all(app.runtime.db.engine)
        with app.runtime.db.engine.begin() as conn:
            conn.execute(
                insert(ScheduledTask),
                [{"name": f"bench-{i + 1}", "task_type": "interval", "interval_seconds": 3600,
                  "task_name": "bench.dataforge"} for i in range(args.tasks)],
            )  # fmt: skip
        hostname = f"bench-{uuid.uuid4().hex[:6]}@localhost"
        peer_host = f"peer-{uuid.uuid4().hex[:6]}@localhost"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
        env.update(settings.as_env())
        env["PYTHONPATH"] = f"{HERE}:{REPO}"
        peer_results = "db+" + db_url.replace("postgresql://", "postgresql+psycopg://", 1)
        peer_env = {**env, "BENCH_BROKER_URL": args.redis_url, "BENCH_RESULT_BACKEND": peer_results}
        cmd = worker_command(concurrency=args.concurrency, hostname=hostname, loglevel=args.loglevel)
        peer_cmd = worker_command("worker_overhead_peer", concurrency=args.concurrency, hostname=peer_host,
                                  loglevel=args.loglevel, queues=[PEER_QUEUE])  # fmt: skip
        kinds = {**KINDS, **PEER, **(BREAKDOWN if args.breakdown else {})}
        per_block = max(1, args.tasks // args.blocks)

        def batch(kind: str, name: str, n: int, timeout: float) -> float:
            if kind in PEER:
                return run_batch(app, peer_host, name, n, timeout, queue=PEER_QUEUE, peer_db=db_url)
            return run_batch(app, hostname, name, n, timeout)

        with CeleryProcess("bench-worker", cmd, env=env, cwd=tmp, stop_timeout=10) as worker, \
                CeleryProcess("bench-peer", peer_cmd, env=peer_env, cwd=tmp, stop_timeout=10) as peer:
            worker.wait_ready(120)
            peer.wait_ready(120)
            for kind, name in kinds.items():  # warm up children, pools, scripts, the peer's table
                batch(kind, name, 100, timeout=120)
            for b in range(args.blocks):
                # ABBA order: a load spike or drift hits every kind about equally.
                order = list(kinds.items()) if b % 2 == 0 else list(reversed(kinds.items()))
                for kind, name in order:
                    seconds = batch(kind, name, per_block, timeout=600)
                    blocks.append({"block": b, "kind": kind, "tasks": per_block, "seconds": round(seconds, 4)})
                print(f"block {b + 1}/{args.blocks}: " + ", ".join(
                    f"{x['kind']} {x['tasks'] / x['seconds']:.0f}/s" for x in blocks if x["block"] == b
                ), flush=True)  # fmt: skip
        app.runtime.close()

    def rate(kind: str) -> float:
        """Overall tasks/s of one kind: all its tasks over all its time."""
        mine = [x for x in blocks if x["kind"] == kind]
        return sum(x["tasks"] for x in mine) / sum(x["seconds"] for x in mine)

    def block_ratios(kind: str, against: str = "plain") -> list[float]:
        """Per block, kind's rate over ``against``'s rate in the same block (adjacent in time)."""
        out = []
        for b in range(args.blocks):
            pair = {x["kind"]: x["tasks"] / x["seconds"] for x in blocks if x["block"] == b}
            out.append(pair[kind] / pair[against])
        return out

    kinds_run = sorted({x["kind"] for x in blocks})
    result = {
        "benchmark": "worker_overhead",
        "command": "python benchmarks/worker_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            # Other processes on the machine skew absolute rates; blocks alternate kinds (ABBA)
            # so the ratio is much less affected. Load average before and after the run:
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },  # fmt: skip
        "params": {"tasks_per_kind": per_block * args.blocks, "blocks": args.blocks, "concurrency": args.concurrency,
                   "pool": "prefork", "loglevel": args.loglevel, "broker": "redis", "results": "redis",
                   "locks": "redis", "database": "postgresql",
                   "peer": "celery_sqla: plain Celery, results in PostgreSQL (db+postgresql+psycopg)"},  # fmt: skip
        "tasks_per_s": {k: round(rate(k), 1) for k in kinds_run},
        "ratio": round(rate("dataforge") / rate("plain"), 3),
        "ratio_median_of_blocks": round(statistics.median(block_ratios("dataforge")), 3),
        "ratio_vs_celery_sqla": round(rate("dataforge") / rate("celery_sqla"), 3),
        "ratio_vs_celery_sqla_median_of_blocks": round(statistics.median(block_ratios("dataforge", "celery_sqla")), 3),
        "breakdown_ratio_median_of_blocks": {
            k: round(statistics.median(block_ratios(k)), 3) for k in kinds_run if k not in KINDS
        },
        "target_ratio": 0.8,
        "blocks": blocks,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"tasks/s: {result['tasks_per_s']}")
    print(f"ratio dataforge/plain: {result['ratio']} overall, {result['ratio_median_of_blocks']} median of blocks "
          f"(target >= 0.8); dataforge/celery_sqla: {result['ratio_vs_celery_sqla']} overall, "
          f"{result['ratio_vs_celery_sqla_median_of_blocks']} median of blocks; "
          f"breakdown {result['breakdown_ratio_median_of_blocks']} -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
