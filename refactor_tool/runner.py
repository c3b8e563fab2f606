"""The conversion runner: discover, transform everything, decide, then write (or diff, or check).

Phase 1 transforms every file in memory (in a process pool with ``jobs > 1``; results come back
in input order, so the output is identical to ``jobs=1``); every output is compiled. Then, in
this process, :mod:`refactor_tool.plan` decides what moves and computes every file operation,
and the legacy app's own files (:mod:`refactor_tool.app_files`), and :mod:`refactor_tool.writes`
performs them all or none (phase 2).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from refactor_tool.app_files import plan_app_files
from refactor_tool.commands.rewrite_imports import ModuleIndex
from refactor_tool.errors import RefactorError, Refusal
from refactor_tool.import_layout import ImportStyle
from refactor_tool.options import ConvertOptions
from refactor_tool.plan import plan
from refactor_tool.report import ConvertReport
from refactor_tool.source_tree import python_files
from refactor_tool.transform import SCRIPT, TASK_MODULE, TransformContext, Unit, UnitOutcome, transform_unit
from refactor_tool.writes import Writer, apply_changes, atomic_write

__all__ = ["NothingToConvert", "Progress", "convert", "discover", "transform_all"]

#: ``progress(done, total)`` after each file of phase 1.
Progress = Callable[[int, int], None]


class NothingToConvert(RefactorError):
    """The folder holds neither the scripts package nor the tasks package: the wrong folder."""

    def __init__(self, root: Path, options: ConvertOptions) -> None:
        self.root = root
        super().__init__(
            f"{root} holds neither {options.scripts_package}/ nor {'/'.join(options.tasks_dir_parts)}/: "
            "pass the legacy backend folder (the one that holds them)"
        )


# -- discovery -----------------------------------------------------------------------------------
def discover(root: Path, options: ConvertOptions) -> tuple[list[Unit], ModuleIndex]:
    """The units of ``root`` (scripts first, then task modules) and the scripts module index."""
    pkg = options.scripts_package
    scripts_dir = root / pkg
    tasks_dir = root.joinpath(*options.tasks_dir_parts)
    tasks_rel = "/".join(options.tasks_dir_parts)
    units: list[Unit] = []
    modules: set[str] = set()
    packages: set[str] = set()
    if scripts_dir.is_dir():
        for path in python_files(scripts_dir):
            parts = path.relative_to(scripts_dir).with_suffix("").parts
            is_pkg = parts[-1] == "__init__"
            module = ".".join([pkg, *(parts[:-1] if is_pkg else parts)])
            depth = len(parts)
            name = parts[-1]
            if is_pkg:
                kind = "package" if depth == 1 else "helper"
            elif name.startswith("__") or not name.isidentifier() and depth > 1:
                kind = "private"
            elif depth == 1:
                kind = "helper" if name.startswith("_") else "job"
            else:
                kind = "helper"
            rel_in_scripts = path.relative_to(scripts_dir).as_posix()
            target = None if kind in ("package", "private") else f"{tasks_rel}/{rel_in_scripts}"
            units.append(Unit(path.relative_to(root).as_posix(), SCRIPT, module, is_pkg, target, kind))
            modules.add(module)
            packages.add(".".join([pkg, *parts[:-1]]))
    if tasks_dir.is_dir():
        for path in python_files(tasks_dir):
            rel = path.relative_to(tasks_dir)
            if rel.as_posix() == "__init__.py":
                continue  # the registry: handled after every module is known
            parts = rel.with_suffix("").parts
            is_pkg = parts[-1] == "__init__"
            module = ".".join([options.tasks_package, *(parts[:-1] if is_pkg else parts)])
            units.append(Unit(path.relative_to(root).as_posix(), TASK_MODULE, module, is_pkg, None, "task_module"))
    return units, ModuleIndex(frozenset(modules), frozenset(packages))


# -- phase 1 -------------------------------------------------------------------------------------
_WORKER_CONTEXT: TransformContext | None = None


def _init_worker(ctx: TransformContext) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = ctx


def _run_in_worker(unit: Unit) -> UnitOutcome:
    assert _WORKER_CONTEXT is not None, "worker not initialised"
    return transform_unit(unit, _WORKER_CONTEXT)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork when this process has a single thread, else spawn.

    fork costs nothing: workers inherit the imported libcst (importing ``libcst.codemod`` takes
    ~1 s, ~2.6 s on a busy machine, per spawned worker). Forking a process that runs other
    threads can deadlock the child on a lock one of them held, so then (a host application's
    threads; the CLI's progress bar runs none) spawn is used. The output is the same either way.
    """
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def transform_all(
    units: list[Unit], ctx: TransformContext, jobs: int = 1, progress: Progress | None = None
) -> list[UnitOutcome]:
    """Phase 1 for every unit, in input order whatever ``jobs`` is."""
    total = len(units)
    outcomes: list[UnitOutcome] = []
    if jobs <= 1 or total < 2:
        for unit in units:
            outcomes.append(transform_unit(unit, ctx))
            if progress:
                progress(len(outcomes), total)
        return outcomes
    workers = min(jobs, total)
    chunksize = max(1, min(32, total // (workers * 8)))
    try:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_pool_context(),
            initializer=_init_worker,
            initargs=(ctx,),
        ) as pool:
            for outcome in pool.map(_run_in_worker, units, chunksize=chunksize):
                outcomes.append(outcome)
                if progress:
                    progress(len(outcomes), total)
    except BrokenProcessPool:
        # A worker died (killed, or a crash in native code): the files it had are unknown, so
        # every file without a result fails, with the way to find the culprit.
        for unit in units[len(outcomes) :]:
            outcomes.append(
                UnitOutcome(
                    unit=unit,
                    kind=unit.kind,
                    failure=Refusal(1, "a --jobs worker process died while converting; re-run with --jobs 1"),
                )
            )
    return outcomes


# -- entry point ---------------------------------------------------------------------------------
def _import_style(root: Path, options: ConvertOptions, units: list[Unit]) -> ImportStyle:
    """The project's import sorting, judged as it will be after the move (the tasks package's
    modules exist then, where ruff and isort look for first-party modules)."""
    tasks_root = options.tasks_dir_parts[0]
    moved = [
        ".".join([*options.tasks_dir_parts, *unit.module.split(".")[1:]]) for unit in units if unit.role == SCRIPT
    ]
    packages = [".".join(options.tasks_dir_parts[: i + 1]) for i in range(len(options.tasks_dir_parts))]
    return ImportStyle.for_backend(root, same_package=tasks_root, also_first_party=[*moved, *packages])



def convert(
    root: Path,
    options: ConvertOptions | None = None,
    *,
    mode: str = "write",
    jobs: int = 1,
    progress: Progress | None = None,
    write: Writer = atomic_write,
) -> ConvertReport:
    """Convert the legacy backend at ``root``. ``mode``: ``write``, ``diff`` or ``check``.

    Never raises for a file: every problem is in the returned report. Raises
    :class:`NothingToConvert` for a folder without ``scripts/`` and the tasks package.
    """
    options = options or ConvertOptions()
    root = root.resolve()
    if not (root / options.scripts_package).is_dir() and not root.joinpath(*options.tasks_dir_parts).is_dir():
        raise NothingToConvert(root, options)
    units, index = discover(root, options)
    style = _import_style(root, options, units)
    ctx = TransformContext(str(root), options, index, style)
    outcomes = transform_all(units, ctx, jobs=jobs, progress=progress)
    decided = plan(root, options, outcomes, style, lambda unit, lock_key: transform_unit(unit, ctx, lock_key))
    app = plan_app_files(root, options, style, decided.changes, decided.files)
    decided.files.extend(app.files)
    decided.changes.extend(app.changes)
    report = ConvertReport(str(root), mode, decided.files, decided.changes, decided.removed_dirs)
    if mode == "write" and (decided.changes or decided.removed_dirs):
        report.write_error = apply_changes(root, decided.changes, decided.removed_dirs, write=write)
        if report.write_error is not None:
            for f in report.files:
                if f.status == "changed":
                    f.status = "failed"
                    f.reasons = [f"{f.path}:1: not written: the write phase failed and was rolled back"]
    return report
