"""Deliberate bugs in the core, and whether the tests catch them (a mutation-testing habit).

Each :class:`Mutant` changes one guarantee the docs state (a lease three times too long, a
``>`` for a ``>=`` at the missed-run grace, a log line gone...) by replacing an exact snippet
of one file. The script copies the checkout once, applies one mutant at a time to the copy,
runs the tests that defend that guarantee, and reports which mutants *survived* (the tests
still passed): each survivor is a guarantee without a test that fails when it breaks.

    python3 dev/mutants.py                 # every mutant
    python3 dev/mutants.py -k lock         # mutants whose name contains "lock"
    python3 dev/mutants.py --json out.json # also write the results as JSON

A mutant whose snippet is no longer in its file is reported ``stale``: update it with the
code. Run it before closing work on the lock, dispatch, schedule-math, kwargs-binding,
recorder or codemod import-rewrite code, and say in the closing note what survived and why.
Services are needed as for the test suite (CI=true is set: a missing service fails).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: ``before`` (exactly once in ``path``) becomes ``after``."""

    name: str
    path: str
    before: str
    after: str
    #: pytest node ids or paths that must fail with the bug in place.
    tests: tuple[str, ...]
    #: The stated guarantee it breaks (docs/... or the module docstring).
    guarantee: str


@dataclass
class Outcome:
    name: str
    status: str  # killed | survived | stale | timeout
    seconds: float
    guarantee: str
    detail: str = ""


MUTANTS: tuple[Mutant, ...] = ()


def _copy_checkout(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                                    "*.db", "*.db-wal", "*.db-shm")
    target = dest / "checkout"
    shutil.copytree(ROOT, target, ignore=ignore)
    return target


def _run(mutant: Mutant, checkout: Path, timeout: float) -> Outcome:
    path = checkout / mutant.path
    original = path.read_text(encoding="utf-8")
    if original.count(mutant.before) != 1:
        return Outcome(mutant.name, "stale", 0.0, mutant.guarantee,
                       f"snippet found {original.count(mutant.before)} times in {mutant.path}")
    path.write_text(original.replace(mutant.before, mutant.after), encoding="utf-8")
    started = time.monotonic()
    env = {**os.environ, "CI": "true", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests]
    try:
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome(mutant.name, "timeout", time.monotonic() - started, mutant.guarantee,
                       f"tests did not finish in {timeout:.0f}s (a hang counts as caught only if bounded)")
    finally:
        path.write_text(original, encoding="utf-8")
    took = time.monotonic() - started
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode == 0:
        return Outcome(mutant.name, "survived", took, mutant.guarantee, tail)
    return Outcome(mutant.name, "killed", took, mutant.guarantee, tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="pattern", default="", help="only mutants whose name contains this")
    parser.add_argument("--json", dest="json_path", type=Path, help="write the outcomes here as JSON")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's tests")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.pattern in m.name]
    if not chosen:
        print(f"no mutant matches {args.pattern!r}", file=sys.stderr)
        return 2
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="dataforge-mutants-") as tmp:
        checkout = _copy_checkout(Path(tmp))
        for mutant in chosen:
            outcome = _run(mutant, checkout, args.timeout)
            outcomes.append(outcome)
            print(f"{outcome.status:9} {outcome.seconds:6.1f}s  {mutant.name}  ({outcome.detail})", flush=True)
    survivors = [o for o in outcomes if o.status != "killed"]
    print(f"\n{len(outcomes) - len(survivors)} of {len(outcomes)} mutants killed")
    for o in survivors:
        print(f"  {o.status}: {o.name}: {o.guarantee}")
    if args.json_path is not None:
        args.json_path.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n", encoding="utf-8")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
