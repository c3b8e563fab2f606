"""``dataforge verify``: prove a conversion by running each job both ways and comparing.

For every case (job, kwargs, optional expectations) the legacy job runs the way the legacy
executor ran it (``scripts.<job>.run(**{"_lock_key": ..., **kwargs, "scheduled_task_id": id})``,
coroutines through ``asyncio.run``) from a copy of the *original* tree, and the converted task
runs through ``DataForgeTask`` from a converted copy: eagerly (``task.apply``) and, with
``worker=True``, through a real ``celery worker`` on the embedded defaults. Every difference
in result or exception is reported.

The original tree is never modified: each side runs in its own copy (jobs write local files),
in its own child process (both trees have an ``app`` package, so they cannot share one
interpreter), with its own throw-away databases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.legacy.paths import HandlerMap, task_name_for_module
from dataforge.protocol import SCHEDULE_ID_KWARG
from dataforge.settings import Settings
from dataforge.worker.kwargs import with_legacy_lock_key
from refactor_tool.errors import RefactorError
from refactor_tool.options import MAP_FILE_NAME, ConvertOptions
from refactor_tool.runner import convert
from refactor_tool.writes import TEMP_SUFFIX

__all__ = [
    "CASES_VERSION",
    "Case",
    "CaseReport",
    "Expectation",
    "Outcome",
    "VerifyError",
    "VerifyReport",
    "compare",
    "legacy_call_kwargs",
    "load_cases",
    "verify",
]

CASES_VERSION = 1
#: Modes the converted side runs in.
EAGER, WORKER = "eager", "worker"


class VerifyError(RefactorError):
    """The verification could not run (bad cases file, a child process that died...)."""


def legacy_call_kwargs(kwargs: Mapping[str, Any], scheduled_task_id: int) -> dict[str, Any]:
    """What the legacy ``execute_scheduled_task`` passed to ``run``: its lock key first, then the
    schedule's kwargs, then the schedule id. A ``run`` without ``**kwargs`` therefore failed with
    ``TypeError: run() got an unexpected keyword argument '_lock_key'``."""
    return with_legacy_lock_key({**kwargs, SCHEDULE_ID_KWARG: scheduled_task_id})


@dataclass(frozen=True)
class Expectation:
    """What one side must produce: a result, or an exception (type name, message substring)."""

    result: Any = None
    has_result: bool = False
    exception: str | None = None
    message: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str) -> Expectation:
        if not isinstance(data, dict) or not ({"result", "exception"} & set(data)):
            raise VerifyError(f"{where}: expected an object with 'result' or 'exception' (and optional 'message')")
        if "result" in data and "exception" in data:
            raise VerifyError(f"{where}: give 'result' or 'exception', not both")
        exception = data.get("exception")
        if exception is not None and not isinstance(exception, str):
            raise VerifyError(f"{where}: 'exception' must be an exception class name such as 'ValueError'")
        message = data.get("message")
        return cls(data.get("result"), "result" in data, exception, None if message is None else str(message))

    def describe(self) -> str:
        if self.has_result:
            return f"result {self.result!r}"
        return f"{self.exception}" + (f" containing {self.message!r}" if self.message else "")


@dataclass(frozen=True)
class Case:
    """One verification case of the cases file."""

    id: str
    job: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    scheduled_task_id: int = 1
    #: What the converted task must do (and the legacy job too, unless ``legacy_expected``).
    expected: Expectation | None = None
    #: What the legacy job does when it differs on purpose (the ``_lock_key`` TypeError fix).
    legacy_expected: Expectation | None = None
    #: Top-level result keys that legitimately differ between runs (pids, timestamps).
    ignore: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "job": self.job, "kwargs": self.kwargs, "scheduled_task_id": self.scheduled_task_id}


def load_cases(path: Path) -> list[Case]:
    """Read and validate a cases file (``{"version": 1, "cases": [...]}`` or a bare list)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VerifyError(f"{path}: cannot read the cases file: {exc}") from exc
    items = data.get("cases") if isinstance(data, dict) else data
    if isinstance(data, dict) and data.get("version", CASES_VERSION) != CASES_VERSION:
        raise VerifyError(f"{path}: unsupported cases file version {data.get('version')!r}")
    if not isinstance(items, list) or not items:
        raise VerifyError(f"{path}: expected a non-empty list of cases")
    cases: list[Case] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{path}: case {i + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("job"), str) or not item["job"].isidentifier():
            raise VerifyError(f"{where}: each case needs 'job', the module name of scripts/<job>.py")
        kwargs = item.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise VerifyError(f"{where}: 'kwargs' must be an object")
        case_id = str(item.get("id") or f"{item['job']}#{i + 1}")
        if case_id in seen:
            raise VerifyError(f"{where}: duplicate case id {case_id!r}")
        seen.add(case_id)
        sid = item.get("scheduled_task_id", 1)
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise VerifyError(f"{where}: 'scheduled_task_id' must be an integer")
        ignore = item.get("ignore", [])
        if not isinstance(ignore, list) or not all(isinstance(k, str) for k in ignore):
            raise VerifyError(f"{where}: 'ignore' must be a list of result keys")
        cases.append(
            Case(
                id=case_id,
                job=item["job"],
                kwargs=dict(kwargs),
                scheduled_task_id=sid,
                expected=Expectation.from_json(item["expected"], f"{where}: expected") if "expected" in item else None,
                legacy_expected=(
                    Expectation.from_json(item["legacy_expected"], f"{where}: legacy_expected")
                    if "legacy_expected" in item
                    else None
                ),
                ignore=tuple(ignore),
            )
        )
    return cases


@dataclass(frozen=True)
class Outcome:
    """What one run produced (JSON-normalised result, or the exception)."""

    ok: bool
    result: Any = None
    exception: str | None = None
    #: Class names of the exception's MRO (so ``TypeError`` matches ``JobArgumentError``).
    exception_types: tuple[str, ...] = ()
    message: str | None = None
    #: Celery state for the converted side (SUCCESS, FAILURE, IGNORED...).
    state: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            ok=bool(data.get("ok")),
            result=data.get("result"),
            exception=data.get("exception"),
            exception_types=tuple(data.get("exception_types") or ()),
            message=data.get("message"),
            state=data.get("state"),
        )

    def describe(self) -> str:
        if self.ok:
            return f"result {self.result!r}"
        state = f" [{self.state}]" if self.state and self.state != "FAILURE" else ""
        return f"{self.exception}: {self.message}{state}"


def _strip(result: Any, ignore: Sequence[str]) -> Any:
    if isinstance(result, dict) and ignore:
        return {k: v for k, v in result.items() if k not in ignore}
    return result


def _matches(outcome: Outcome, expectation: Expectation, ignore: Sequence[str]) -> bool:
    if expectation.has_result:
        return outcome.ok and _strip(outcome.result, ignore) == _strip(expectation.result, ignore)
    if outcome.ok or expectation.exception is None:
        return False
    names = {outcome.exception, *outcome.exception_types}
    if expectation.exception not in names:
        return False
    return expectation.message is None or expectation.message in (outcome.message or "")


def _result_differences(legacy: Any, new: Any, mode: str) -> list[str]:
    if isinstance(legacy, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(legacy) | set(new), key=str):
            if key not in new:
                out.append(f"result[{key!r}]: legacy {legacy[key]!r}, {mode} has no such key")
            elif key not in legacy:
                out.append(f"result[{key!r}]: {mode} {new[key]!r}, legacy has no such key")
            elif legacy[key] != new[key]:
                out.append(f"result[{key!r}]: legacy {legacy[key]!r}, {mode} {new[key]!r}")
        return out
    return [f"result: legacy {legacy!r}, {mode} {new!r}"]


def compare(case: Case, legacy: Outcome, converted: Mapping[str, Outcome]) -> list[str]:
    """Every difference for one case (pure). Empty means the conversion is proven for it."""
    problems: list[str] = []
    legacy_rule = case.legacy_expected or case.expected
    if legacy_rule is not None and not _matches(legacy, legacy_rule, case.ignore):
        problems.append(f"legacy: expected {legacy_rule.describe()}, got {legacy.describe()}")
    for mode, outcome in converted.items():
        if case.expected is not None:
            if not _matches(outcome, case.expected, case.ignore):
                problems.append(f"{mode}: expected {case.expected.describe()}, got {outcome.describe()}")
            continue
        if case.legacy_expected is not None:
            # The legacy side fails on purpose (the fix): the converted task must succeed.
            if not outcome.ok:
                problems.append(f"{mode}: expected success (legacy differs on purpose), got {outcome.describe()}")
            continue
        if legacy.ok != outcome.ok:
            problems.append(f"{mode}: legacy gave {legacy.describe()}, {mode} gave {outcome.describe()}")
        elif legacy.ok:
            a, b = _strip(legacy.result, case.ignore), _strip(outcome.result, case.ignore)
            if a != b:
                problems.extend(f"{mode}: {d}" for d in _result_differences(a, b, mode))
        elif (legacy.exception, legacy.message) != (outcome.exception, outcome.message):
            problems.append(f"{mode}: legacy raised {legacy.describe()}, {mode} raised {outcome.describe()}")
    return problems


@dataclass
class CaseReport:
    case: Case
    legacy: Outcome | None
    converted: dict[str, Outcome]
    differences: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "job": self.case.job,
            "ok": self.ok,
            "differences": list(self.differences),
            "legacy": None if self.legacy is None else self.legacy.__dict__,
            "converted": {mode: o.__dict__ for mode, o in self.converted.items()},
        }


@dataclass
class VerifyReport:
    cases: list[CaseReport]
    modes: list[str]
    conversion_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cases)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "modes": list(self.modes),
            "conversion": list(self.conversion_notes),
            "cases": [c.to_json() for c in self.cases],
        }

    def lines(self) -> list[str]:
        out = []
        for c in self.cases:
            if c.ok:
                out.append(f"ok: {c.case.id} ({c.case.job})")
            else:
                out.extend(f"DIFF: {c.case.id} ({c.case.job}): {d}" for d in c.differences)
        failed = sum(not c.ok for c in self.cases)
        out.append(f"{len(self.cases) - failed} case(s) identical, {failed} with differences ({', '.join(self.modes)})")
        return out


# -- running ---------------------------------------------------------------------------------
def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.db", f".*{TEMP_SUFFIX}"))


def _child_env(tree: Path, state: Path, tasks_package: str) -> dict[str, str]:
    """The child's environment: no DATAFORGE_* of the caller (never a production database),
    the embedded defaults rooted in ``state``, the tree first on ``sys.path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    settings = Settings.from_env({"DATAFORGE_TASK_PACKAGES": tasks_package}, cwd=state)
    env.update(settings.as_env())
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run_child(
    mode: str, tree: Path, state: Path, cases: list[dict[str, Any]], options: ConvertOptions, timeout: float
) -> list[Outcome]:
    state.mkdir(parents=True, exist_ok=True)
    cases_file = state / "cases.json"
    out_file = state / "outcomes.json"
    cases_file.write_text(json.dumps(cases), encoding="utf-8")
    argv = [
        sys.executable,
        "-m",
        "refactor_tool.verify_child",
        mode,
        str(cases_file),
        str(out_file),
        "--scripts-package",
        options.scripts_package,
        "--timeout",
        str(timeout),
    ]
    overall = timeout * (len(cases) + 2) + 120
    try:
        proc = subprocess.run(
            argv,
            cwd=tree,
            env=_child_env(tree, state, options.tasks_package),
            capture_output=True,
            text=True,
            timeout=overall,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise VerifyError(f"{mode} run did not finish within {overall:.0f}s") from exc
    if proc.returncode != 0 or not out_file.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise VerifyError(f"{mode} run failed (exit {proc.returncode}):\n{tail}")
    data = json.loads(out_file.read_text(encoding="utf-8"))
    return [Outcome.from_json(item) for item in data]


def verify(
    root: Path,
    cases: list[Case],
    options: ConvertOptions | None = None,
    *,
    worker: bool = False,
    timeout: float = 60.0,
    workdir: Path | None = None,
) -> VerifyReport:
    """Run every case both ways; see the module docstring. Raises :class:`VerifyError` only when
    the verification itself cannot run."""
    options = options or ConvertOptions()
    root = root.resolve()
    if not (root / options.scripts_package).is_dir():
        raise VerifyError(
            f"{root}: no {options.scripts_package}/ folder; verify needs the legacy tree before conversion "
            "(or one converted with --keep-scripts)"
        )
    with tempfile.TemporaryDirectory(prefix="dataforge-verify-", dir=workdir) as tmp_name:
        tmp = Path(tmp_name)
        legacy_tree, converted_tree = tmp / "legacy" / "backend", tmp / "converted"
        _copy_tree(root, legacy_tree)
        _copy_tree(root, converted_tree)
        conversion = convert(converted_tree, options)
        notes = [line for line in conversion.summary_lines(verbose=False)]
        refused = {
            Path(f.path).stem: "; ".join(f.reasons)
            for f in conversion.files
            if f.status in ("refused", "failed") and f.path.startswith(options.scripts_package + "/")
        }
        map_file = converted_tree / MAP_FILE_NAME
        handler_map = HandlerMap.load(map_file) if map_file.exists() else HandlerMap.empty(options.scripts_package)
        payload = []
        for case in cases:
            entry = handler_map.modules.get(case.job)
            payload.append(
                {**case.to_json(), "task_name": entry["task_name"] if entry else task_name_for_module(case.job)}
            )
        modes = [EAGER] + ([WORKER] if worker else [])
        legacy = _run_child("legacy", legacy_tree, tmp / "legacy" / "state", payload, options, timeout)
        # Only jobs that converted run the new way (a tree where none did has no tasks package).
        runnable = [i for i, case in enumerate(cases) if case.job not in refused]
        converted: dict[str, dict[int, Outcome]] = {mode: {} for mode in modes}
        if runnable:
            for mode in modes:
                tree = tmp / mode / "backend"
                _copy_tree(converted_tree, tree)
                outcomes = _run_child(
                    mode, tree, tmp / mode / "state", [payload[i] for i in runnable], options, timeout
                )
                converted[mode] = dict(zip(runnable, outcomes, strict=True))
    reports = []
    for i, case in enumerate(cases):
        if case.job in refused:
            reports.append(CaseReport(case, legacy[i], {}, [f"not converted: {refused[case.job]}"]))
            continue
        by_mode = {mode: converted[mode][i] for mode in modes}
        reports.append(CaseReport(case, legacy[i], by_mode, compare(case, legacy[i], by_mode)))
    return VerifyReport(reports, modes, notes)
