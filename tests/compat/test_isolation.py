"""Removing the shim is one change: nothing outside compat/ imports it.

The only reference allowed is the include string ``SHIM_MODULE`` in
dataforge/legacy/names.py, which Celery imports while the legacy switch is on.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The project's own code; the codemod's inputs (examples/, fixtures/) are legacy code, not ours.
SCANNED = ("dataforge", "migrations", "refactor_tool", "tests", "benchmarks")
ALLOWED_STRING = {ROOT / "dataforge" / "legacy" / "names.py"}


def _python_files() -> list[Path]:
    out = []
    for top in SCANNED:
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("tests", "compat") or "fixtures" in rel.parts or "__pycache__" in rel.parts:
                continue
            out.append(path)
    return out


def test_nothing_outside_compat_imports_it() -> None:
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_bytes(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.startswith("compat.") and path not in ALLOWED_STRING:
                    names = [node.value]  # importlib.import_module("compat...") and the like
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names  # type: ignore[attr-defined]
                          if n == "compat" or n.startswith("compat.")]  # fmt: skip
    assert offenders == []


def test_the_include_string_is_the_shim_module() -> None:
    from dataforge.legacy.names import SHIM_MODULE

    assert (ROOT / (SHIM_MODULE.replace(".", "/") + ".py")).is_file()
    assert _python_files()  # the scan above looked at something
