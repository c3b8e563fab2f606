"""The layer contracts of ``dataforge/``, checked on every import statement (lazy ones included).

* ``protocol`` and ``errors`` import nothing of the project: anything may import them.
* ``models`` import only ``protocol`` and themselves: the schema sits below everything.
* The core (runtime, scheduler, worker, locks, catalog, plug-in seam, ...) imports no legacy,
  CLI or tools code, nor the tools next to the package (compat, refactor_tool, migrations):
  optional behaviour joins through :mod:`dataforge.plugins`, installed by the app factory.
* The legacy plug-in does not reach up into the CLI or the tools.
* The web console is an edge like the CLI (it shows the legacy switch and builds the Celery
  app), started by the CLI; it imports neither the CLI nor the tools.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dataforge"
#: Modules of dataforge/ that compose the others: the app factory and the command line.
EDGES = ("dataforge.celery_app", "dataforge.__main__")
OUTSIDE = ("compat", "refactor_tool", "migrations")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, wherever the import statement is."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _project_imports(path: Path) -> set[str]:
    roots = ("dataforge", *OUTSIDE)
    return {m for m in _imports(path) if m.split(".")[0] in roots}


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in prefixes)


def _violations(sources: list[str], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    out = []
    for name in sources:
        for imported in sorted(_project_imports(MODULES[name])):
            if _within(imported, *forbidden) and not _within(imported, *allowed):
                out.append(f"{name} imports {imported}")
    return out


def test_the_scan_sees_the_package() -> None:
    assert {"dataforge.protocol", "dataforge.models", "dataforge.scheduler.beat", "dataforge.legacy.plugin"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", ["dataforge.protocol", "dataforge.errors"])
def test_contract_modules_import_nothing_of_the_project(module: str) -> None:
    assert _project_imports(MODULES[module]) == set()


def test_models_import_nothing_above_them() -> None:
    models = [m for m in MODULES if _within(m, "dataforge.models")]
    assert _violations(models, ("dataforge", *OUTSIDE), ("dataforge.models", "dataforge.protocol")) == []


def test_the_core_imports_no_legacy_cli_or_tools() -> None:
    core = [m for m in MODULES
            if not _within(m, "dataforge.legacy", "dataforge.cli", "dataforge.tools", "dataforge.web", *EDGES)]
    forbidden = ("dataforge.legacy", "dataforge.cli", "dataforge.tools", *OUTSIDE)
    assert _violations(core, forbidden) == []


def test_the_legacy_plugin_does_not_reach_up() -> None:
    legacy = [m for m in MODULES if _within(m, "dataforge.legacy")]
    assert _violations(legacy, ("dataforge.cli", "dataforge.tools", "dataforge.celery_app", *OUTSIDE)) == []


def test_the_web_console_does_not_reach_into_the_cli_or_tools() -> None:
    web = [m for m in MODULES if _within(m, "dataforge.web")]
    assert web
    assert _violations(web, ("dataforge.cli", "dataforge.tools", *OUTSIDE)) == []
