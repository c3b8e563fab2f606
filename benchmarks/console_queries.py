"""Benchmark: the web console's queries at a million schedules and a million executions.

    python benchmarks/console_queries.py                  # 1,000,000 + 1,000,000 rows
    python benchmarks/console_queries.py --rows 100000    # a quick run

Fills a fresh PostgreSQL database server-side (tests/dataforge/web/plans.py: 2% paused
schedules, 0.1% flagged invalid, a rare task every 997th row; executions one second apart, 1%
failures, one schedule with a fifth of them), then runs every query that a console page or
API call sends (captured as sent, the same list tests/dataforge/web/test_query_plans.py
checks) under ``EXPLAIN (ANALYZE, FORMAT JSON)``: server time, rows the scans read, scan kinds.
Each call is run ``--repeat`` times and the best is kept. Also times the metrics scrape (every
query of one ``/metrics``, with the status counts it re-reads at most every 15 s).

Writes benchmarks/results/console_queries.json. ``DATAFORGE_BENCH_PG_URL``: admin URL (default
the test server).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from dataforge.db import Database  # noqa: E402
from dataforge.models import Base  # noqa: E402
from dataforge.settings import Settings  # noqa: E402
from dataforge.web.metrics import ConsoleCollector  # noqa: E402
from tests.dataforge.web import test_query_plans  # noqa: E402
from tests.dataforge.web.plans import captured, explain, fill  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "console_queries.json"
PG_ADMIN = os.environ.get("DATAFORGE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def measure(db: Database, call: Any, repeat: int) -> dict[str, Any]:
    best: dict[str, Any] | None = None
    for _ in range(repeat):
        with captured(db.engine) as statements:
            started = time.perf_counter()
            call()
            wall = (time.perf_counter() - started) * 1000
        plans = explain(db.engine, statements)
        run = {
            "wall_ms": round(wall, 2),
            "server_ms": round(sum(p.ms for p in plans), 3),
            "rows_read": sum(p.rows_read for p in plans),
            "statements": len(plans),
            "scans": sorted({f"{relation}: {kind}" for p in plans for relation, kind in p.scans}),
        }
        if best is None or run["wall_ms"] < best["wall_ms"]:
            best = run
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="schedules and executions each")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    name = f"dfbench_console_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    try:
        Base.metadata.create_all(db.engine)
        started = time.perf_counter()
        fill(db.engine, args.rows, args.rows)
        fill_s = time.perf_counter() - started
        test_query_plans.MILLION = args.rows  # the calls' cursors are relative to the table size
        results: dict[str, Any] = {}
        for label, call in test_query_plans.CALLS.items():
            results[label] = measure(db, lambda c=call: c(db), args.repeat)
            r = results[label]
            print(f"{label:26} {r['wall_ms']:8.2f} ms wall {r['server_ms']:8.3f} ms server "
                  f"{r['rows_read']:7d} rows  {', '.join(r['scans'])}")
        settings = Settings.from_env({"DATAFORGE_DATABASE_URL": url}, cwd=Path(tempfile.gettempdir()))
        collector = ConsoleCollector(db, settings, refresh_every=0)
        list(collector.collect())
        for label, refresh in (("metrics scrape (status counts re-read)", 0.0), ("metrics scrape (cached)", 3600.0)):
            collector.refresh_every = refresh
            results[label] = measure(db, lambda: list(collector.collect()), args.repeat)
            r = results[label]
            print(f"{label:26} {r['wall_ms']:8.2f} ms wall {r['server_ms']:8.3f} ms server {r['rows_read']:7d} rows")
    finally:
        db.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python benchmarks/console_queries.py" + (f" --rows {args.rows}" if args.rows != 1_000_000 else ""),
        "machine": f"{os.cpu_count()} cpu, python {platform.python_version()}",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "fill_s": round(fill_s, 1),
        "results": results,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
