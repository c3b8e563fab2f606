"""verify: the comparison rules (pure), the cases file, and real runs of the example both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dataforge.cli.main import cli
from refactor_tool.verify import (
    Case,
    Expectation,
    Outcome,
    VerifyError,
    compare,
    legacy_call_kwargs,
    load_cases,
    verify,
)
from tests.refactor_tool.support import EXAMPLE, make_tree

CASES = EXAMPLE / "verify-cases.json"
TYPE_ERROR = Outcome(False, exception="TypeError", exception_types=("TypeError", "Exception"),
                     message="run() got an unexpected keyword argument '_lock_key'")  # fmt: skip


def test_legacy_call_puts_the_lock_key_first() -> None:
    assert list(legacy_call_kwargs({"days": 1}, 7)) == ["_lock_key", "days", "scheduled_task_id"]
    assert legacy_call_kwargs({"scheduled_task_id": 99}, 7)["scheduled_task_id"] == 7


def test_equal_results_and_ignored_keys() -> None:
    case = Case("c", "job", ignore=("pid",))
    assert compare(case, Outcome(True, {"a": 1, "pid": 1}), {"eager": Outcome(True, {"a": 1, "pid": 2})}) == []
    diffs = compare(case, Outcome(True, {"a": 1, "b": 2}), {"eager": Outcome(True, {"a": 2, "c": 3})})
    assert diffs == [
        "eager: result['a']: legacy 1, eager 2",
        "eager: result['b']: legacy 2, eager has no such key",
        "eager: result['c']: eager 3, legacy has no such key",
    ]


def test_exceptions_must_match_type_and_message() -> None:
    case = Case("c", "job")
    boom = Outcome(False, exception="ValueError", message="boom")
    assert compare(case, boom, {"eager": boom, "worker": boom}) == []
    other = Outcome(False, exception="ValueError", message="bang")
    assert compare(case, boom, {"worker": other}) == [
        "worker: legacy raised ValueError: boom, worker raised ValueError: bang"
    ]
    assert compare(case, boom, {"eager": Outcome(True, 1)}) == [
        "eager: legacy gave ValueError: boom, eager gave result 1"
    ]


def test_declared_fix_legacy_fails_new_succeeds() -> None:
    lock_fix = Expectation(exception="TypeError", message="'_lock_key'")
    case = Case("c", "ping", legacy_expected=lock_fix)
    assert compare(case, TYPE_ERROR, {"eager": Outcome(True, {"pong": True})}) == []
    assert compare(case, Outcome(True, {}), {"eager": Outcome(True, {})}) == [
        "legacy: expected TypeError containing \"'_lock_key'\", got result {}"
    ]
    assert compare(case, TYPE_ERROR, {"eager": TYPE_ERROR})[0].startswith("eager: expected success")


def test_expected_applies_to_both_sides_and_matches_base_classes() -> None:
    case = Case("c", "job", expected=Expectation(exception="TypeError"))
    arg_error = Outcome(False, exception="JobArgumentError", exception_types=("JobArgumentError", "TypeError"))
    assert compare(case, TYPE_ERROR, {"eager": arg_error}) == []
    case = Case("c", "job", expected=Expectation(result={"n": 1}, has_result=True))
    assert compare(case, Outcome(True, {"n": 2}), {"eager": Outcome(True, {"n": 1})}) == [
        "legacy: expected result {'n': 1}, got result {'n': 2}"
    ]


def test_example_cases_file_loads() -> None:
    cases = load_cases(CASES)
    assert len(cases) >= 12 and len({c.id for c in cases}) == len(cases)
    ping = next(c for c in cases if c.job == "ping")
    assert ping.legacy_expected is not None and ping.legacy_expected.exception == "TypeError"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "non-empty list"),
        ('[{"kwargs": {}}]', "needs 'job'"),
        ('[{"job": "x", "kwargs": []}]', "'kwargs' must be an object"),
        ('[{"job": "x", "expected": {"result": 1, "exception": "E"}}]', "not both"),
        ('[{"job": "x", "id": "a"}, {"job": "y", "id": "a"}]', "duplicate case id"),
        ('{"version": 2, "cases": [{"job": "x"}]}', "unsupported cases file version"),
        ("{not json", "cannot read the cases file"),
    ],
)
def test_bad_cases_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cases.json"
    path.write_text(content)
    with pytest.raises(VerifyError, match=message):
        load_cases(path)


def test_example_eagerly_through_the_cli() -> None:
    """Every example case: legacy way vs DataForgeTask.apply, identical or differing as declared."""
    result = CliRunner().invoke(cli, ["verify", str(EXAMPLE), "--cases", str(CASES), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] and report["modes"] == ["eager"]
    by_id = {c["id"]: c for c in report["cases"]}
    ping = by_id["ping-lock-key-fix"]
    assert ping["legacy"]["exception"] == "TypeError" and "'_lock_key'" in ping["legacy"]["message"]
    assert ping["converted"]["eager"]["ok"] and ping["converted"]["eager"]["result"]["pong"] is True
    reminders = by_id["reminders-unknown-channel"]["converted"]["eager"]
    assert reminders["exception"] == "ValueError" and "pigeon" in reminders["message"]
    search = by_id["search-index-full"]
    assert search["legacy"]["result"] == search["converted"]["eager"]["result"]
    assert search["legacy"]["result"]["options"] == ["lang"] and search["legacy"]["result"]["scheduled_task_id"] == 13


@pytest.mark.slow
def test_example_through_a_real_worker() -> None:
    """The converted example tasks run in a real celery worker with the legacy run's results."""
    report = verify(EXAMPLE, load_cases(CASES), worker=True, timeout=60)
    assert report.modes == ["eager", "worker"]
    assert report.ok, "\n".join(report.lines())
    for case in report.cases:
        worker = case.converted["worker"]
        if case.case.legacy_expected is None and case.case.expected is None:
            assert case.legacy is not None and worker.result == case.legacy.result, case.case.id
    failed = next(c for c in report.cases if c.case.id == "reminders-unknown-channel").converted["worker"]
    assert (failed.exception, failed.state) == ("ValueError", "FAILURE")


def test_differences_are_reported_and_exit_1(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "backend",
        {
            "scripts/__init__.py": "",
            "scripts/whoami.py": '"""Reports its module name."""\n\n\ndef run(**kwargs):\n'
            '    return {"module": __name__}\n',
        },
    )
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"id": "name", "job": "whoami"}, {"id": "nope", "job": "whoami", "kwargs": {"x": 1},
                                  "expected": {"result": {"module": "nowhere"}}}]))  # fmt: skip
    result = CliRunner().invoke(cli, ["verify", str(root), "--cases", str(cases)], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "DIFF: name (whoami): eager: result['module']: legacy 'scripts.whoami', eager 'app.tasks.whoami'",
        "DIFF: nope (whoami): legacy: expected result {'module': 'nowhere'}, got result {'module': 'scripts.whoami'}",
        "DIFF: nope (whoami): eager: expected result {'module': 'nowhere'}, got result {'module': 'app.tasks.whoami'}",
        "0 case(s) identical, 2 with differences (eager)",
    ]
    assert (root / "scripts/whoami.py").exists() and not (root / "app").exists()  # never modified


def test_refused_job_and_unconverted_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "backend", {"scripts/bad.py": "def run(**kw):\n    return kw.get('_debug')\n"})
    cases = tmp_path / "cases.json"
    cases.write_text('[{"job": "bad"}]')
    result = CliRunner().invoke(cli, ["verify", str(root), "--cases", str(cases)], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout.startswith("DIFF: bad#1 (bad): not converted: scripts/bad.py:2: reads '_debug'")
    shutil.rmtree(root / "scripts")
    result = CliRunner().invoke(cli, ["verify", str(root), "--cases", str(cases)], catch_exceptions=False)
    assert result.exit_code == 2 and "verify needs the legacy tree before conversion" in result.stderr
