"""Helpers shared by the codemod tests: fixture files, running one command, building trees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import libcst as cst
from libcst.codemod import Codemod, CodemodContext

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "legacy_backend"


def fixture_stems(directory: str) -> list[str]:
    """Stems of the ``<stem>.before.py`` / ``<stem>.after.py`` pairs in ``fixtures/<directory>``."""
    return sorted(p.name[: -len(".before.py")] for p in (FIXTURES / directory).glob("*.before.py"))


def fixture_pair(directory: str, stem: str) -> tuple[bytes, bytes]:
    base = FIXTURES / directory
    return (base / f"{stem}.before.py").read_bytes(), (base / f"{stem}.after.py").read_bytes()


def refused_fixtures(directory: str) -> list[str]:
    """Names of the files under ``fixtures/<directory>/refused`` (each declares its refusals)."""
    return sorted(p.name for p in (FIXTURES / directory / "refused").glob("*.py"))


def expectations(source: bytes) -> list[tuple[int, str]]:
    """``(line, reason substring)`` of every ``# expect: <line>: <reason>`` header line."""
    text = source.decode()
    return [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^# expect: (\d+): (.+)$", text, re.M)]


def assert_refused(command: type[Codemod], directory: str, name: str, **kwargs: Any) -> None:
    """The fixture ``fixtures/<directory>/refused/<name>`` is refused with every reason its header names."""
    from refactor_tool.errors import ConversionRefused

    source = (FIXTURES / directory / "refused" / name).read_bytes()
    expected = expectations(source)
    assert expected, f"{name} declares no expectation"
    try:
        run_command(command, source, **kwargs)
    except ConversionRefused as exc:
        got = [(r.line, r.reason) for r in exc.refusals]
    else:
        raise AssertionError(f"{name} was converted; want {expected}")
    for line, text in expected:
        assert any(gl == line and text in reason for gl, reason in got), f"{name}: want {line}: {text!r}, got {got}"


def assert_fixture(command: type[Codemod], directory: str, stem: str, **kwargs: Any) -> list[str]:
    """Byte-exact output, valid Python, idempotent, and no ruff finding the input did not have.
    Returns the command's report lines."""
    before, after = fixture_pair(directory, stem)
    out, warnings = run_command(command, before, **kwargs)
    assert out == after
    compile(after, f"{stem}.py", "exec", dont_inherit=True)
    again, _ = run_command(command, after, **kwargs)
    assert again == after, "running the command on its output changed it"
    lint_before, lint_after = lint_pair(before, after)
    assert lint_after <= lint_before, f"the command added {lint_after - lint_before}"
    return warnings


def run_command(command: type[Codemod], source: bytes, **kwargs: Any) -> tuple[bytes, list[str]]:
    """Run one codemod command on ``source`` (bytes in, bytes out: encodings and newlines kept)."""
    context = CodemodContext()
    tree = command(context, **kwargs).transform_module(cst.parse_module(source))
    return tree.bytes, list(context.warnings)


def run_sources(source: bytes) -> list[str]:
    """The source text of every module-level ``run`` definition (to prove it is byte-identical;
    the blank lines above it may grow to the two PEP 8 wants below a new import block)."""
    module = cst.parse_module(source)
    return [
        module.code_for_node(stmt.with_changes(leading_lines=[line for line in stmt.leading_lines if line.comment]))
        for stmt in module.body
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "run"
    ]


def make_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``files`` (relative path -> text or bytes) under ``root``; returns ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and mode (caches excluded)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def die_in_worker(unit: object) -> object:
    """Stands in for the pool's worker function: the process dies as a native crash would."""
    os._exit(1)


#: What a converted module must not add: unsorted imports, PEP 8 blank lines, imports below code.
LINT_RULES = ("I001", "E30", "E402")


def lint_codes(
    root: Path, paths: list[str] | None = None, known_first_party: tuple[str, ...] = ()
) -> dict[str, set[str]]:
    """ruff's I001 / E30x / E402 findings per file (relative path) under ``root``, as ruff sees
    the project from its root (the default settings; E30x is a preview rule set)."""
    argv = [sys.executable, "-m", "ruff", "check", "--isolated", "--preview", "--no-cache", "--exit-zero"]
    argv += ["--select", ",".join(LINT_RULES), "--output-format", "json"]
    if known_first_party:
        argv += ["--config", f"lint.isort.known-first-party = {json.dumps(list(known_first_party))}"]
    proc = subprocess.run([*argv, *(paths or ["."])], cwd=root, capture_output=True, text=True, check=True)
    found: dict[str, set[str]] = defaultdict(set)
    for item in json.loads(proc.stdout):
        found[Path(item["filename"]).resolve().relative_to(root.resolve()).as_posix()].add(item["code"] or "syntax")
    return found


def lint_pair(
    before: bytes, after: bytes, known_first_party: tuple[str, ...] = ("scripts", "app")
) -> tuple[set[str], set[str]]:
    """ruff's findings on one module before and after a command."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "before.py").write_bytes(before)
        (root / "after.py").write_bytes(after)
        codes = lint_codes(root, ["before.py", "after.py"], known_first_party)
    return codes.get("before.py", set()), codes.get("after.py", set())


#: The example's legacy app files (its infrastructure, not its tasks package).
LEGACY_APP_FILES = (
    "app/__init__.py",
    "app/celery_app.py",
    "app/celery_tasks.py",
    "app/celery_signals.py",
    "app/celery_scheduler.py",
    "app/config.py",
    "app/database.py",
    "app/models.py",
    "app/scheduler/__init__.py",
    "app/scheduler/registry.py",
)


def make_jobs_tree(root: Path, jobs: int, legacy_app: bool = False) -> Path:
    """A legacy tree of ``jobs`` small jobs with every kind of write-phase operation: new files,
    the registry rewritten in place, a package ``__init__`` carried over, scripts deleted,
    emptied folders removed; with ``legacy_app``, the example's legacy app files too (a rename,
    files changed in place, a module deleted)."""
    files: dict[str, str | bytes] = {
        "scripts/__init__.py": '"""Jobs."""\n\nVERSION = 2\n',
        "scripts/_common.py": "def double(n):\n    return 2 * n\n",
        "scripts/lib/__init__.py": "",
        "scripts/lib/dates.py": "TODAY = '2024-05-01'\n",
        "app/tasks/__init__.py": '"""Tasks."""\n\nREGISTERED_TASKS = {}\n',
    }
    for i in range(jobs):
        files[f"scripts/job_{i:04d}.py"] = (
            f'"""Job {i}."""\n\nfrom scripts._common import double\nfrom scripts.lib.dates import TODAY\n\n\n'
            f"def run(n: int = {i}, **kwargs):\n    return {{'n': double(n), 'day': TODAY}}\n"
        )
    if legacy_app:
        files.update({rel: (EXAMPLE / rel).read_bytes() for rel in LEGACY_APP_FILES})
    return make_tree(root, files)
