"""Import placement checked against ruff itself: blocks that ruff sorted stay sorted after an
import is added or renamed (hypothesis builds the blocks, ruff sorts them, then judges the output)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import libcst as cst
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refactor_tool.import_layout import FIRST_PARTY, STDLIB, THIRD_PARTY, ImportStyle, add_import, place_imports

RUFF_RULES = "I001,E30,E402"

#: (module, names) pool: every section, natural-order and case traps, relative imports.
MODULES = [
    "os", "sys", "json", "collections.abc", "pathlib", "__future__",
    "requests", "yaml", "sqlalchemy.orm", "Zeta9", "alpha10", "alpha2", "dataforge", "celery",
    "app.models", "app.celery_app", "scripts._common", "scripts.lib.dates", "scripts.sync2", "scripts.sync10",
    "shared", ".", "..", "._helpers", ".lib",
]  # fmt: skip
NAMES = ["x", "CONST", "Klass", "helper", "y2", "y10"]


def _ruff(directory: Path, *paths: Path, fix: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ruff", "check", "--isolated", "--preview", "--select", RUFF_RULES]
    argv += ["--output-format", "concise", "--no-cache"] + (["--fix"] if fix else [])
    return subprocess.run([*argv, *map(str, paths)], cwd=directory, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for package in ("app", "app/tasks", "scripts", "shared"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    return root


def _statement(module: str, names: list[str], alias: bool) -> str:
    if module in (".", ".."):
        return f"from {module} import {', '.join(names or ['x'])}"
    if module.startswith(".") or module == "__future__" or names:
        members = ["annotations"] if module == "__future__" else names or ["x"]
        return f"from {module} import {', '.join(members)}"
    return f"import {module}" + (f" as {module.replace('.', '_')}_alias" if alias else "")


imports = st.lists(
    st.tuples(st.sampled_from(MODULES), st.lists(st.sampled_from(NAMES), unique=True, max_size=2), st.booleans()),
    min_size=0,
    max_size=8,
)


def _sorted_module(project: Path, name: str, lines: list[str], docstring: bool) -> bytes:
    text = ('"""Job."""\n' if docstring else "") + "\n".join(lines) + "\n\n\ndef run():\n    return 1\n"
    path = project / "app" / "tasks" / name
    path.write_text(text)
    _ruff(project, path, fix=True)
    result = _ruff(project, path)
    assert result.returncode == 0, result.stdout  # ruff made it clean: the input of the test
    return path.read_bytes()


def _check(project: Path, name: str, module: cst.Module) -> None:
    path = project / "app" / "tasks" / name
    path.write_text(module.code)
    result = _ruff(project, path)
    assert result.returncode == 0, f"{result.stdout}\n--- output ---\n{module.code}"


STYLE = ImportStyle(first_party_modules=frozenset({"app", "app.tasks", "scripts", "shared"}), same_package="app")
NEW = [
    "from dataforge.celery_app import celery_app\n",
    "from dataforge.tasks.base import DataForgeTask\n",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(imports, st.booleans())
def test_added_imports_keep_a_sorted_block_sorted(
    project: Path, spec: list[tuple[str, list[str], bool]], doc: bool
) -> None:
    lines = list(dict.fromkeys(_statement(*item) for item in spec))
    module = cst.parse_module(_sorted_module(project, "added.py", lines, doc))
    body = list(module.body)
    for text in NEW:
        statement = cst.parse_statement(text)
        assert isinstance(statement, cst.SimpleStatementLine)
        body = add_import(body, statement, STYLE, insert_at=1 if doc else 0, after_docstring=doc)
    _check(project, "added.py", module.with_changes(body=body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(imports)
def test_renamed_imports_move_to_their_sorted_place(project: Path, spec: list[tuple[str, list[str], bool]]) -> None:
    lines = list(dict.fromkeys(_statement(*item) for item in spec))
    module = cst.parse_module(_sorted_module(project, "renamed.py", lines, True))
    body = list(module.body)
    moved = []
    for i, stmt in enumerate(body):
        code = module.code_for_node(stmt)
        if re.search(r"^(from|import) scripts\b", code.strip().splitlines()[-1]):
            renamed = re.sub(r"^(from|import) scripts\b", r"\1 app.tasks", code.strip().splitlines()[-1])
            body[i] = cst.parse_statement(renamed + "\n")
            body[i] = body[i].with_changes(leading_lines=stmt.leading_lines)
            moved.append(i)
    _check(project, "renamed.py", module.with_changes(body=place_imports(body, STYLE, moved=moved)))


def test_a_name_joins_the_existing_statement_of_its_module_and_wraps_when_too_long() -> None:
    body = list(cst.parse_module("import os\n\nfrom dataforge.tasks.base import Other, helper\n\nX = 1\n").body)
    out = add_import(body, cst.parse_statement("from dataforge.tasks.base import DataForgeTask\n"), STYLE)  # type: ignore[arg-type]
    assert cst.Module(body=out).code == (
        "import os\n\nfrom dataforge.tasks.base import DataForgeTask, Other, helper\n\nX = 1\n"
    )
    narrow = ImportStyle(line_length=40)
    out = add_import(body, cst.parse_statement("from dataforge.tasks.base import DataForgeTask\n"), narrow)  # type: ignore[arg-type]
    assert cst.Module(body=out).code == (
        "import os\n\nfrom dataforge.tasks.base import (\n    DataForgeTask,\n    Other,\n    helper,\n)\n\nX = 1\n"
    )
    wrapped = list(cst.parse_module("from m import (\n    a,\n    c,\n)\n").body)
    out = add_import(wrapped, cst.parse_statement("from m import b\n"), STYLE)  # type: ignore[arg-type]
    assert cst.Module(body=out).code == "from m import (\n    a,\n    b,\n    c,\n)\n"
    for name, expected in (("A", "A,\n    a,\n    c,\n"), ("d", "a,\n    c,\n    d,\n")):
        out = add_import(wrapped, cst.parse_statement(f"from m import {name}\n"), STYLE)  # type: ignore[arg-type]
        assert cst.Module(body=out).code == f"from m import (\n    {expected})\n"


def test_style_reads_the_projects_ruff_settings(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "src" / "lib2").mkdir(parents=True)
    (tmp_path / "tool.py").write_text("")
    default = ImportStyle.for_backend(tmp_path, also_first_party=["app.tasks.x"])
    assert default.section("app") == default.section("tool") == default.section("lib2") == FIRST_PARTY
    assert default.section("app.tasks.x") == FIRST_PARTY
    assert default.section("app.y") == THIRD_PARTY  # ruff and isort check the whole path
    assert ImportStyle.for_backend(tmp_path, same_package="app").section("app.y") == FIRST_PARTY
    assert default.section("dataforge.celery_app") == THIRD_PARTY and default.section("json") == STDLIB
    assert default.config_file is None and default.line_length == 88
    (tmp_path / "pyproject.toml").write_text(
        '[tool.ruff]\nline-length = 100\n[tool.ruff.lint.isort]\nknown-first-party = ["dataforge"]\n'
        'known-third-party = ["app"]\n'
    )
    configured = ImportStyle.for_backend(tmp_path)
    assert configured.section("dataforge.tasks.base") == FIRST_PARTY and configured.section("app") == THIRD_PARTY
    assert configured.line_length == 100 and configured.config_file == "pyproject.toml"
    (tmp_path / "ruff.toml").write_text('[lint.isort]\nknown-first-party = ["data*"]\n')
    assert ImportStyle.for_backend(tmp_path).section("dataforge") == FIRST_PARTY  # ruff.toml wins
    assert ImportStyle.for_backend(tmp_path).section("app") == FIRST_PARTY
