"""Helpers shared by the codemod tests: fixture files, running one command, building trees."""

from __future__ import annotations

import os
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


def run_command(command: type[Codemod], source: bytes, **kwargs: Any) -> tuple[bytes, list[str]]:
    """Run one codemod command on ``source`` (bytes in, bytes out: encodings and newlines kept)."""
    context = CodemodContext()
    tree = command(context, **kwargs).transform_module(cst.parse_module(source))
    return tree.bytes, list(context.warnings)


def run_sources(source: bytes) -> list[str]:
    """The source text of every module-level ``run`` definition (to prove it is byte-identical)."""
    module = cst.parse_module(source)
    return [
        module.code_for_node(stmt)
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
