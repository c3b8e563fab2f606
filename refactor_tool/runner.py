"""The conversion runner: discover, transform everything, decide, then write (or diff, or check).

Phase 1 transforms every file in memory (in a process pool with ``jobs > 1``; results come back
in input order, so the output is identical to ``jobs=1``). Then, in this process, the runner
decides what moves: a job whose helper was refused, whose task name is already taken or whose
target file already holds something else is refused too; helpers move along; the registry and
the map file are computed. Every output was compiled in phase 1. Phase 2 writes: each file
atomically (temp file + ``os.replace``), and if any write fails every file already replaced
or deleted in this run is restored, so the tree is left as it was.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.legacy.paths import HandlerMap, handler_path_spellings
from refactor_tool.commands.registry_entries import add_registry_entries
from refactor_tool.commands.rewrite_imports import ModuleIndex
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.options import MAP_FILE_NAME, ConvertOptions
from refactor_tool.report import Change, ConvertReport, FileReport
from refactor_tool.transform import SCRIPT, TASK_MODULE, TransformContext, Unit, UnitOutcome, transform_unit

__all__ = [
    "Progress",
    "WriteFailed",
    "apply_changes",
    "atomic_write",
    "convert",
    "discover",
    "plan",
    "transform_all",
]

#: ``progress(done, total)`` after each file of phase 1.
Progress = Callable[[int, int], None]

_APP_INIT_TEXT = (
    '"""Legacy backend package.\n\n'
    "Created by `dataforge convert` so the tasks package imports as a regular package.\n"
    '"""\n'
)


class WriteFailed(Exception):
    """Raised inside :func:`apply_changes` (and caught there) when one operation fails."""


# -- discovery -----------------------------------------------------------------------------------
def _py_files(directory: Path) -> Iterator[Path]:
    """Python files under ``directory``, in sorted order, skipping caches and non-package dirs."""
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            if path.name == "__pycache__" or not path.name.isidentifier():
                continue
            yield from _py_files(path)
        elif path.suffix == ".py" and path.is_file():
            yield path


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
        for path in _py_files(scripts_dir):
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
        for path in _py_files(tasks_dir):
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


# -- the decision --------------------------------------------------------------------------------
@dataclass
class _Plan:
    files: list[FileReport] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)


def _status_phrase(outcome: UnitOutcome, blocked: dict[str, Refusal]) -> str:
    module = outcome.unit.module
    if module in blocked:
        return "was refused too"
    if outcome.failure is not None:
        return "failed to convert"
    if outcome.refusals or outcome.move_refusals:
        return f"was refused ({(outcome.refusals or outcome.move_refusals)[0].reason})"
    if outcome.kind == "private":
        return "is a dunder module that stays in place"
    return "cannot move"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def plan(root: Path, options: ConvertOptions, outcomes: list[UnitOutcome]) -> _Plan:
    """Decide what moves and compute every file operation (pure apart from reading files)."""
    result = _Plan()
    scripts = {o.unit.module: o for o in outcomes if o.unit.role == SCRIPT}
    task_modules = [o for o in outcomes if o.unit.role == TASK_MODULE]
    blocked: dict[str, Refusal] = {}

    # Task names already registered by modules of the tasks package.
    registered: dict[str, tuple[str, int]] = {}
    for o in task_modules:
        for task_name, _fn, line, _entry in o.tasks:
            registered.setdefault(task_name, (o.unit.path, line))

    moving: set[str] = {m for m, o in scripts.items() if o.kind in ("job", "helper") and o.movable}
    # A job whose task name is taken elsewhere, or whose target holds something else, stays.
    targets: dict[str, bytes | None] = {}
    for module in sorted(moving):
        o = scripts[module]
        assert o.unit.target is not None
        existing = _read(root / o.unit.target)
        targets[module] = existing
        if o.task_name is not None and o.task_name in registered and registered[o.task_name][0] != o.unit.target:
            where, line = registered[o.task_name]
            blocked[module] = Refusal(1, f"task name {o.task_name} is already registered by {where}:{line}; rename one")
        elif existing is not None and existing != o.output:
            blocked[module] = Refusal(
                1,
                f"{o.unit.target} already exists and differs from this conversion; "
                "delete or rename one of the two and re-run",
            )
    moving -= set(blocked)

    # Dependencies, to a fixed point: helpers (and imported non-job modules) move along; an
    # importer of anything that cannot move stays where it is.
    required: set[str] = set()
    changed = True
    while changed:
        changed = False
        for module in sorted(moving):
            for dep, line in scripts[module].deps:
                d = scripts.get(dep)
                if d is None or dep in moving:
                    continue
                if d.kind == "package" and d.movable:
                    continue
                if d.kind == "module":
                    required.add(dep)
                if d.kind == "module" and d.movable and dep not in blocked:
                    existing = _read(root / d.unit.target) if d.unit.target else None
                    targets[dep] = existing
                    if existing is None or existing == d.output:
                        moving.add(dep)
                        changed = True
                        continue
                    blocked[dep] = Refusal(1, f"{d.unit.target} already exists and differs from this module")
                blocked[module] = Refusal(line, f"imports {dep}, which {_status_phrase(d, blocked)}")
                moving.discard(module)
                changed = True
                break

    # What stays in scripts/: its imports keep their helpers' sources in place.
    remaining = [o for m, o in scripts.items() if m not in moving and o.kind != "package"]
    keep_sources: set[str] = set()
    unknown = any(o.failure is not None for o in remaining)
    stack = [dep for o in remaining for dep, _ in o.deps]
    for o in remaining:  # importing a module runs its packages' __init__ files too
        parts = o.unit.module.split(".")
        stack.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    while stack:
        dep = stack.pop()
        if dep in keep_sources:
            continue
        keep_sources.add(dep)
        if dep in scripts:
            stack.extend(d for d, _ in scripts[dep].deps)

    # Per-file reports and operations for scripts.
    deletions: list[Change] = []
    for module, o in sorted(scripts.items(), key=lambda kv: kv[1].unit.path):
        report = FileReport(o.unit.path, o.kind, "unchanged", o.unit.target, notes=list(o.notes))
        report.task_name, report.function = o.task_name, o.function
        result.files.append(report)
        if o.failure is not None:
            report.status, report.reasons = "failed", [o.failure.format(o.unit.path)]
            continue
        if o.refusals:
            report.status, report.reasons = "refused", [r.format(o.unit.path) for r in o.refusals]
            continue
        if module in blocked:
            report.status, report.reasons = "refused", [blocked[module].format(o.unit.path)]
            continue
        if module in required and o.move_refusals:
            report.status, report.target = "refused", None
            report.reasons = [r.format(o.unit.path) for r in o.move_refusals]
            continue
        if o.kind == "private":
            report.status, report.reasons, report.target = "skipped", [o.skip or "not a job"], None
            continue
        if o.kind == "package":
            report.target = None
            continue  # decided below, once we know whether scripts/ empties
        if module not in moving:
            report.status, report.target = "skipped", None
            report.reasons = [f"{o.skip or 'not a job'}; left in {options.scripts_package}/"]
            continue
        assert o.unit.target is not None and o.output is not None and o.source is not None
        write_needed = targets.get(module) != o.output
        delete_source = not options.keep_scripts and module not in keep_sources and not unknown
        if write_needed:
            result.changes.append(
                Change(
                    o.unit.target,
                    targets.get(module),
                    o.output,
                    origin=o.unit.path,
                    origin_data=o.source,
                    mode=_mode(root / o.unit.path),
                )
            )
        if delete_source:
            deletions.append(Change(o.unit.path, o.source, None))
        elif not options.keep_scripts:
            report.notes.append(f"{o.unit.path} is kept: modules left in {options.scripts_package}/ import it")
        report.status = "changed" if (write_needed or delete_source) else "unchanged"
        if o.kind == "module":
            report.notes.append(f"not a job, but imported by a converted module: moved to {o.unit.target}")

    # Package __init__ files of scripts/ go once nothing is left beside them.
    deleted_paths = {c.path for c in deletions}
    all_script_paths = {o.unit.path for o in scripts.values()}
    for o in scripts.values():
        if o.kind != "package" or o.failure is not None or o.refusals:
            continue
        report = next(f for f in result.files if f.path == o.unit.path)
        directory = o.unit.path.rpartition("/")[0]
        left = [
            p for p in all_script_paths if p.startswith(directory + "/") and p != o.unit.path and p not in deleted_paths
        ]
        if options.keep_scripts or left or unknown:
            report.status = "skipped"
            report.reasons = [
                "kept (--keep-scripts)"
                if options.keep_scripts
                else f"kept: {options.scripts_package}/ still holds modules that were not converted"
            ]
        else:
            assert o.source is not None
            deletions.append(Change(o.unit.path, o.source, None))
            report.status = "changed"
            report.notes.append("dropped: the tasks package has its own __init__.py")

    # Task modules (retargeted in place).
    for o in task_modules:
        report = FileReport(o.unit.path, o.kind, "unchanged", notes=list(o.notes))
        result.files.append(report)
        if o.failure is not None:
            report.status, report.reasons = "failed", [o.failure.format(o.unit.path)]
        elif o.refusals:
            report.status, report.reasons = "refused", [r.format(o.unit.path) for r in o.refusals]
        elif o.skip is not None:
            report.status, report.reasons = "skipped", [o.skip]
        elif o.output is not None and o.output != o.source:
            report.status = "changed"
            result.changes.append(Change(o.unit.path, o.source, o.output))
        if o.tasks:
            report.task_name = ", ".join(t[0] for t in o.tasks)

    moved_jobs = [scripts[m] for m in sorted(moving) if scripts[m].kind == "job"]
    tasks_prefix = "/".join(options.tasks_dir_parts) + "/"
    writes_into_tasks = bool(moved_jobs) or any(c.path.startswith(tasks_prefix) for c in result.changes)
    _package_inits(root, options, result, writes_into_tasks)
    _registry(root, options, result, moved_jobs, task_modules, writes_into_tasks)
    _map_file(root, options, result, moved_jobs)

    result.changes.extend(sorted(deletions, key=lambda c: c.path))
    result.removed_dirs = _emptied_dirs(root, [c.path for c in deletions])
    return result


def _package_inits(root: Path, options: ConvertOptions, result: _Plan, needed: bool) -> None:
    """``app/__init__.py`` (and any missing parent package) so the tasks package is a regular one."""
    if not needed:
        return
    parts = options.tasks_dir_parts
    for depth in range(1, len(parts)):
        rel = "/".join(parts[:depth]) + "/__init__.py"
        if not (root / rel).exists():
            result.changes.append(Change(rel, None, _APP_INIT_TEXT.encode()))
            result.files.append(
                FileReport(rel, "package", "changed", notes=["created: the worker imports the tasks package by name"])
            )


def _registry(
    root: Path,
    options: ConvertOptions,
    result: _Plan,
    moved_jobs: list[UnitOutcome],
    task_modules: list[UnitOutcome],
    needed: bool,
) -> None:
    rel = "/".join(options.tasks_dir_parts) + "/__init__.py"
    entries: dict[str, dict[str, Any]] = {}
    for o in task_modules:
        if o.failure is None and not o.refusals:
            for task_name, _fn, _line, entry in o.tasks:
                entries.setdefault(task_name, entry)
    for o in moved_jobs:
        assert o.task_name is not None and o.entry is not None
        entries[o.task_name] = o.entry
    old = _read(root / rel)
    report = FileReport(rel, "registry", "unchanged")
    if old is None and not needed:
        return
    result.files.append(report)
    source = old if old is not None else b'"""The tasks package: converted jobs and REGISTERED_TASKS."""\n'
    try:
        new, added = add_registry_entries(source, sorted(entries.items()), rel)
        compile(new, rel, "exec", dont_inherit=True)
    except ConversionRefused as exc:
        report.status, report.reasons = "refused", [r.format(rel) for r in exc.refusals]
        return
    except (SyntaxError, ValueError, UnicodeError) as exc:
        report.status, report.reasons = "failed", [f"{rel}:1: does not parse: {exc}"]
        return
    if added:
        report.notes.append(f"REGISTERED_TASKS: added {', '.join(added)}")
    if new != old:
        report.status = "changed"
        result.changes.append(Change(rel, old, new))


def _map_file(root: Path, options: ConvertOptions, result: _Plan, moved_jobs: list[UnitOutcome]) -> None:
    path = root / MAP_FILE_NAME
    old = _read(path)
    report = FileReport(MAP_FILE_NAME, "map", "unchanged")
    if old is None and not moved_jobs:
        return
    result.files.append(report)
    try:
        current = (
            HandlerMap.from_json(json.loads(old.decode("utf-8")), source=MAP_FILE_NAME)
            if old is not None
            else HandlerMap(options.scripts_package, options.tasks_package, {}, {})
        )
    except (ValueError, UnicodeDecodeError) as exc:
        report.status, report.reasons = "failed", [f"{MAP_FILE_NAME}:1: cannot be read: {exc}; fix or delete it"]
        return
    handlers = dict(current.handlers)
    modules = {k: dict(v) for k, v in current.modules.items()}
    for o in moved_jobs:
        job = o.unit.module.rpartition(".")[2]
        assert o.task_name is not None and o.function is not None
        for spelling in handler_path_spellings(job, options.scripts_package):
            handlers[spelling] = o.task_name
        modules[job] = {
            "task_name": o.task_name,
            "module": f"{options.tasks_package}.{job}",
            "function": o.function,
        }
    new_map = HandlerMap(options.scripts_package, options.tasks_package, handlers, modules)
    new = (json.dumps(new_map.to_json(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if new != old:
        report.status = "changed"
        report.notes.append(f"{len(moved_jobs)} job(s) mapped")
        result.changes.append(Change(MAP_FILE_NAME, old, new))


def _emptied_dirs(root: Path, deleted: Iterable[str]) -> list[str]:
    """Directories that hold nothing once ``deleted`` are gone (deepest first)."""
    gone = set(deleted)
    candidates = sorted({str(Path(p).parent.as_posix()) for p in gone}, key=lambda d: (-d.count("/"), d))
    emptied: list[str] = []
    for directory in candidates:
        path = root / directory
        if not path.is_dir() or directory in ("", "."):
            continue
        left = [
            child
            for child in path.iterdir()
            if child.relative_to(root).as_posix() not in gone and child.relative_to(root).as_posix() not in emptied
        ]
        if not left:
            emptied.append(directory)
            parent = str(Path(directory).parent.as_posix())
            if parent not in candidates and parent not in ("", "."):
                candidates.append(parent)
    return emptied


# -- phase 2 -------------------------------------------------------------------------------------
def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``.

    A reader, or a run interrupted at any point, sees the old file or the new one, never half
    of one. No fsync: it would make a 2,000-file conversion wait on the disk for every file, and
    a converted tree is a working copy under version control, not a database. The temp file is
    created with ``0o666`` minus the umask (``os.open`` applies it), like a plain open.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.dataforge-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


#: How phase 2 writes one file (tests inject failures through it).
Writer = Callable[[Path, bytes, int | None], None]


def apply_changes(
    root: Path,
    changes: list[Change],
    removed_dirs: Sequence[str] = (),
    write: Writer = atomic_write,
) -> str | None:
    """Phase 2: perform ``changes`` all-or-nothing. Returns ``None``, or what failed.

    Before touching a file it checks that the file still holds what phase 1 read (someone may
    have edited it meanwhile). On any failure, everything this call already did is undone in
    reverse order: replaced files get their old bytes back, created files and directories are
    removed, deleted files are restored.
    """
    undo: list[Callable[[], None]] = []
    try:
        for change in changes:
            path = root / change.path
            current = _read(path)
            if current != change.old:
                raise WriteFailed(f"{change.path} changed on disk since it was read; re-run")
            mode = _mode(path)
            created_dirs = _missing_parents(path.parent, root)
            try:
                if change.new is None:
                    path.unlink()
                else:
                    write(path, change.new, mode if mode is not None else change.mode)
            except OSError as exc:
                raise WriteFailed(f"{change.path}: {exc.strerror or exc}") from exc
            undo.append(_undo_for(path, change.old, mode, created_dirs))
        for directory in removed_dirs:
            path = root / directory
            try:
                path.rmdir()
            except OSError as exc:
                raise WriteFailed(f"{directory}/: {exc.strerror or exc}") from exc
            undo.append(lambda p=path: p.mkdir(exist_ok=True))  # type: ignore[misc]
    except WriteFailed as exc:
        _rollback(undo)
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - the tree must be restored whatever went wrong
        _rollback(undo)
        return f"unexpected error while writing: {type(exc).__name__}: {exc}"
    except BaseException:
        # Ctrl-C (or SystemExit) in the middle: restore the tree, then let it propagate.
        _rollback(undo)
        raise
    return None


def _missing_parents(directory: Path, root: Path) -> list[Path]:
    missing: list[Path] = []
    while not directory.exists() and directory != root and root in directory.parents:
        missing.append(directory)
        directory = directory.parent
    return missing


def _undo_for(path: Path, old: bytes | None, mode: int | None, created_dirs: list[Path]) -> Callable[[], None]:
    def undo() -> None:
        if old is None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            for directory in created_dirs:  # deepest first
                try:
                    directory.rmdir()
                except OSError:
                    pass
        else:
            atomic_write(path, old, mode)

    return undo


def _rollback(undo: list[Callable[[], None]]) -> None:
    for action in reversed(undo):
        try:
            action()
        except OSError:
            pass


# -- entry point ---------------------------------------------------------------------------------
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

    Never raises for a file: every problem is in the returned report.
    """
    options = options or ConvertOptions()
    root = root.resolve()
    units, index = discover(root, options)
    ctx = TransformContext(str(root), options, index)
    outcomes = transform_all(units, ctx, jobs=jobs, progress=progress)
    decided = plan(root, options, outcomes)
    report = ConvertReport(str(root), mode, decided.files, decided.changes, decided.removed_dirs)
    if mode == "write" and (decided.changes or decided.removed_dirs):
        report.write_error = apply_changes(root, decided.changes, decided.removed_dirs, write=write)
        if report.write_error is not None:
            for f in report.files:
                if f.status == "changed":
                    f.status = "failed"
                    f.reasons = [f"{f.path}:1: not written: the write phase failed and was rolled back"]
    return report
