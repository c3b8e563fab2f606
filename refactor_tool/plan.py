"""The decision, after phase 1: which jobs convert, what moves with them, every file operation.

Pure apart from reading files. A job converts unless it is refused for its own reasons, or
something it really runs or uses cannot move (:mod:`refactor_tool.uses`); then the reason names
that thing and the job's line that leads to it. A module that is not a job is never refused
for itself: it moves when a converted job runs it (or imports it for type checking only and it
can move), else it stays in ``scripts/``. ``scripts/__init__.py`` is carried over into the tasks
package's ``__init__.py`` (:mod:`refactor_tool.commands.carry_package_init`). A job that runs
code reading the legacy ``_lock_key`` is transformed again so its task passes that value.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.legacy.paths import HandlerMap, handler_path_spellings
from refactor_tool.commands.carry_package_init import carry_package_init
from refactor_tool.commands.registry_entries import add_registry_entries
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.import_layout import ImportStyle
from refactor_tool.options import MAP_FILE_NAME, ConvertOptions
from refactor_tool.report import Change, FileReport, counted
from refactor_tool.transform import SCRIPT, TASK_MODULE, Unit, UnitOutcome
from refactor_tool.uses import Closure, job_closure

__all__ = ["Plan", "Retransform", "plan"]

#: Phase 1 again for one job, with its task passing the legacy ``_lock_key`` (``True``).
Retransform = Callable[[Unit, bool], UnitOutcome]

_APP_INIT_TEXT = (
    '"""Legacy backend package.\n\n'
    "Created by `dataforge convert` so the tasks package imports as a regular package.\n"
    '"""\n'
)
_REGISTRY_TEXT = b'"""The tasks package: converted jobs and REGISTERED_TASKS."""\n'


@dataclass
class Plan:
    files: list[FileReport] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)


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


@dataclass
class _Decision:
    """What the fixed point found."""

    #: Jobs that convert, with their (possibly re-transformed) outcome.
    converted: dict[str, UnitOutcome]
    #: Job -> why it does not convert (beyond its own refusals).
    blocked: dict[str, Refusal]
    closures: dict[str, Closure]
    #: Non-job module -> why it cannot move (a file in the way).
    cannot: dict[str, str]
    #: Modules that move with the converted jobs (not the scripts package itself).
    moving: set[str]
    notes: dict[str, list[str]]


def _decide(
    scripts: Mapping[str, UnitOutcome],
    registered: Mapping[str, tuple[str, int]],
    targets: Mapping[str, bytes | None],
    package_problem: str | None,
    options: ConvertOptions,
    retransform: Retransform,
) -> _Decision:
    pkg = options.scripts_package
    uses = {m: o.uses for m, o in scripts.items() if o.uses is not None}
    cannot: dict[str, str] = {}
    blocked: dict[str, Refusal] = {}
    notes: dict[str, list[str]] = {}
    for module, o in scripts.items():
        if o.failure is not None:
            cannot[module] = "failed to convert"
        elif o.kind == "private":
            cannot[module] = "is a dunder module that stays in place"
        elif o.kind == "job" and o.refusals:
            cannot[module] = f"was refused ({o.refusals[0].reason})"
        elif o.kind == "job":
            assert o.task_name is not None
            where = registered.get(o.task_name)
            if where is not None and where[0] != o.unit.target:
                blocked[module] = Refusal(
                    1, f"task name {o.task_name} is already registered by {where[0]}:{where[1]}; rename one"
                )
        elif o.unit.target is not None and targets.get(module) not in (None, o.output):
            cannot[module] = f"cannot move: {o.unit.target} already exists and differs from this module"
    if package_problem is not None:
        cannot[pkg] = package_problem
    outcomes = dict(scripts)
    jobs = sorted(m for m, o in scripts.items() if o.kind == "job" and m not in cannot)
    closures: dict[str, Closure] = {}
    while True:
        # Jobs refused because of other jobs, to a fixed point.
        changed = True
        phrases = {**cannot, **{m: f"was refused ({r.reason})" for m, r in blocked.items()}}
        while changed:
            changed = False
            for module in jobs:
                if module in blocked:
                    continue
                closure = job_closure(module, uses, phrases)
                closures[module] = closure
                if closure.blocked is not None:
                    blocked[module] = closure.blocked
                    phrases[module] = f"was refused ({closure.blocked.reason})"
                    changed = True
        converted = [m for m in jobs if m not in blocked]
        # A job that runs code reading _lock_key: its task must pass the legacy value.
        for module in converted:
            lock_key = closures[module].lock_key
            if lock_key is not None and not outcomes[module].legacy_lock_key:
                again = retransform(outcomes[module].unit, True)
                again.notes.append(
                    f"runs code that reads _lock_key ({lock_key[0]}:{lock_key[1]}): the task passes it the legacy "
                    'executor\'s value, "scheduled_task:<schedule id>" (run_job(..., legacy_lock_key=True))'
                )
                outcomes[module] = again
        newly = False
        for module in converted:
            o = outcomes[module]
            existing = targets.get(module)
            if o.failure is not None or o.output is None:
                blocked[module] = o.failure or Refusal(1, "failed to convert")
                newly = True
            elif existing is not None and existing != o.output:
                blocked[module] = Refusal(
                    1, f"{o.unit.target} already exists and differs from this conversion; delete or rename one of "
                    "the two and re-run",
                )  # fmt: skip
                newly = True
        if not newly:
            break
    converted = [m for m in jobs if m not in blocked]
    needed: set[str] = set()
    for module in converted:
        needed.update(closures[module].runs)
    moving = set(converted) | {m for m in needed if scripts[m].kind in ("helper", "module")}
    # Imported for type checking only: moves along when it can (the worker imports every module of
    # the tasks package, so what it runs must move too), else the import keeps a dangling name.
    phrases = {**cannot, **{m: f"was refused ({r.reason})" for m, r in blocked.items()}}
    for module in sorted({*converted, *moving}):
        for dep, line in scripts[module].type_only_deps:
            if dep in moving or dep in needed or dep not in scripts or scripts[dep].kind not in ("helper", "module"):
                continue
            weak = job_closure(dep, uses, phrases, check_names=False) if dep in uses else None
            if dep not in cannot and weak is not None and weak.blocked is None and not uses[dep].import_blockers:
                moving.add(dep)
                moving.update(m for m in weak.runs if scripts[m].kind in ("helper", "module"))
            else:
                notes.setdefault(module, []).append(
                    f"line {line}: {dep} is imported for type checking only and stays in {pkg}/; the rewritten "
                    "import names a module type checkers will not find"
                )
    for module in blocked:
        for other, name in closures[module].stopped_by if module in closures else []:
            notes.setdefault(other, []).append(
                f"{name} changes meaning once moved; {module} uses it, so that job stays in {pkg}/"
            )
    return _Decision(
        converted={m: outcomes[m] for m in converted},
        blocked=blocked,
        closures=closures,
        cannot=cannot,
        moving=moving,
        notes=notes,
    )


def plan(
    root: Path,
    options: ConvertOptions,
    outcomes: list[UnitOutcome],
    style: ImportStyle,
    retransform: Retransform,
) -> Plan:
    """Decide what moves and compute every file operation."""
    result = Plan()
    pkg = options.scripts_package
    scripts = {o.unit.module: o for o in outcomes if o.unit.role == SCRIPT}
    task_modules = [o for o in outcomes if o.unit.role == TASK_MODULE]
    registered: dict[str, tuple[str, int]] = {}
    for o in task_modules:
        for task_name, _fn, line, _entry in o.tasks:
            registered.setdefault(task_name, (o.unit.path, line))
    targets = {m: _read(root / o.unit.target) for m, o in scripts.items() if o.unit.target is not None}
    registry_rel = "/".join(options.tasks_dir_parts) + "/__init__.py"
    registry_old = _read(root / registry_rel)

    # scripts/__init__.py, carried over into the registry file (computed now: if it cannot be
    # carried, every job runs it, so none converts).
    init = scripts.get(pkg)
    carried: bytes | None = registry_old
    init_refusals: list[Refusal] = []
    package_problem: str | None = None
    if init is not None and init.failure is None and init.output is not None:
        try:
            carried = carry_package_init(registry_old, init.output, style, registry_rel, init.unit.path)
        except ConversionRefused as exc:
            init_refusals = exc.refusals
            package_problem = f"cannot be carried over into {registry_rel}: {exc.refusals[0].format(init.unit.path)}"

    decision = _decide(scripts, registered, targets, package_problem, options, retransform)
    moving = decision.moving

    # What stays in scripts/: its imports keep their modules' sources in place.
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

    deletions: list[Change] = []
    for module, o in sorted(scripts.items(), key=lambda kv: kv[1].unit.path):
        o = decision.converted.get(module, o)
        report = FileReport(o.unit.path, o.kind, "unchanged", o.unit.target, notes=list(o.notes))
        report.notes.extend(decision.notes.get(module, []))
        report.task_name, report.function = o.task_name, o.function
        result.files.append(report)
        if o.failure is not None:
            report.status, report.reasons = "failed", [o.failure.format(o.unit.path)]
            continue
        if o.refusals:
            report.status, report.reasons = "refused", [r.format(o.unit.path) for r in o.refusals]
            continue
        if module in decision.blocked:
            report.status, report.reasons = "refused", [decision.blocked[module].format(o.unit.path)]
            continue
        if o.kind == "private":
            report.status, report.reasons, report.target = "skipped", [o.skip or "not a job"], None
            continue
        if o.kind == "package":
            report.target = registry_rel
            continue  # decided below, once we know whether scripts/ empties
        if module not in moving:
            # Never refused for itself: a job that needs it is refused, naming what cannot move.
            report.status, report.target = "skipped", None
            report.reasons = [f"{o.skip or 'not a job'}; left in {pkg}/"]
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
            report.notes.append(f"{o.unit.path} is kept: modules left in {pkg}/ import it")
        report.status = "changed" if (write_needed or delete_source) else "unchanged"
        if o.kind == "module":
            report.notes.append(f"not a job, but run by converted jobs: moved to {o.unit.target}")

    converted_any = bool(decision.converted)
    _package_init(options, result, scripts, init, init_refusals, deletions, unknown, converted_any, registry_rel)

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

    moved_jobs = [decision.converted[m] for m in sorted(decision.converted)]
    tasks_prefix = "/".join(options.tasks_dir_parts) + "/"
    writes_into_tasks = bool(moved_jobs) or any(c.path.startswith(tasks_prefix) for c in result.changes)
    _package_inits(root, options, result, writes_into_tasks)
    registry_source = carried if converted_any and not init_refusals else registry_old
    _registry(result, moved_jobs, task_modules, writes_into_tasks, registry_rel, registry_old, registry_source)
    _map_file(root, options, result, moved_jobs)

    result.changes.extend(sorted(deletions, key=lambda c: c.path))
    result.removed_dirs = _emptied_dirs(root, [c.path for c in deletions])
    return result


def _package_init(
    options: ConvertOptions,
    result: Plan,
    scripts: Mapping[str, UnitOutcome],
    init: UnitOutcome | None,
    init_refusals: list[Refusal],
    deletions: list[Change],
    unknown: bool,
    converted_any: bool,
    registry_rel: str,
) -> None:
    """``scripts/__init__.py``: carried over, then dropped once nothing is left beside it."""
    if init is None or init.failure is not None:
        return
    report = next(f for f in result.files if f.path == init.unit.path)
    if init_refusals:
        report.status, report.target = "refused", None
        report.reasons = [r.format(init.unit.path) for r in init_refusals]
        return
    if not converted_any:
        report.target = None
        return
    report.notes.append(f"carried over into {registry_rel} (docstring, comments and statements)")
    deleted_paths = {c.path for c in deletions}
    left = [
        o.unit.path
        for o in scripts.values()
        if o is not init and o.unit.path.startswith(options.scripts_package + "/") and o.unit.path not in deleted_paths
    ]
    if options.keep_scripts or left or unknown:
        report.status = "skipped"
        report.reasons = [
            "kept (--keep-scripts)"
            if options.keep_scripts
            else f"kept: {options.scripts_package}/ still holds modules that were not converted"
        ]
        return
    assert init.source is not None
    deletions.append(Change(init.unit.path, init.source, None))
    report.status = "changed"


def _package_inits(root: Path, options: ConvertOptions, result: Plan, needed: bool) -> None:
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
    result: Plan,
    moved_jobs: list[UnitOutcome],
    task_modules: list[UnitOutcome],
    needed: bool,
    rel: str,
    old: bytes | None,
    source: bytes | None,
) -> None:
    entries: dict[str, dict[str, Any]] = {}
    for o in task_modules:
        if o.failure is None and not o.refusals:
            for task_name, _fn, _line, entry in o.tasks:
                entries.setdefault(task_name, entry)
    for o in moved_jobs:
        assert o.task_name is not None and o.entry is not None
        entries[o.task_name] = o.entry
    report = FileReport(rel, "registry", "unchanged")
    if old is None and not needed:
        return
    result.files.append(report)
    if source is not None and source != old:
        report.notes.append("holds what scripts/__init__.py defined, beside REGISTERED_TASKS")
    try:
        new, added = add_registry_entries(
            source if source is not None else _REGISTRY_TEXT, sorted(entries.items()), rel
        )
        compile(new, rel, "exec", dont_inherit=True)
    except ConversionRefused as exc:
        report.status, report.reasons = "refused", [r.format(rel) for r in exc.refusals]
        return
    except (SyntaxError, ValueError, UnicodeError) as exc:
        report.status, report.reasons = "failed", [f"{rel}:1: does not parse: {exc}"]
        return
    if added:
        report.added = list(added)
        report.notes.append(f"REGISTERED_TASKS: added {counted(added)}")
    if new != old:
        report.status = "changed"
        result.changes.append(Change(rel, old, new))


def _map_file(root: Path, options: ConvertOptions, result: Plan, moved_jobs: list[UnitOutcome]) -> None:
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
