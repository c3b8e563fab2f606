"""The layer contracts of ``dataforge/``, checked on every import statement (lazy ones included).

* ``protocol`` and ``errors`` import nothing of the project: anything may import them.
* ``models`` import only ``protocol`` and themselves: the schema sits below everything.
* The core (runtime, scheduler, worker, locks, catalog, plug-in seam, ...) imports no legacy,
  CLI or tools code, nor the tools next to the package (compat, refactor_tool, migrations):
  optional behaviour joins through :mod:`dataforge.plugins`, installed by the app factory.
* The legacy plug-in does not reach up into the CLI or the tools.
* The web console is an edge like the CLI (it shows the legacy switch and builds the Celery
  app), started by the CLI; it imports neither the CLI nor the tools.
* Importing any module opens nothing (docs/runtime.md, "Processes and forks"): no socket, no
  database file, no thread, no child process, no file written. A prefork worker imports the
  app before it forks; whatever an import opened would be shared by every child.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
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


#: Run in a fresh interpreter: records what importing every module of dataforge/ opens.
_IMPORT_PROBE = r"""
import json, os, sys

opened = []

def audit(event, args):
    if event in ("socket.connect", "socket.bind", "sqlite3.connect", "subprocess.Popen", "os.fork",
                 "os.posix_spawn", "os.exec"):
        opened.append(f"{event} {args!r}"[:300])
    elif event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
            flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writes:
            opened.append(f"open {path!r} {mode or flags!r}")

# croniter asks platform.architecture() at import, which runs `file` on the interpreter once:
# the library's own start-up, over before anything of DataForge runs, and nothing it keeps.
import croniter

sys.addaudithook(audit)
import importlib, pkgutil, threading
import dataforge

for info in pkgutil.walk_packages(dataforge.__path__, "dataforge."):
    if info.name != "dataforge.__main__":  # runs the command line
        importlib.import_module(info.name)
from dataforge.celery_app import celery_app

print(json.dumps({"opened": opened, "threads": [t.name for t in threading.enumerate()],
                  "modules": sum(m.startswith("dataforge.") for m in sys.modules)}))
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that accepts and never answers: a connection attempt (from Python or from
    libpq, which the audit hook cannot see) stays in its backlog for the test to find."""
    sock = socket.socket()
    for port in range(25421, 25440):  # this suite's range for servers of its own
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    else:
        sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_importing_any_module_opens_nothing(tmp_path: Path, listener: socket.socket, backend: str) -> None:
    """docs/runtime.md: nothing is opened at import; the lock store, the renewal thread, the job
    loop, the recorder and the database engine are built on first use, in the process that
    uses them (a prefork child). Every module is imported, the app module included (it builds
    the app from the environment: the embedded defaults, a SQLite file and the SQL broker in
    the working directory, or servers at a port that records any connection), under an audit
    hook that sees every connect and write made from Python."""
    port = listener.getsockname()[1]
    env = {} if backend == "embedded" else {
        "DATAFORGE_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{port}/nothing",
        "DATAFORGE_REDIS_URL": f"redis://127.0.0.1:{port}/0", "DATAFORGE_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "DATAFORGE_RESULT_BACKEND": f"redis://127.0.0.1:{port}/0",
    }  # fmt: skip
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    # libpq waits for an answer without limit: 2 s, so a connection made is seen, not a hang.
    child_env.update(env, PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1", PGCONNECT_TIMEOUT="2")
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], cwd=tmp_path, env=child_env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["modules"] > 50, "the probe did not import the package"
    assert seen["opened"] == [], "opened at import"
    assert seen["threads"] == ["MainThread"], "a thread was started at import"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a file was created at import"
    with pytest.raises(BlockingIOError):
        listener.accept()[0].close()  # a connection would be waiting here
