"""Benchmark: upgrade and downgrade of a large legacy PostgreSQL database, step by step.

Builds a legacy database from the legacy contract's schema.postgresql.sql with 50,000 schedules and
1,000,000 executions (all the quirks: four handler_path spellings, task_name-only rows,
Python-repr / empty / 'null' kwargs, 10% of the rows in Python literals only Python can convert
(a tuple, a quote inside a string, 'True' inside a string), leaked _lock_key, legacy retries
sharing a celery_task_id), then times ``dataforge db check`` and every revision up to head and back to
the legacy baseline, and the rendering of the offline script from the legacy database
(``dataforge db sql --legacy-db``). Target: <= 60 s each way.

    python benchmarks/migration.py [--schedules 50000] [--executions 1000000] [--pg-url URL]

Prints a table and writes benchmarks/results/migration.json. Not a test: numbers depend on
the machine (docs/benchmarks.md has the ones measured).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from alembic import command

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataforge.settings import Settings  # noqa: E402
from migrations.config import alembic_config  # noqa: E402
from migrations.preflight import preflight  # noqa: E402

LEGACY_SCHEMA = (
    Path(os.environ.get("DATAFORGE_LEGACY_DIR", REPO / "tests" / "migrations" / "legacy_contract"))
    / "schema.postgresql.sql"
)
MAIN_LINE = [
    "0001_legacy_baseline", "0002_expand", "0003_data", "0004_contract", "0005_change_triggers",
    "0006_executions_hot_close", "0008_schedule_policies",
]


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    name = f"dfbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def fill_legacy(url: str, schedules: int, executions: int) -> None:
    """The legacy tables, filled set-based (generate_series) with every quirk of real rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LEGACY_SCHEMA.read_text(encoding="utf-8"))  # type: ignore[arg-type]
        # Integers inlined (no parameters): psycopg then sends the text as is, and `%` stays modulo.
        conn.execute(
            f"""
            INSERT INTO scheduled_tasks (name, task_type, task_name, handler_path, interval_seconds,
                                         cron_expression, timezone, handler_kwargs, status, next_run_at)
            SELECT 'job_' || g,
                   CASE WHEN g % 3 = 0 THEN 'cron' ELSE 'interval' END,
                   CASE WHEN g % 10 = 0 THEN 'dataforge.job_' || (g % 500)            -- moved already
                        WHEN g % 10 = 1 THEN 'dataforge.other_' || (g % 500) END,     -- both, disagreeing
                   CASE WHEN g % 10 = 0 THEN NULL
                        WHEN g % 200 = 7 THEN 'legacy.weird:thing'                    -- unrecognised
                        ELSE (ARRAY['scripts:job_', 'scripts.job_', 'scripts.job_', 'scripts/job_'])[g % 4 + 1]
                             || (g % 500) || (ARRAY['', '', ':run', '.py'])[g % 4 + 1] END,
                   CASE WHEN g % 3 = 0 THEN NULL ELSE 60 + g % 3600 END,
                   CASE WHEN g % 3 = 0 THEN '*/5 * * * *' END,
                   CASE WHEN g % 97 = 0 THEN 'Europe/Berlin' ELSE 'UTC' END,
                   CASE WHEN g % 10 = 5 THEN (ARRAY[                      -- 10%: only Python converts these
                          '{{''years'': (2021, ' || g || '), ''force'': False}}',
                          '{{''label'': "o''clock", ''n'': ' || g || '}}',
                          '{{''limits'': {{''soft'': 0.5}}, ''tags'': [''a'', ''b''], '
                            || '''note'': ''True story ' || g || '''}}',
                          '{{''sep'': ''"'', ''n'': ' || g || '}}'])[g / 10 % 4 + 1]
                        ELSE (ARRAY['{{}}', '{{"days": 7}}', '', 'null', '{{''days'': 7, ''full'': True}}',
                          '{{"_lock_key": "k", "scheduled_task_id": 1, "n": 1}}', '{{"a": [1, 2]}}',
                          '{{}}'])[g % 8 + 1] END,
                   CASE WHEN g % 200 = 7 THEN 'paused' WHEN g % 50 = 0 THEN 'disabled' ELSE 'active' END,
                   CASE WHEN g % 5 = 0 THEN NULL ELSE timestamp '2024-01-01' + g * interval '1 minute' END
            FROM generate_series(1, {int(schedules)}) AS g
            """  # type: ignore[arg-type]
        )
        conn.execute(
            f"""
            INSERT INTO task_executions (scheduled_task_id, celery_task_id, task_name, handler_path, status,
                                         started_at, finished_at, duration_ms, result, error)
            SELECT 1 + g % {int(schedules)},
                   CASE WHEN g % 50 = 0 THEN NULL ELSE 'c-' || (g - g % 10 * (g % 7 / 6)) END,  -- ~10% retries
                   'execute_scheduled_task', 'scripts:job_' || (g % 500),
                   (ARRAY['success', 'success', 'success', 'failure', 'running'])[g % 5 + 1],
                   timestamp '2024-01-01' + g * interval '1 second',
                   timestamp '2024-01-01' + g * interval '1 second' + interval '2 seconds',
                   2000, '{{"ok": true}}', NULL
            FROM generate_series(1, {int(executions)}) AS g
            """  # type: ignore[arg-type]
        )
        conn.execute("ANALYZE")


def timed(label: str, fn: Any) -> dict[str, Any]:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"  {label:<48} {seconds:8.2f} s", flush=True)
    return {"step": label, "seconds": round(seconds, 3)}


def run(admin_url: str, schedules: int, executions: int) -> dict[str, Any]:
    with scratch_database(admin_url) as url:
        t0 = time.perf_counter()
        fill_legacy(url, schedules, executions)
        print(f"legacy database: {schedules} schedules, {executions} executions ({time.perf_counter() - t0:.1f} s)")
        settings = Settings.from_env({"DATAFORGE_DATABASE_URL": url})
        x = {"on_unmappable": "pause"}
        report: dict[str, Any] = {}
        check = timed("dataforge db check (preflight)", lambda: report.update(r=preflight(settings, x)[0]))
        groups = {code: report["r"].count(code) for code in report["r"].groups}
        script = io.StringIO()
        offline_cfg = alembic_config(settings, x_args={**x, "legacy_db": url}, output=script)
        render = timed(
            "dataforge db sql --legacy-db (render, reads the rows)",
            lambda: command.upgrade(offline_cfg, "base:head", sql=True),
        )
        up, down = [], []
        previous = "legacy"
        for rev in MAIN_LINE:
            cfg = alembic_config(settings, x_args=x)
            up.append(timed(f"upgrade {previous} -> {rev}", lambda cfg=cfg, rev=rev: command.upgrade(cfg, rev)))
            previous = rev
        for target in [*reversed(MAIN_LINE[:-1])]:
            cfg = alembic_config(settings, x_args=x)
            down.append(timed(f"downgrade {previous} -> {target}", lambda cfg=cfg, t=target: command.downgrade(cfg, t)))
            previous = target
        return {
            "schedules": schedules,
            "executions": executions,
            "check": check,
            "check_groups": groups,
            "offline_render": {**render, "script_bytes": len(script.getvalue().encode())},
            "upgrade": up,
            "downgrade": down,
            "upgrade_total_seconds": round(sum(s["seconds"] for s in up), 3),
            "downgrade_total_seconds": round(sum(s["seconds"] for s in down), 3),
            "target_seconds_each_way": 60,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=50_000)
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument(
        "--pg-url", default=os.environ.get("DATAFORGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="an admin connection; a scratch database is created next to it and dropped after",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "migration.json")
    args = parser.parse_args()
    result = run(args.pg_url, args.schedules, args.executions)
    result["command"] = "python benchmarks/migration.py " + " ".join(sys.argv[1:])
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    print(f"total: up {result['upgrade_total_seconds']:.2f} s, down {result['downgrade_total_seconds']:.2f} s "
          f"(target <= {result['target_seconds_each_way']} s each way)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
