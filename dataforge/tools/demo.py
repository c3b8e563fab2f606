"""``dataforge demo``: the whole migration, run end to end on a copy of the example backend.

The demo is the main job of the toolkit, shown the way a user runs it: every step is a real
``dataforge`` command in a child process (what a person would type), against a throw-away
workspace, with real ``celery worker`` and ``celery beat`` processes:

1. copy ``examples/legacy_backend`` and build its legacy database (the baseline schema, rows
   with every legacy quirk);
2. ``dataforge convert --diff``, then ``dataforge convert`` (the jobs, and the legacy app's own
   files: the executor renamed for rollback, the duplicate signal handlers gone);
3. ``dataforge db check`` and ``dataforge db upgrade``;
4. worker + beat on the unified runtime, a live table of executions;
5. rollback: ``dataforge db downgrade`` to the expand schema + ``dataforge legacy enable``,
   the same schedules running through ``execute_scheduled_task``;
6. ``dataforge legacy disable`` + ``dataforge db upgrade`` again, unified runs resume;
7. a summary of what ran in each mode;
8. with ``serve_port``: worker, beat and ``dataforge serve`` stay up on the upgraded database,
   so the schedules and their runs can be looked at in a browser, until Ctrl-C.

Steps never raise past :meth:`Demo.run`: each returns a :class:`StepResult`, and the first
failed step ends the demo with its name and output. Every child process is stopped on the
way out, Ctrl-C included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import text

from dataforge.db import Database
from dataforge.settings import Settings
from dataforge.tools.errors import ProcessError, StepFailed
from dataforge.tools.processes import CeleryProcess, beat_command, worker_command

__all__ = ["Demo", "DemoObserver", "DemoOptions", "DemoReport", "ModeSummary", "StepResult", "find_examples"]

#: The revision the rollback goes back to: the additive schema stays (the unified runtime keeps
#: working), the data and contract steps are undone, so every row has its handler_path again.
ROLLBACK_REVISION = "0002_expand"


def find_examples() -> Path | None:
    """``examples/legacy_backend`` of the source checkout this package runs from."""
    candidate = Path(__file__).resolve().parents[2] / "examples" / "legacy_backend"
    return candidate if (candidate / "scripts").is_dir() else None


@dataclass(frozen=True)
class DemoOptions:
    """What ``dataforge demo`` was asked to do. URLs left ``None`` use the embedded defaults."""

    examples: Path
    seconds_per_mode: float = 20.0
    database_url: str | None = None
    broker_url: str | None = None
    redis_url: str | None = None
    workspace: Path | None = None
    keep_workspace: bool = False
    #: Leave the web console up on this port at the end (``dataforge demo --serve``).
    serve_port: int | None = None
    #: How long the console stays up; ``None``: until Ctrl-C.
    serve_seconds: float | None = None


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class ModeSummary:
    """Executions recorded while one mode ran: (task name, state) -> count."""

    mode: str
    counts: dict[tuple[str, str], int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, state: str) -> int:
        return sum(n for (_, s), n in self.counts.items() if s == state)


@dataclass
class DemoReport:
    steps: list[StepResult] = field(default_factory=list)
    modes: list[ModeSummary] = field(default_factory=list)
    workspace: Path | None = None

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps) and bool(self.steps)

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)


class DemoObserver(Protocol):
    """Lifecycle seam: the CLI renders these events; tests record them."""

    def on_step_started(self, name: str, command: str | None) -> None: ...

    def on_step_finished(self, result: StepResult) -> None: ...

    def on_output(self, text: str) -> None: ...

    def on_executions(self, mode: str, rows: list[dict[str, object]], remaining: float) -> None: ...


#: Sample schedules of the legacy database: every handler_path spelling and kwargs quirk that
#: real legacy rows have. Short intervals so each mode shows runs.
LEGACY_ROWS: tuple[tuple[str, str, str | None, str | None, int, str, str], ...] = (
    # name, task_type, task_name, handler_path, interval_seconds, handler_kwargs, status
    ("sync_accounts_every_3s", "interval", None, "scripts:sync_accounts", 3, '{"days": 3}', "active"),
    # `def run()` takes nothing: the legacy executor's injected _lock_key broke it in production.
    ("cleanup_every_4s", "interval", None, "scripts.cleanup_temp_files", 4, '{"_lock_key": "copied"}', "active"),
    ("daily_report_every_5s", "interval", None, "scripts.daily_report:run", 5, "{'currency': 'USD'}", "active"),
    ("rates_every_4s", "interval", None, "scripts/refresh_exchange_rates.py", 4, "", "active"),
    ("reminders_every_5s", "interval", None, "scripts:send_reminders", 5, "null", "active"),
    ("retired_job", "interval", None, "scripts:no_such_job", 60, "{}", "paused"),
)


def _legacy_app_lines(report_file: Path) -> list[str]:
    """What the conversion did to the legacy app's own files, one line each, from the JSON report."""
    report = json.loads(report_file.read_text(encoding="utf-8"))
    deleted = {op["path"] for op in report["operations"] if op["op"] == "delete"}
    lines = [f"legacy app/ (the design's file change list; every note in {report_file.name}):"]
    for f in report["files"]:
        path = f["path"]
        if not path.startswith("app/") or path.startswith("app/tasks/"):
            continue
        if f["target"]:
            what = f"-> {f['target']} (kept for rollback only)"
        elif path in deleted:
            what = "deleted"
        else:
            what = {"changed": "converted", "skipped": "reported, unchanged"}.get(f["status"], f["status"])
        lines.append(f"  {path} {what}")
    return lines


class Demo:
    """Runs the demo steps in order; see the module docstring."""

    def __init__(self, options: DemoOptions, observer: DemoObserver) -> None:
        self.options = options
        self.observer = observer
        self.report = DemoReport()
        self._stack = ExitStack()
        self._processes: list[CeleryProcess] = []
        self._mode_start_id = 0

    # -- public --------------------------------------------------------------------------------
    def run(self) -> DemoReport:
        try:
            with self._stack:
                self._prepare_workspace()
                for name, command, action in self._plan():
                    if not self._step(name, command, action):
                        break
        except KeyboardInterrupt:
            self.report.steps.append(StepResult("interrupted (Ctrl-C)", False, 0.0, "stopped by the user"))
        finally:
            self._stop_processes()
        return self.report

    # -- plan ----------------------------------------------------------------------------------
    def _plan(self) -> list[tuple[str, str | None, Callable[[], str]]]:
        backend = "backend/"
        plan: list[tuple[str, str | None, Callable[[], str]]] = [
            ("build the legacy database", None, self._build_legacy_database),
            ("preview the conversion", f"dataforge convert {backend} --diff", self._convert_diff),
            ("convert scripts/ into registered tasks", f"dataforge convert {backend}", self._convert),
            ("preflight the data migration", "dataforge db check", self._db_check),
            ("upgrade the database", "dataforge db upgrade", self._db_upgrade),
            ("run on the unified runtime", "celery worker + celery beat", lambda: self._run_mode("unified")),
            (
                "roll back: downgrade + legacy switch",
                f"dataforge db downgrade {ROLLBACK_REVISION} && dataforge legacy enable",
                self._rollback,
            ),
            ("run the legacy way (compat shim)", "celery worker + celery beat", lambda: self._run_mode("legacy")),
            ("upgrade again", "dataforge legacy disable && dataforge db upgrade", self._upgrade_again),
            ("run on the unified runtime again", "celery worker + celery beat", lambda: self._run_mode("again")),
        ]
        if self.options.serve_port is not None:
            plan.append(("leave the console up", f"dataforge serve --port {self.options.serve_port}", self._serve))
        return plan

    def _step(self, name: str, command: str | None, action: Callable[[], str]) -> bool:
        self.observer.on_step_started(name, command)
        started = time.monotonic()
        try:
            detail = action()
            result = StepResult(name, True, time.monotonic() - started, detail)
        except StepFailed as exc:
            result = StepResult(name, False, time.monotonic() - started, exc.detail)
        except ProcessError as exc:
            result = StepResult(name, False, time.monotonic() - started, str(exc))
        self.report.steps.append(result)
        self.observer.on_step_finished(result)
        return result.ok

    # -- workspace and settings ----------------------------------------------------------------
    def _prepare_workspace(self) -> None:
        if self.options.workspace is not None:
            self.workspace = self.options.workspace.resolve()
            self.workspace.mkdir(parents=True, exist_ok=True)
        else:
            self.workspace = Path(tempfile.mkdtemp(prefix="dataforge-demo-"))
            if not self.options.keep_workspace:
                self._stack.callback(shutil.rmtree, self.workspace, True)
        self.report.workspace = self.workspace
        self.backend = self.workspace / "backend"
        if self.backend.exists():
            shutil.rmtree(self.backend)
        shutil.copytree(
            self.options.examples, self.backend, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.db")
        )
        env = {
            "DATAFORGE_TASK_PACKAGES": "app.tasks",
            # Short beat intervals: the demo is measured in seconds, not minutes.
            "DATAFORGE_BEAT_MAX_INTERVAL": "1",
            "DATAFORGE_BEAT_LEADER_TTL": "5",
            "DATAFORGE_LOCK_TTL": "10",
        }
        if self.options.database_url:
            env["DATAFORGE_DATABASE_URL"] = self.options.database_url
        if self.options.broker_url:
            env["DATAFORGE_BROKER_URL"] = self.options.broker_url
            env["DATAFORGE_RESULT_BACKEND"] = self.options.broker_url
        if self.options.redis_url:
            env["DATAFORGE_REDIS_URL"] = self.options.redis_url
        self._use_settings(Settings.from_env(env, cwd=self.workspace))
        self.db = Database(self.settings.database_url)
        self._stack.callback(self.db.dispose)

    def _use_settings(self, settings: Settings) -> None:
        """Settings of every child process from now on (the map file exists only after convert)."""
        self.settings = settings
        child = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
        child.update(settings.as_env())
        child["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.backend), child.get("PYTHONPATH", "")) if p)
        child["PYTHONUNBUFFERED"] = "1"
        self.child_env = child

    # -- commands ------------------------------------------------------------------------------
    def _dataforge(self, *args: str, ok_codes: Sequence[int] = (0,)) -> str:
        argv = [sys.executable, "-m", "dataforge", *args]
        proc = subprocess.run(
            argv, cwd=self.workspace, env=self.child_env, capture_output=True, text=True, errors="replace", timeout=300
        )
        output = (proc.stdout + proc.stderr).strip()
        if proc.returncode not in ok_codes:
            raise StepFailed(f"`dataforge {' '.join(args)}` exited {proc.returncode}:\n{output}")
        return output

    def _show(self, output: str, limit: int = 40) -> str:
        lines = output.splitlines()
        shown = "\n".join(lines[:limit])
        if len(lines) > limit:
            shown += f"\n... ({len(lines) - limit} more lines)"
        self.observer.on_output(shown)
        return shown

    def _build_legacy_database(self) -> str:
        self._dataforge("db", "upgrade", "0001_legacy_baseline")
        with self.db.session() as session:
            for name, task_type, task_name, handler_path, interval, kwargs, status in LEGACY_ROWS:
                session.execute(
                    text(
                        "INSERT INTO scheduled_tasks (name, task_type, task_name, handler_path, "
                        "interval_seconds, handler_kwargs, status) VALUES "
                        "(:name, :task_type, :task_name, :handler_path, :interval, :kwargs, :status)"
                    ),
                    {
                        "name": name, "task_type": task_type, "task_name": task_name,
                        "handler_path": handler_path, "interval": interval, "kwargs": kwargs, "status": status,
                    },
                )  # fmt: skip
        return self._show(f"{len(LEGACY_ROWS)} legacy schedules in {self._redacted_db()}")

    def _convert_diff(self) -> str:
        out = self._dataforge("convert", str(self.backend), "--diff", "--quiet", ok_codes=(0, 1))
        files = sum(1 for line in out.splitlines() if line.startswith("+++ "))
        self._show(out, limit=30)
        return f"{files} files would change (nothing written yet)"

    def _convert(self) -> str:
        report_file = self.workspace / "convert-report.json"
        out = self._dataforge("convert", str(self.backend), "--report", str(report_file))
        map_file = self.backend / "dataforge-handler-map.json"
        if not map_file.is_file():
            raise StepFailed(f"convert wrote no map file at {map_file}")
        self._use_settings(self.settings.with_(legacy_map_file=map_file))
        return self._show("\n".join([*out.splitlines()[-1:], *_legacy_app_lines(report_file)]))

    def _db_check(self) -> str:
        return self._show(self._dataforge("db", "check"))

    def _db_upgrade(self) -> str:
        return self._show(self._dataforge("db", "upgrade"))

    def _rollback(self) -> str:
        out = self._dataforge("db", "downgrade", ROLLBACK_REVISION)
        out += "\n" + self._dataforge("legacy", "enable")
        return self._show(out)

    def _upgrade_again(self) -> str:
        out = self._dataforge("legacy", "disable")
        out += "\n" + self._dataforge("db", "upgrade")
        return self._show(out)

    # -- running modes ---------------------------------------------------------------------------
    def _start(self, name: str, argv: list[str]) -> CeleryProcess:
        proc = CeleryProcess(
            name, argv, env=self.child_env, cwd=self.workspace, log_file=self.workspace / f"{name}.log",
            stop_timeout=20,
        )  # fmt: skip
        self._processes.append(proc)
        proc.start()
        return proc

    def _stop_processes(self) -> None:
        while self._processes:
            self._processes.pop().stop()

    def _run_mode(self, mode: str) -> str:
        first_id = self._max_execution_id() + 1
        worker = self._start(f"worker-{mode}", worker_command(concurrency=2, loglevel="INFO"))
        worker.wait_ready(90)
        beat = self._start(f"beat-{mode}", beat_command(loglevel="INFO"))
        beat.wait_ready(60)
        deadline = time.monotonic() + self.options.seconds_per_mode
        while (remaining := deadline - time.monotonic()) > 0:
            self.observer.on_executions(mode, self._recent_executions(first_id), remaining)
            if not worker.alive() or not beat.alive():
                dead = worker if not worker.alive() else beat
                raise StepFailed(f"{dead.name} exited early:\n" + "\n".join(dead.lines()[-30:]))
            time.sleep(min(1.0, remaining))
        beat.stop()
        worker.stop()
        self._processes.clear()
        summary = ModeSummary(mode, self._counts(first_id))
        self.report.modes.append(summary)
        if summary.count("success") == 0:
            raise StepFailed(f"no successful execution recorded in {self.options.seconds_per_mode:.0f}s")
        return f"{summary.total} executions, {summary.count('success')} successful"

    def _serve(self) -> str:
        """Worker, beat and the console on the upgraded database, until Ctrl-C (or serve_seconds)."""
        port = self.options.serve_port
        worker = self._start("worker-console", worker_command(concurrency=2, loglevel="INFO"))
        beat = self._start("beat-console", beat_command(loglevel="INFO"))
        console = self._start("console", [sys.executable, "-m", "dataforge", "serve", "--port", str(port)])
        worker.wait_ready(90)
        beat.wait_ready(60)
        console.wait_for(r"Uvicorn running on", 60)
        self.observer.on_output(
            f"console: http://127.0.0.1:{port}/ (schedules, executions live, tasks, the legacy switch); "
            f"worker and beat keep running: Ctrl-C stops everything"
        )
        started = time.monotonic()
        limit = self.options.serve_seconds
        try:
            while limit is None or time.monotonic() - started < limit:
                for proc in (worker, beat, console):
                    if not proc.alive():
                        raise StepFailed(f"{proc.name} exited early:\n" + "\n".join(proc.lines()[-30:]))
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_processes()
        return f"console served for {time.monotonic() - started:.0f}s"

    # -- queries -------------------------------------------------------------------------------
    def _max_execution_id(self) -> int:
        with self.db.session() as session:
            return int(session.execute(text("SELECT COALESCE(MAX(id), 0) FROM task_executions")).scalar_one())

    def _recent_executions(self, first_id: int, limit: int = 12) -> list[dict[str, object]]:
        with self.db.session() as session:
            rows = session.execute(
                text(
                    "SELECT e.id, s.name AS schedule, e.task_name, e.attempt, e.status, e.started_at, "
                    "e.duration_ms, e.error FROM task_executions e "
                    "LEFT JOIN scheduled_tasks s ON s.id = e.scheduled_task_id "
                    "WHERE e.id >= :first ORDER BY e.id DESC LIMIT :limit"
                ),
                {"first": first_id, "limit": limit},
            ).mappings()
            return [dict(row) for row in rows]

    def _counts(self, first_id: int) -> dict[tuple[str, str], int]:
        with self.db.session() as session:
            rows = session.execute(
                text(
                    "SELECT task_name, status, COUNT(*) FROM task_executions WHERE id >= :first "
                    "GROUP BY task_name, status ORDER BY task_name, status"
                ),
                {"first": first_id},
            ).all()
        return {(str(name), str(status)): int(n) for name, status, n in rows}

    def _redacted_db(self) -> str:
        url = self.settings.database_url
        return url.split("@")[-1] if "@" in url else url

