"""The design's file change list for the legacy ``app/``, planned with the rest of a conversion.

One codemod command per legacy file kind (:mod:`refactor_tool.legacy_layout` says where each is),
in :mod:`refactor_tool.commands`:

* ``app/celery_app.py``: ``share_celery_app`` (the module hands out dataforge's app);
* ``app/celery_tasks.py``: ``keep_legacy_executor``, written as ``app/celery_tasks_legacy.py``;
* ``app/celery_signals.py`` and any other ``app/`` module connecting task signals:
  ``remove_signal_handlers``; a module left with nothing of use is deleted, unless something
  still imports it;
* ``app/scheduler/registry.py``: ``simplify_scheduler_registry``;
* ``app/models.py`` or ``app/models/``: ``deprecate_handler_path``;
* ``app/config.py``: reported only (:mod:`refactor_tool.legacy_settings`).

Each file is converted or refused on its own (a refusal names the line and the fix, and the
file is left exactly as it was). The tasks package is not touched here (the retarget command
owns it). The operations join the conversion's plan, so they are shown by ``--diff``, counted
by ``--check`` and written atomically with everything else. Then the converted tree is
searched (:mod:`refactor_tool.references`) for what still uses a removed function, the renamed
or deleted modules, or a legacy setting, and each place is reported with its file and line.
"""

from __future__ import annotations

import ast
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.codemod import CodemodContext, SkipFile

from refactor_tool.commands._base import Command
from refactor_tool.commands.deprecate_handler_path import DeprecateHandlerPathCommand
from refactor_tool.commands.keep_legacy_executor import KeepLegacyExecutorCommand
from refactor_tool.commands.remove_signal_handlers import RemoveSignalHandlersCommand, find_signal_handlers
from refactor_tool.commands.share_celery_app import ShareCeleryAppCommand
from refactor_tool.commands.simplify_scheduler_registry import SimplifySchedulerRegistryCommand
from refactor_tool.errors import ConversionRefused
from refactor_tool.import_layout import ImportStyle
from refactor_tool.legacy_layout import (
    APP_PACKAGE,
    CELERY_APP_MODULE,
    CONFIG_MODULES,
    EXECUTOR_MODULE,
    MODEL_MODULES,
    REGISTRY_MODULE,
    RENAMED_EXECUTOR_MODULE,
    SCHEDULES_TABLE,
    SIGNALS_MODULE,
    module_path,
)
from refactor_tool.legacy_settings import config_settings, runtime_counterpart
from refactor_tool.options import ConvertOptions
from refactor_tool.pruning import Removed
from refactor_tool.references import Reference, Targets, module_of_path, references_in
from refactor_tool.report import Change, FileReport
from refactor_tool.source_tree import converted_sources, python_files

__all__ = ["AppPlan", "plan_app_files"]

#: Shown per place in a note; the JSON report has the same notes.
_SHOWN = 5
_SCHEDULER = f"{APP_PACKAGE}.celery_scheduler"


@dataclass
class AppPlan:
    files: list[FileReport] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


@dataclass
class _Done:
    """One file run through its command."""

    report: FileReport
    source: bytes
    output: bytes | None = None
    removed: list[Removed] = field(default_factory=list)
    emptied: bool = False


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _run(root: Path, rel: str, kind: str, make: Callable[[CodemodContext], Command], quiet: bool) -> _Done | None:
    """``rel`` through the command ``make`` builds: a report, never an exception. A file the
    command skips is reported skipped, with why (``quiet``: not reported, ``None``)."""
    try:
        source = (root / rel).read_bytes()
    except OSError as exc:
        return _Done(FileReport(rel, kind, "failed", reasons=[f"{rel}:1: cannot be read: {exc.strerror or exc}"]), b"")
    report = FileReport(rel, kind, "unchanged")
    done = _Done(report, source)
    try:
        compile(source, rel, "exec", dont_inherit=True)
        tree = cst.parse_module(source)
    except (SyntaxError, ValueError, cst.ParserSyntaxError) as exc:
        line = getattr(exc, "lineno", None) or getattr(exc, "raw_line", None) or 1
        report.status, report.reasons = "failed", [f"{rel}:{line}: does not parse: {exc}"]
        return done
    context = CodemodContext(filename=rel, full_module_name=module_of_path(rel)[0])
    command = make(context)
    try:
        output = command.transform_module(tree).bytes
    except SkipFile as exc:
        if quiet:
            return None
        report.status, report.reasons = "skipped", [str(exc)]
        return done
    except ConversionRefused as exc:
        report.status, report.reasons = "refused", [r.format(rel) for r in exc.refusals]
        return done
    except Exception as exc:  # noqa: BLE001 - a batch runner reports, never raises
        report.status = "failed"
        report.reasons = [f"{rel}:1: internal error while converting: {type(exc).__name__}: {exc}; please report it"]
        return done
    try:
        compile(output, rel, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):  # pragma: no cover - a bug in a command, reported per file
        report.status, report.reasons = "failed", [f"{rel}:1: generated code does not compile; please report it"]
        return done
    report.notes.extend(context.warnings)
    done.output = output
    done.removed = [r for r in getattr(command, "removed_names", []) if not r.imported]
    done.emptied = bool(getattr(command, "emptied", False))
    if output != source:
        report.status = "changed"
    return done


def _places(refs: Sequence[Reference]) -> str:
    shown = ", ".join(r.format() for r in refs[:_SHOWN])
    return shown if len(refs) <= _SHOWN else f"{shown} and {len(refs) - _SHOWN} more"


def plan_app_files(
    root: Path,
    options: ConvertOptions,
    style: ImportStyle,
    changes: Sequence[Change],
    reports: Sequence[FileReport] = (),
) -> AppPlan:
    """The reports and file operations of the legacy app's files (see the module docstring).

    ``changes`` and ``reports``: the rest of the conversion (the converted tree is searched as its
    operations leave it; a recording handler found in the tasks package is noted on its report).
    """
    result = AppPlan()
    if not options.app_files or not (root / APP_PACKAGE).is_dir():
        return result
    tasks_prefix = "/".join(options.tasks_dir_parts) + "/"
    _handlers_in_tasks_package(root, tasks_prefix, changes, reports)
    done: dict[str, _Done] = {}

    def run(rel: str, kind: str, make: Callable[[CodemodContext], Command], quiet: bool = False) -> _Done | None:
        if not (root / rel).is_file():
            return None
        item = _run(root, rel, kind, make, quiet)
        if item is not None:
            done[rel] = item
        return item

    celery_app, registry = module_path(CELERY_APP_MODULE), module_path(REGISTRY_MODULE)
    executor_rel, renamed_rel = module_path(EXECUTOR_MODULE), module_path(RENAMED_EXECUTOR_MODULE)
    run(celery_app, "celery_app", lambda c: ShareCeleryAppCommand(c, options.celery_app_import, style))
    executor = _executor(root, result, run)
    run(registry, "scheduler_registry", lambda c: SimplifySchedulerRegistryCommand(c, options.celery_app_import, style))
    config: tuple[str, bytes] | None = None
    for path in python_files(root / APP_PACKAGE):
        rel = path.relative_to(root).as_posix()
        if rel in (celery_app, registry, executor_rel, renamed_rel) or rel.startswith(tasks_prefix):
            continue
        module = module_of_path(rel)[0]
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        if module == MODEL_MODULES or module.startswith(MODEL_MODULES + "."):
            if SCHEDULES_TABLE.encode() in data:
                run(rel, "model", DeprecateHandlerPathCommand, quiet=True)
        elif module == CONFIG_MODULES:
            config = (rel, data)
        elif module == _SCHEDULER:
            result.files.append(
                FileReport(rel, "legacy_scheduler", "skipped", reasons=[
                    "left in place: beat runs dataforge.celery_scheduler:DatabaseScheduler (the default of "
                    "celery -A dataforge.celery_app beat); a beat started with -S "
                    f"{_SCHEDULER}:DatabaseScheduler would dispatch every schedule a second time"
                ])
            )  # fmt: skip
        elif module == SIGNALS_MODULE or (b"connect" in data and b"signals" in data):
            run(rel, "signal_handlers", RemoveSignalHandlersCommand)

    # Where each file's content ends up (the executor's at its new name).
    final = {(renamed_rel if rel == executor_rel and executor is not None else rel): d for rel, d in done.items()}
    modules = {module_of_path(rel)[0]: rel for rel in final}
    emptied = {module_of_path(rel)[0]: rel for rel, d in final.items() if d.emptied}
    removed = {module_of_path(rel)[0]: d for rel, d in final.items() if d.removed}
    if executor is not None:
        modules[EXECUTOR_MODULE] = renamed_rel
        removed.setdefault(EXECUTOR_MODULE, executor)
        removed.pop(RENAMED_EXECUTOR_MODULE, None)

    def converted() -> dict[str, bytes]:
        outputs = [Change(rel, None, d.output) for rel, d in final.items() if d.output is not None]
        gone = [Change(executor_rel, None, None)] if executor is not None else []
        return converted_sources(root, [*changes, *outputs, *gone])

    if emptied or removed:
        before_deletions = converted()
        _delete_emptied(emptied, final, before_deletions)
        # A module deleted now leaves the tree searched next.
        deleted = {rel for rel, d in final.items() if d.output is None and d.report.status == "changed"}
        sources = {rel: data for rel, data in before_deletions.items() if rel not in deleted}
        _report_users(removed, emptied, final, modules, sources)
    else:
        sources = None
    if config is not None:
        result.files.append(_config_report(*config, sources if sources is not None else converted()))
    for rel, item in done.items():
        if rel == executor_rel and executor is not None:
            continue  # reported, and its operations (the rename) planned, by _executor
        result.files.append(item.report)
        if item.report.status == "changed":
            result.changes.append(Change(rel, item.source, item.output))
    result.files.sort(key=lambda f: f.path)
    return result


def _handlers_in_tasks_package(
    root: Path, prefix: str, changes: Sequence[Change], reports: Sequence[FileReport]
) -> None:
    """The worker imports every module of the tasks package, so a recording handler there runs
    beside the runtime's. Those files belong to the job and retarget commands: each such handler
    is reported on its file's report, to be removed by hand."""
    planned = {c.path: c.new for c in changes}
    sources: dict[str, bytes] = {}
    tasks_dir = root / prefix.rstrip("/")
    if tasks_dir.is_dir():
        for path in python_files(tasks_dir):
            rel = path.relative_to(root).as_posix()
            if rel not in planned:
                try:
                    sources[rel] = path.read_bytes()
                except OSError:
                    continue
    sources.update({rel: new for rel, new in planned.items() if new is not None and rel.startswith(prefix)})
    by_path = {f.target or f.path: f for f in reports}
    for rel, data in sorted(sources.items()):
        if b"connect" not in data or b"signals" not in data or rel not in by_path:
            continue
        try:
            tree = ast.parse(data, filename=rel)
        except (SyntaxError, ValueError):
            continue
        for handler in find_signal_handlers(tree):
            if handler.owned and handler.records:
                by_path[rel].notes.append(
                    f"{rel}:{handler.line}: {handler.function}() ({', '.join(handler.signals)}) records runs, and the "
                    f"worker imports this module: {handler.replacement()}; remove it by hand"
                )


def _executor(
    root: Path, result: AppPlan, run: Callable[[str, str, Callable[[CodemodContext], Command]], _Done | None]
) -> _Done | None:
    """``app/celery_tasks.py`` renamed (``None`` when there is nothing to rename)."""
    source_rel, target_rel = module_path(EXECUTOR_MODULE), module_path(RENAMED_EXECUTOR_MODULE)
    if not (root / source_rel).is_file():
        run(target_rel, "legacy_executor", KeepLegacyExecutorCommand)  # converted before: kept as it is
        return None
    if (root / target_rel).exists():
        result.files.append(
            FileReport(source_rel, "legacy_executor", "refused", reasons=[
                f"{source_rel}:1: {target_rel} already exists: the rename would overwrite it; delete or rename "
                "one of the two, then re-run"
            ])
        )  # fmt: skip
        return None
    item = run(source_rel, "legacy_executor", KeepLegacyExecutorCommand)
    if item is None or item.output is None:
        return None  # refused or failed: reported with the others, left as it is
    item.report.status, item.report.target = "changed", target_rel
    item.report.notes.append(
        f"renamed to {target_rel}: kept for a full rollback of the code; nothing imports it (the legacy switch "
        "brings the legacy path back, `dataforge legacy enable`)"
    )
    result.files.append(item.report)
    result.changes.append(
        Change(target_rel, None, item.output, origin=source_rel, origin_data=item.source, mode=_mode(root / source_rel))
    )
    result.changes.append(Change(source_rel, item.source, None))
    return item


def _delete_emptied(emptied: dict[str, str], final: dict[str, _Done], sources: dict[str, bytes]) -> None:
    """A module left with nothing of use goes, unless something else imports it."""
    if not emptied:
        return
    importers = references_in(
        ((rel, data) for rel, data in sources.items() if rel not in emptied.values()), Targets(frozenset(emptied))
    )
    for module, rel in emptied.items():
        item = final[rel]
        users = [r for r in importers if r.module == module]
        if rel.endswith("/__init__.py"):
            item.report.notes.append("kept without its handlers: it makes its folder a package")
            continue
        if users:
            item.report.notes.append(f"kept without its handlers: imported by {_places(users)}")
            continue
        item.output = None
        item.report.status = "changed"
        item.report.notes.append("deleted: nothing else in it was of use, and nothing imports it")


def _report_users(
    removed: dict[str, _Done],
    emptied: dict[str, str],
    final: dict[str, _Done],
    modules: dict[str, str],
    sources: dict[str, bytes],
) -> None:
    """Every place of the converted tree that uses a removed name, or a renamed or deleted module."""
    deleted = {m for m, rel in emptied.items() if final[rel].output is None}
    renamed = {EXECUTOR_MODULE} if EXECUTOR_MODULE in removed else set()
    names = {module: frozenset(r.name for r in d.removed) for module, d in removed.items() if d.removed}
    refs = references_in(sources.items(), Targets(frozenset(deleted | renamed), names))
    owners = {**removed, **{m: final[emptied[m]] for m in deleted}}
    for module, item in owners.items():
        own = modules.get(module)
        by_name: dict[str | None, list[Reference]] = {}
        for ref in refs:
            if ref.module == module and ref.path != own:
                by_name.setdefault(ref.name, []).append(ref)
        for name, places in sorted(by_name.items(), key=lambda kv: kv[0] or ""):
            if name is None and module == EXECUTOR_MODULE:
                item.report.notes.append(
                    f"{_places(places)}: still refers to {module}, which is now {RENAMED_EXECUTOR_MODULE} (rollback "
                    "only: importing it registers the legacy task name again); send the task by name "
                    "(celery_app.send_task(...)) or drop the reference"
                )
            elif name is None:
                item.report.notes.append(f"{_places(places)}: still refers to {module}, which is deleted")
            else:
                item.report.notes.append(f"{_places(places)}: uses {name}, which {module} no longer defines")


def _config_report(rel: str, data: bytes, sources: dict[str, bytes]) -> FileReport:
    """``app/config.py``: each setting, what the runtime reads instead, and who still reads it."""
    report = FileReport(rel, "settings", "skipped", reasons=[
        "kept as it is: the runtime does not read it, the rest of the backend may (each setting below)"
    ])  # fmt: skip
    try:
        settings = config_settings(ast.parse(data, filename=rel))
    except (SyntaxError, ValueError):
        return report
    refs = references_in(
        ((path, src) for path, src in sources.items() if path != rel),
        Targets(names={CONFIG_MODULES: frozenset(s.name for s in settings)}),
    )
    for setting in settings:
        env = f" (env {setting.env})" if setting.env and setting.env != setting.name else ""
        counterpart = runtime_counterpart(setting.name, setting.env)
        instead = f"; it reads {counterpart}" if counterpart else ""
        readers = [r for r in refs if r.name == setting.name]
        who = f"still read by {_places(readers)}" if readers else "nothing in the backend reads it any more"
        report.notes.append(f"line {setting.line}: {setting.name}{env}: the runtime does not read it{instead}; {who}")
    return report
