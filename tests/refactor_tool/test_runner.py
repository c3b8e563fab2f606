"""The runner on whole trees: what moves, what is refused and why, atomic writes, --jobs determinism."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import libcst as cst
import pytest

from dataforge.legacy.paths import HandlerMap, handler_path_spellings
from refactor_tool.options import MAP_FILE_NAME, ConvertOptions
from refactor_tool.report import ConvertReport, FileReport
from refactor_tool.runner import convert
from refactor_tool.writes import atomic_write
from tests.refactor_tool.support import EXAMPLE, make_tree, snapshot

JOB = '"""Job {name}."""\nfrom scripts._common import helper\n\n\ndef run(n: int = 1):\n    return helper(n)\n'
COMMON = "def helper(n):\n    return n + 1\n"


def _file(report: ConvertReport, path: str) -> FileReport:
    return next(f for f in report.files if f.path == path)


def _registry(root: Path, rel: str = "app/tasks/__init__.py") -> dict[str, object]:
    tree = ast.parse((root / rel).read_bytes())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and getattr(stmt.targets[0], "id", None) == "REGISTERED_TASKS":
            return dict(ast.literal_eval(stmt.value))
    raise AssertionError("no REGISTERED_TASKS")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    root = tmp_path / "backend"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_example_converts_cleanly_and_idempotently(example: Path) -> None:
    report = convert(example)
    assert report.exit_code(check=False) == 0, report.summary_lines()
    assert report.counts()["refused"] == report.counts()["failed"] == 0
    jobs = sorted(p.stem for p in (EXAMPLE / "scripts").glob("[!_]*.py") if p.stem != "check_config")
    for job in jobs:
        assert (example / "app" / "tasks" / f"{job}.py").exists()
        assert not (example / "scripts" / f"{job}.py").exists()
    # Helpers moved along; the non-job module stays, so does the package __init__ beside it.
    assert (example / "app/tasks/_common.py").read_bytes() == (EXAMPLE / "scripts/_common.py").read_bytes()
    assert (example / "app/tasks/lib/dates.py").exists() and not (example / "scripts/lib").exists()
    assert sorted(p.name for p in (example / "scripts").iterdir()) == ["__init__.py", "check_config.py"]
    # The registry lists every job once, and kept the hand-written entries.
    registry = _registry(example)
    assert set(registry) == {f"dataforge.{j}" for j in jobs} | {"dataforge.cleanup_sessions", "dataforge.vacuum_stats"}
    assert registry["dataforge.cleanup_sessions"]["name"] == "会话清理"  # type: ignore[index]
    # The map file: every spelling of every job.
    handler_map = HandlerMap.load(example / MAP_FILE_NAME)
    for job in jobs:
        for spelling in handler_path_spellings(job):
            assert handler_map.task_name_for(spelling) == f"dataforge.{job}"
    assert handler_map.modules["refresh_exchange_rates"]["function"] == "refresh_exchange_rates_task"
    # Run on its own output: nothing changes, --check passes.
    before = snapshot(example)
    again = convert(example)
    assert again.changes == [] and again.counts()["changed"] == 0
    assert snapshot(example) == before
    assert convert(example, mode="check").exit_code(check=True) == 0


def test_keep_scripts_copies_and_rerun_is_unchanged(example: Path) -> None:
    report = convert(example, ConvertOptions(keep_scripts=True))
    assert report.exit_code(check=False) == 0
    assert (example / "scripts/ping.py").exists() and (example / "app/tasks/ping.py").exists()
    assert _file(report, "scripts/__init__.py").reasons == ["kept (--keep-scripts)"]
    again = convert(example, ConvertOptions(keep_scripts=True), mode="check")
    assert again.exit_code(check=True) == 0
    assert _file(again, "scripts/ping.py").status == "unchanged"


def test_diff_and_check_write_nothing(example: Path) -> None:
    before = snapshot(example)
    diff_report = convert(example, mode="diff")
    check_report = convert(example, mode="check")
    assert snapshot(example) == before
    assert check_report.exit_code(check=True) == 1 and diff_report.exit_code(check=False) == 0
    diff = diff_report.diff()
    assert b"rename from scripts/ping.py\nrename to app/tasks/ping.py\n" in diff
    assert b'+@celery_app.task(base=DataForgeTask, bind=True, name="dataforge.ping")\n' in diff
    assert b"diff --git a/dataforge-handler-map.json b/dataforge-handler-map.json\nnew file mode 100644\n" in diff
    assert " Écrit par".encode("latin-1") in diff  # the latin-1 file stays latin-1 in the patch


def test_diff_applies_with_git_and_equals_the_write(example: Path, tmp_path: Path) -> None:
    """--diff is a real patch: `git apply` on the original gives exactly what the write phase writes."""
    repo = tmp_path / "repo"
    shutil.copytree(example, repo)
    diff = convert(repo, mode="diff").diff()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], cwd=repo, input=diff, check=True)
    shutil.rmtree(repo / ".git")
    convert(example)
    assert snapshot(repo) == snapshot(example)


def test_jobs_2_is_identical_to_jobs_1(example: Path) -> None:
    one = convert(example, mode="diff", jobs=1)
    two = convert(example, mode="diff", jobs=2)
    assert one.to_json() == two.to_json()
    assert one.diff() == two.diff()
    assert one.changes == two.changes


def test_a_job_using_a_name_that_cannot_move_is_refused_and_keeps_its_sources(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/__init__.py": "",
            "scripts/_common.py": COMMON,
            "scripts/_paths.py": "import os\nHERE = os.path.dirname(__file__)\n",
            "scripts/good.py": JOB.format(name="good"),
            "scripts/bad.py": '"""Bad."""\nfrom scripts._paths import HERE\n\n\ndef run():\n    return HERE\n',
        },
    )
    report = convert(root)
    assert report.exit_code(check=False) == 2
    # Not a job, so never refused itself: it stays, with the job that needs it.
    assert _file(report, "scripts/_paths.py").status == "skipped"
    bad = _file(report, "scripts/bad.py")
    assert bad.status == "refused"
    assert bad.reasons == [
        "scripts/bad.py:2: uses scripts._paths.HERE, which changes meaning once moved: scripts/_paths.py:2: uses "
        "__file__: the module moves from scripts/ to the tasks package, so paths built from it would point "
        "elsewhere; read the location from a setting instead"
    ]
    assert _file(report, "scripts/good.py").status == "changed"
    assert (root / "app/tasks/good.py").exists() and not (root / "scripts/good.py").exists()
    # The refused job still runs the legacy way: its helpers stay where it imports them from.
    assert (root / "scripts/bad.py").exists() and (root / "scripts/_paths.py").exists()
    assert (root / "app/tasks/_common.py").exists()
    assert list(_registry(root)) == ["dataforge.good"]
    assert set(HandlerMap.load(root / MAP_FILE_NAME).modules) == {"good"}


def test_dependency_reason_points_at_the_import_line(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/_paths.py": "import os\nHERE = os.path.dirname(__file__)\n",
            "scripts/bad.py": '"""Bad."""\nfrom scripts._paths import HERE\n\n\ndef run():\n    return HERE\n',
        },
    )
    bad = _file(convert(root, mode="check"), "scripts/bad.py")
    assert bad.reasons[0].startswith("scripts/bad.py:2: uses scripts._paths.HERE, which changes meaning")


def test_helper_needed_by_a_remaining_module_is_kept(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/_common.py": COMMON,
            "scripts/good.py": JOB.format(name="good"),
            "scripts/star.py": "from scripts._common import *\n\n\ndef run():\n    return helper(1)\n",
        },
    )
    report = convert(root)
    assert _file(report, "scripts/star.py").status == "refused"
    assert (root / "scripts/_common.py").exists() and (root / "app/tasks/_common.py").exists()
    assert any("modules left in scripts/ import it" in n for n in _file(report, "scripts/_common.py").notes)


def test_non_job_module_moves_only_when_imported(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/constants.py": "LIMIT = 3\n",
            "scripts/tool.py": "def main():\n    print('hi')\n\n\nmain()\n",
            "scripts/job.py": "from scripts.constants import LIMIT\n\n\ndef run():\n    return LIMIT\n",
        },
    )
    report = convert(root)
    assert report.exit_code(check=False) == 0, report.summary_lines()
    assert _file(report, "scripts/constants.py").status == "changed"
    tool = _file(report, "scripts/tool.py")
    assert tool.status == "skipped" and tool.reasons == ["not a job: no module-level run; left in scripts/"]
    assert (root / "app/tasks/constants.py").exists() and (root / "scripts/tool.py").exists()


def test_missing_module_unparsable_file_and_bad_names(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/good.py": "def run():\n    return 1\n",
            "scripts/missing.py": "from scripts._gone import x\n\n\ndef run():\n    return x\n",
            "scripts/broken.py": "def run(:\n    pass\n",
            "scripts/outside.py": "def run():\n    pass\n\n\nreturn 1\n",  # only the compiler rejects it
            "scripts/sync-accounts.py": "def run():\n    return 1\n",
            "scripts/latin.py": b"x = '\xe9'\ndef run():\n    return x\n",
            "scripts/__init__.py": "REGISTRY = {}\n",
        },
    )
    report = convert(root)
    assert b"REGISTRY = {}" in (root / "app/tasks/__init__.py").read_bytes()  # carried over
    assert report.exit_code(check=False) == 2
    assert _file(report, "scripts/good.py").status == "changed"
    assert _file(report, "scripts/missing.py").reasons == [
        "scripts/missing.py:1: imports scripts._gone, which does not exist under scripts/"
    ]
    broken = _file(report, "scripts/broken.py")
    assert broken.status == "failed" and broken.reasons[0].startswith("scripts/broken.py:1: does not parse")
    assert _file(report, "scripts/latin.py").status == "failed"  # not UTF-8 and no coding cookie
    assert _file(report, "scripts/outside.py").reasons == [
        "scripts/outside.py:5: does not parse: 'return' outside function"
    ]
    assert "not a Python identifier" in _file(report, "scripts/sync-accounts.py").reasons[0]
    init = _file(report, "scripts/__init__.py")
    assert init.status == "skipped" and init.reasons == ["kept: scripts/ still holds modules that were not converted"]


def test_task_name_and_target_collisions(tmp_path: Path) -> None:
    existing = (
        "from app.celery_app import celery_app\n\n\n"
        "@celery_app.task(bind=True, name='dataforge.report')\ndef report_task(self):\n    return 1\n"
    )
    root = make_tree(
        tmp_path,
        {
            "scripts/report.py": "def run():\n    return 1\n",
            "scripts/other.py": "def run():\n    return 2\n",
            "app/tasks/legacy_reports.py": existing,
            "app/tasks/other.py": "# hand-written, not a conversion\n",
        },
    )
    report = convert(root, mode="check")
    assert (
        "task name dataforge.report is already registered by app/tasks/legacy_reports.py:4"
        in (_file(report, "scripts/report.py").reasons[0])
    )
    assert "app/tasks/other.py already exists and differs" in _file(report, "scripts/other.py").reasons[0]
    assert _file(report, "app/tasks/legacy_reports.py").status == "changed"  # retargeted all the same


def test_missing_packages_registry_and_map_merge(tmp_path: Path) -> None:
    old_map = HandlerMap("scripts", "app.tasks", {"scripts:retired": "dataforge.retired"}, {})
    root = make_tree(
        tmp_path,
        {
            "scripts/ping.py": "def run():\n    return 1\n",
            MAP_FILE_NAME: json.dumps(old_map.to_json()),
        },
    )
    report = convert(root)
    assert report.exit_code(check=False) == 0
    assert (root / "app/__init__.py").exists() and list(_registry(root)) == ["dataforge.ping"]
    merged = HandlerMap.load(root / MAP_FILE_NAME)
    assert merged.handlers["scripts:retired"] == "dataforge.retired"
    assert merged.handlers["scripts/ping.py"] == "dataforge.ping"
    assert not (root / "scripts").exists()  # emptied, removed


def test_unreadable_map_file_fails_without_blocking_the_rest(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"scripts/ping.py": "def run():\n    return 1\n", MAP_FILE_NAME: "{not json"})
    report = convert(root)
    assert report.exit_code(check=False) == 2
    assert _file(report, MAP_FILE_NAME).status == "failed"
    assert (root / MAP_FILE_NAME).read_text() == "{not json" and (root / "app/tasks/ping.py").exists()


@pytest.mark.parametrize("fail_at", [1, 3, 6])
def test_a_write_failure_rolls_everything_back(example: Path, fail_at: int) -> None:
    before = snapshot(example)
    calls: list[Path] = []

    def flaky(path: Path, data: bytes, mode: int | None = None) -> None:
        calls.append(path)
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        atomic_write(path, data, mode)

    report = convert(example, write=flaky)
    assert len(calls) == fail_at
    assert report.write_error is not None and "No space left on device" in report.write_error
    assert report.exit_code(check=False) == 3  # the environment failed, not the input
    assert snapshot(example) == before
    assert not list(example.rglob("*.dataforge-tmp"))
    assert all(f.status != "changed" for f in report.files)


def test_a_file_edited_between_the_phases_stops_the_write(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from refactor_tool import runner
    from refactor_tool.plan import Plan, plan

    def plan_then_edit(root: Path, *args: Any) -> Plan:
        decided = plan(root, *args)
        (root / "app/tasks/__init__.py").write_text("# edited by someone else\n")
        return decided

    monkeypatch.setattr(runner, "plan", plan_then_edit)
    before = snapshot(example)
    report = convert(example)
    monkeypatch.undo()
    assert report.write_error == "app/tasks/__init__.py changed on disk since it was read; re-run"
    after = snapshot(example)
    assert after.pop("app/tasks/__init__.py")[0] == b"# edited by someone else\n"
    before.pop("app/tasks/__init__.py")
    assert after == before


def test_atomic_write_keeps_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.py"
    target.write_text("old")
    target.chmod(0o750)
    atomic_write(target, b"new", 0o750)
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["x.py"]


def test_a_job_running_a_module_that_cannot_move_is_refused_naming_its_statement(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/settings.py": "import logging\nlogging.basicConfig()\nLEVEL = 1\n",
            "scripts/job.py": "from scripts.settings import LEVEL\n\n\ndef run():\n    return LEVEL\n",
        },
    )
    report = convert(root, mode="check")
    assert _file(report, "scripts/settings.py").status == "skipped"
    assert _file(report, "scripts/job.py").reasons[0].startswith(
        "scripts/job.py:1: imports scripts.settings, which cannot move: scripts/settings.py:2: module-level"
    )


def test_jobs_2_with_a_thread_running_spawns_and_gives_the_same_output(example: Path) -> None:
    """A host process with threads must not fork (a child could deadlock): the pool spawns."""
    import threading

    from refactor_tool import runner

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    try:
        assert runner._pool_context().get_start_method() == "spawn"
        two = convert(example, mode="diff", jobs=2)
    finally:
        stop.set()
        helper.join()
    one = convert(example, mode="diff", jobs=1)
    assert one.to_json() == two.to_json() and one.diff() == two.diff()


def test_package_init_stays_beside_a_module_left_behind(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/lib/__init__.py": "",
            "scripts/lib/dates.py": "def today():\n    return 1\n",
            "scripts/lib/paths.py": "import os\nHERE = os.path.dirname(__file__)\n",
            "scripts/job.py": "from scripts.lib.dates import today\n\n\ndef run():\n    return today()\n",
        },
    )
    report = convert(root)
    assert _file(report, "scripts/lib/paths.py").status == "skipped"  # nothing converted runs it
    assert (root / "app/tasks/lib/__init__.py").exists() and (root / "app/tasks/lib/dates.py").exists()
    # scripts/lib/paths.py stays, and so does the __init__ its import runs.
    assert (root / "scripts/lib/__init__.py").exists() and not (root / "scripts/lib/dates.py").exists()


def test_a_dead_worker_fails_its_files_instead_of_raising(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from refactor_tool import runner
    from tests.refactor_tool.support import die_in_worker

    monkeypatch.setattr(runner, "_run_in_worker", die_in_worker)
    report = convert(example, mode="check", jobs=2)
    assert report.exit_code(check=True) == 2
    failed = [f for f in report.files if f.status == "failed"]
    assert failed and all("worker process died" in f.reasons[0] for f in failed)


def test_ctrl_c_in_the_write_phase_restores_the_tree(example: Path) -> None:
    before = snapshot(example)
    calls: list[Path] = []

    def interrupted(path: Path, data: bytes, mode: int | None = None) -> None:
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        atomic_write(path, data, mode)

    with pytest.raises(KeyboardInterrupt):
        convert(example, write=interrupted)
    assert snapshot(example) == before


#: Module-level ``return`` parses (libcst and ``ast.parse`` accept it) but does not compile.
_UNCOMPILABLE = "return 'emitted by a broken command'"


@pytest.mark.parametrize(
    "broken",
    [
        "scripts/ping.py",  # a job: its move is not written either
        "app/tasks/maintenance.py",  # a task module, changed in place
        "app/celery_app.py",  # a legacy app file
    ],
)
def test_an_output_that_does_not_compile_is_never_written(
    example: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """Every output is compiled by CPython before the write phase: a command that emits code
    only the compiler rejects fails that file, and none of its bytes reach the disk, not even
    a temp file; the other files still convert."""
    from refactor_tool.commands._base import Command

    real = Command.transform_module

    def emits_invalid_code(self: Command, tree: cst.Module) -> cst.Module:
        out = real(self, tree)
        if self.context.filename != broken:
            return out
        return out.with_changes(body=[*out.body, cst.parse_statement(f"{_UNCOMPILABLE}\n")])

    monkeypatch.setattr(Command, "transform_module", emits_invalid_code)
    before = snapshot(example)
    written: list[bytes] = []

    def recording(path: Path, data: bytes, mode: int | None = None) -> None:
        written.append(data)
        atomic_write(path, data, mode)

    report = convert(example, write=recording)
    monkeypatch.undo()
    failed = _file(report, broken)
    assert failed.status == "failed"
    assert failed.reasons == [f"{broken}:1: generated code does not compile; please report it"]
    assert report.exit_code(check=False) == 2
    assert written and not [data for data in written if _UNCOMPILABLE.encode() in data]
    after = snapshot(example)
    assert not [rel for rel, (data, _mode) in after.items() if _UNCOMPILABLE.encode() in data]
    assert after.get(broken) == before[broken], f"{broken} was changed"
    if broken == "scripts/ping.py":
        assert "app/tasks/ping.py" not in after and "dataforge.ping" not in _registry(example)
    # The rest of the tree converted (a failed script's imports are unknown, so with one the
    # sources of the moved jobs stay in scripts/ as well).
    assert _file(report, "scripts/daily_report.py").status == "changed"
    assert "app/tasks/daily_report.py" in after
