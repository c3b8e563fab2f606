"""``dataforge convert`` and ``dataforge verify``: the codemod's command line.

``convert`` behaves like black / ruff / libcst.tool: it writes by default; ``--diff`` prints a
unified diff and writes nothing; ``--check`` writes nothing and exits 1 when something would
change. Exit 2 for bad input: a folder that holds neither ``scripts/`` nor the tasks package,
or any file refused or failed (the other files are still converted); 3 when the write phase
failed (disk, permissions: everything was rolled back). Diffs go to stdout; the summary and
the progress bar go to stderr, so ``--diff`` output can be piped to ``git apply``. See
docs/codemod.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console

from dataforge.cli.common import CliContext, emit_json, json_option, pass_cli
from dataforge.cli.exits import Exit
from refactor_tool.errors import RefactorError
from refactor_tool.options import DEFAULT_BASE_IMPORT, DEFAULT_CELERY_APP_IMPORT, ConvertOptions, ImportTarget
from refactor_tool.runner import NothingToConvert, Progress
from refactor_tool.writes import WriteInterrupted, atomic_write

__all__ = ["convert", "verify"]

#: The shell's status for a process ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def _options(
    cli: CliContext,
    tasks_package: str,
    celery_app_import: str,
    base_import: str,
    keep_scripts: bool,
    app_files: bool = True,
) -> ConvertOptions:
    try:
        return ConvertOptions(
            tasks_package=tasks_package,
            celery_app_import=ImportTarget.parse(celery_app_import),
            base_import=ImportTarget.parse(base_import),
            scripts_package=cli.settings.scripts_package,
            keep_scripts=keep_scripts,
            app_files=app_files,
        )
    except RefactorError as exc:
        raise click.BadParameter(str(exc)) from exc


def _target_options(f: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option(
                "--tasks-package",
                default="app.tasks",
                show_default=True,
                help="Package the jobs become modules of (relative to LEGACY_BACKEND_DIR).",
            ),
            click.option(
                "--celery-app-import",
                default=str(DEFAULT_CELERY_APP_IMPORT),
                show_default=True,
                help="module:attribute of the Celery app the tasks register on.",
            ),
            click.option(
                "--base-import",
                default=str(DEFAULT_BASE_IMPORT),
                show_default=True,
                help="module:attribute of the task base class.",
            ),
        ]
    ):
        f = option(f)
    return f


@contextmanager
def _progress(console: Console, enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar on stderr for phase 1, only for a terminal (never in pipes or CI logs)."""
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    # auto_refresh=False: no refresh thread, so the runner may fork its --jobs workers (a
    # threaded parent would make it fall back to the slower spawn). Redrawn at most 10x/s.
    with RichProgress(
        TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
        transient=True, auto_refresh=False,
    ) as bar:  # fmt: skip
        task = bar.add_task("convert", total=None)
        last = 0.0

        def update(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            bar.update(task, completed=done, total=total)
            if now - last >= 0.1 or done == total:
                last = now
                bar.refresh()

        yield update


@click.command("convert")
@click.argument("legacy_backend_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--diff", is_flag=True, help="Print a unified diff of every file that would change; write nothing.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if anything would change, 0 if already converted.")
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the summary (every file, status, reasons) as JSON to this file.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Transform files in N processes (the output is identical to --jobs 1).",
)
@click.option("--keep-scripts", is_flag=True, help="Leave the original scripts/ files in place.")
@click.option(
    "--skip-app-files",
    is_flag=True,
    help="Leave the legacy app/ files (celery_app, celery_tasks, celery_signals, scheduler/registry, models) as "
    "they are.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only print refusals and failures (and no progress bar).")
@_target_options
@pass_cli
def convert(
    cli: CliContext,
    legacy_backend_dir: Path,
    diff: bool,
    check: bool,
    report_file: Path | None,
    jobs: int,
    keep_scripts: bool,
    skip_app_files: bool,
    quiet: bool,
    tasks_package: str,
    celery_app_import: str,
    base_import: str,
) -> None:
    """Convert the legacy jobs of LEGACY_BACKEND_DIR (the folder holding scripts/ and app/)
    into registered DataForge tasks, write the handler_path map file, and apply the design's
    file change list to the legacy app/: app/celery_app.py hands out dataforge's app,
    app/celery_tasks.py becomes app/celery_tasks_legacy.py (rollback only), the duplicate signal
    handlers and discover_scripts() go, handler_path is marked deprecated.

    Exit status: 0 done (or nothing to do), 1 with --check when something would change,
    2 bad input (no scripts/ nor tasks package; any file refused or failed), 3 the write
    phase failed and was rolled back.
    """
    from refactor_tool.runner import convert as run_convert

    options = _options(cli, tasks_package, celery_app_import, base_import, keep_scripts, not skip_app_files)
    mode = "diff" if diff else "check" if check else "write"
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        with _progress(err, not quiet) as progress:
            report = run_convert(legacy_backend_dir, options, mode=mode, jobs=jobs, progress=progress)
    except NothingToConvert as exc:
        err.print(f"convert: {exc}", markup=False)
        raise SystemExit(Exit.REFUSED) from exc
    except WriteInterrupted as exc:
        state = "every file it had written was restored" if exc.restored else "it came after the last write: done"
        err.print(f"convert: interrupted; {state}", markup=False)
        raise SystemExit(EXIT_INTERRUPTED) from exc
    except KeyboardInterrupt as exc:
        err.print("convert: interrupted before anything was written", markup=False)
        raise SystemExit(EXIT_INTERRUPTED) from exc
    if diff:
        # Bytes: each file keeps its encoding in the patch, as with `git diff`.
        sys.stdout.flush()
        sys.stdout.buffer.write(report.diff())
        sys.stdout.buffer.flush()
    for line in report.summary_lines(verbose=not quiet):
        if quiet and not line.startswith(("refused:", "failed:")):
            continue
        err.print(line, markup=False)
    if report_file is not None:
        data = json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
        atomic_write(report_file.resolve(), data.encode("utf-8"))
    raise SystemExit(report.exit_code(check=check))


@click.command("verify")
@click.argument("legacy_backend_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--cases",
    "cases_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file of cases: job, kwargs, optional expected / legacy_expected / ignore (docs/codemod.md).",
)
@click.option("--worker", is_flag=True, help="Also run every case through a real celery worker (embedded defaults).")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True, help="Seconds allowed per case."
)
@json_option("Print the outcome of every case as one JSON document (errors too).")
@click.option(
    "--tasks-package",
    default="app.tasks",
    show_default=True,
    help="Package the jobs become modules of (as given to convert).",
)
@pass_cli
def verify(
    cli: CliContext,
    legacy_backend_dir: Path,
    cases_file: Path,
    worker: bool,
    timeout: float,
    as_json: bool,
    tasks_package: str,
) -> None:
    """Run each case's legacy job the legacy way and its converted task through DataForgeTask,
    and report every difference in result or exception.

    LEGACY_BACKEND_DIR is the unconverted tree (it is copied, never modified). Exit status:
    0 every case identical (or differing exactly as the case declares), 1 differences,
    2 the verification could not run.
    """
    from refactor_tool.verify import load_cases
    from refactor_tool.verify import verify as run_verify

    # The converted side runs on this project's runtime, so the default import targets apply.
    options = _options(cli, tasks_package, str(DEFAULT_CELERY_APP_IMPORT), str(DEFAULT_BASE_IMPORT), keep_scripts=False)
    cases = load_cases(cases_file)
    report = run_verify(legacy_backend_dir, cases, options, worker=worker, timeout=timeout)
    if as_json:
        emit_json(report.to_json())
    else:
        out = Console(highlight=False, soft_wrap=True)
        for line in report.lines():
            out.print(line, markup=False)
    raise SystemExit(Exit.OK if report.ok else Exit.NO)
