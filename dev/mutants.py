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


_LOCKS = "tests/dataforge/locks/test_locks.py"
_CATCHUP = "tests/dataforge/scheduler/test_catchup.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- locks ------------------------------------------------------------------------------
    Mutant("redis lease three times too long", "dataforge/locks/redis.py",
           'ok = self._command("SET", key, token, "NX", "PX", max(1, int(ttl * 1000)))',
           'ok = self._command("SET", key, token, "NX", "PX", max(1, int(ttl * 3000)))',
           (_LOCKS,), "docs/runtime.md: a killed worker's lock is free within one DATAFORGE_LOCK_TTL"),
    Mutant("database lease three times too long", "dataforge/locks/database.py",
           "return current, current + timedelta(seconds=ttl)",
           "return current, current + timedelta(seconds=ttl * 3)",
           (_LOCKS,), "docs/runtime.md: a killed worker's lock is free within one DATAFORGE_LOCK_TTL"),
    Mutant("database lock taken over before it expires", "dataforge/locks/database.py",
           "where=t.c.expires_at < now,", "where=t.c.expires_at < now + timedelta(hours=1),",
           (_LOCKS,), "docs/runtime.md: one run per schedule at a time (the run lock is exclusive)"),
    Mutant("redis command not retried after a restart", "dataforge/locks/redis.py",
           "ATTEMPTS = 2", "ATTEMPTS = 1",
           (_LOCKS,), "docs/runtime.md: a stale connection to the lock store costs one quick retry, not a failure"),
    Mutant("redis script never loaded again", "dataforge/locks/redis.py",
           "        except NoScriptError:\n", "        except ZeroDivisionError:\n",
           (_LOCKS,), "docs/runtime.md: locks are released after a Redis restart (compare-and-delete scripts)"),
    Mutant("lock-store backoff factor 30", "dataforge/worker/task.py",
           "factor=1, retries=request.retries, maximum=_LOCK_UNAVAILABLE_BACKOFF_MAX",
           "factor=30, retries=request.retries, maximum=_LOCK_UNAVAILABLE_BACKOFF_MAX",
           ("tests/dataforge/worker/test_lock_unavailable_backoff.py",),
           "docs/runtime.md: lock store unreachable: retries with backoff 1, 2, 4 ... capped at 60 s"),
    Mutant("lock-store backoff cap 3600 s", "dataforge/worker/task.py",
           "_LOCK_UNAVAILABLE_BACKOFF_MAX = 60", "_LOCK_UNAVAILABLE_BACKOFF_MAX = 3600",
           ("tests/dataforge/worker/test_lock_unavailable_backoff.py",),
           "docs/runtime.md: lock store unreachable: retries with backoff 1, 2, 4 ... capped at 60 s"),
    # -- worker -----------------------------------------------------------------------------
    Mutant("cancel_grace bound removed", "dataforge/worker/loop.py",
           "done.result(timeout=self.cancel_grace)", "done.result()",
           ("tests/dataforge/worker/test_loop.py",),
           "docs/runtime.md: a coroutine that ignores cancellation holds its run for cancel_grace only"),
    Mutant("cancel_grace default 30 s", "dataforge/worker/loop.py",
           "cancel_grace: float = 10.0", "cancel_grace: float = 30.0",
           ("tests/dataforge/worker/test_loop.py",),
           "docs/runtime.md: a coroutine that ignores cancellation holds its run for 10 s at most"),
    Mutant("autoretry countdown cap 900 s", "dataforge/worker/task.py",
           "retry_backoff_max: ClassVar[int] = 600", "retry_backoff_max: ClassVar[int] = 900",
           ("tests/dataforge/worker/test_task.py",),
           "docs/runtime.md: autoretry backoff with jitter, capped at 600 s"),
    Mutant("result summary cut at 2,001 characters", "dataforge/worker/recording/handlers.py",
           "_RESULT_MAX = 2000", "_RESULT_MAX = 2001",
           ("tests/dataforge/worker/recording/test_handlers.py",),
           "docs/runtime.md: the result summary is cut at 2,000 characters"),
    Mutant("batch window ten times longer", "dataforge/worker/recording/writer.py",
           "interval: float = 0.05", "interval: float = 0.5",
           ("tests/dataforge/worker/recording/test_writer.py",),
           "docs/runtime.md: records are written 50 ms after the first of a batch"),
    Mutant("queue of 1,000 records", "dataforge/worker/recording/writer.py",
           "capacity: int = 10_000", "capacity: int = 1_000",
           ("tests/dataforge/worker/recording/test_writer.py",),
           "docs/runtime.md: 10,000 records per process wait while the database is down"),
    Mutant("outage retried every 5 s", "dataforge/worker/recording/writer.py",
           "max_backoff: float = 1.0", "max_backoff: float = 5.0",
           ("tests/dataforge/worker/recording/test_writer.py",),
           "docs/runtime.md: a batch that cannot be written is retried every second at most"),
    Mutant("internal keys reach **kwargs jobs", "dataforge/worker/kwargs.py",
           "shape.takes_var_kw and (not key.startswith(INTERNAL_PREFIX) or key in passed_internal)",
           "shape.takes_var_kw",
           ("tests/dataforge/worker/test_kwargs.py",),
           "docs/runtime.md: _lock_key and other internal keys never reach a job's kwargs"),
    Mutant("dropped kwargs not in the run's log line", "dataforge/worker/recording/handlers.py",
           "kwargs not accepted by the job: {', '.join(run.dropped)}", "kwargs dropped",
           ("tests/dataforge/worker/recording/test_handlers.py",),
           "docs/runtime.md: keys a job did not accept are listed in the run's log line"),
    Mutant("a lost row finished later is counted twice", "dataforge/worker/recording/counters.py",
           "        if was == ExecutionStatus.LOST:\n            self.unlost += 1\n", "",
           ("tests/dataforge/worker/recording/", "tests/dataforge/scheduler/test_reaper.py"),
           "docs/runtime.md: every run ends in exactly one counter"),
    Mutant("records dropped during a database outage", "dataforge/worker/recording/writer.py",
           "return isinstance(exc, (OperationalError, InterfaceError, ProgrammingError))", "return False",
           ("tests/dataforge/worker/recording/test_writer.py",),
           "docs/runtime.md: a run that ends while the database is down is recorded when it is back"),
    Mutant("duplicate deliveries run again", "dataforge/worker/recording/handlers.py",
           "            finished = recorder.finished_attempt(task_id, _attempt(request))\n",
           "            finished = None\n",
           ("tests/dataforge/worker/recording/", "tests/dataforge/worker/test_worker_embedded.py"),
           "docs/runtime.md: a redelivered attempt that already finished is not run again"),
    # -- scheduler --------------------------------------------------------------------------
    Mutant("missed-run grace exclusive", "dataforge/scheduler/catchup.py",
           "on_time = now - newest <= grace", "on_time = now - newest < grace",
           (_CATCHUP,), "docs/scheduler.md: a run at most 60 s late (inclusive) is on time"),
    Mutant("catch-up bunches with the next regular run", "dataforge/scheduler/catchup.py",
           "if dues and nxt is not None and gap is not None and nxt - now < gap / 2:",
           "if False:",
           (_CATCHUP,), "docs/scheduler.md: a catch-up run never goes out a fraction of a period before the next"),
    Mutant("unregistered task names dispatched", "dataforge/scheduler/dispatch.py",
           "if name and ctx.is_registered(name):", "if name:",
           ("tests/dataforge/scheduler/test_dispatch.py",),
           "docs/scheduler.md: only registered task names are dispatched"),
    Mutant("held-back run loses its reconnect allowance", "dataforge/scheduler/expiry.py",
           "return max(next_run_at, now + RECONNECT_ALLOWANCE)", "return next_run_at",
           ("tests/dataforge/scheduler/test_expiry.py",),
           "docs/scheduler.md: the overdue run of a broker outage outlives the workers' reconnect"),
    Mutant("leader lease as long as the failover", "dataforge/scheduler/leader.py",
           "return LeaseTiming(failover=failover, poll=poll, ttl=failover - poll)",
           "return LeaseTiming(failover=failover, poll=poll, ttl=failover)",
           ("tests/dataforge/scheduler/test_leader.py",),
           "docs/scheduler.md: a dead leader is replaced within DATAFORGE_BEAT_LEADER_TTL"),
    Mutant("leader trusts its lease past 90 %", "dataforge/scheduler/leader.py",
           "_TRUST: Final = 0.9", "_TRUST: Final = 0.95",
           ("tests/dataforge/scheduler/test_leader.py",),
           "docs/scheduler.md: a leader cut off from the store stops leading at 0.9 x its lease"),
    Mutant("all replays 200 runs", "dataforge/scheduler/catchup.py",
           "MAX_REPLAYED_RUNS: Final = 100", "MAX_REPLAYED_RUNS: Final = 200",
           (_CATCHUP,), "docs/scheduler.md: missed_run_policy all replays at most the newest 100 runs"),
    Mutant("on-time boundary exclusive", "dataforge/scheduler/expiry.py",
           "if now - due > ON_TIME:", "if now - due >= ON_TIME:",
           ("tests/dataforge/scheduler/test_expiry.py",),
           "docs/scheduler.md: a run sent at most 1 s after its due time expires at the next due time"),
    Mutant("a failed tick retried after 2 s", "dataforge/scheduler/beat.py",
           "    retry_after_failure = 1.0", "    retry_after_failure = 2.0",
           ("tests/dataforge/scheduler/test_beat.py",),
           "docs/scheduler.md: a failed tick is retried after 1 s"),
    Mutant("reaper rounds every 6 s", "dataforge/scheduler/reaper.py",
           "REAP_EVERY: Final = 5.0", "REAP_EVERY: Final = 6.0",
           ("tests/dataforge/scheduler/test_reaper.py",),
           "docs/runtime.md: the run of a killed worker is recorded lost within TTL + 15 s"),
    Mutant("reaper confirms ten times slower", "dataforge/scheduler/reaper.py",
           "CONFIRM: Final = 9.0", "CONFIRM: Final = 90.0",
           ("tests/dataforge/scheduler/test_reaper.py",),
           "docs/runtime.md: the run of a killed worker is recorded lost within TTL + 15 s"),
    # -- legacy -----------------------------------------------------------------------------
    Mutant("a running beat never re-reads the legacy switch", "dataforge/scheduler/beat.py",
           "                plugin.on_beat_refresh(self.runtime)\n", "                pass\n",
           ("tests/dataforge/legacy/test_beat_refresh.py",),
           "docs/rollback.md: a running beat picks up `dataforge legacy enable|disable` within a minute"),
    Mutant("handler_path helpers taken for jobs", "dataforge/legacy/paths.py",
           'return None if module.startswith("_") else module', "return module",
           ("tests/dataforge/legacy/test_paths.py",),
           "docs/rollback.md: handler_path resolves to job modules inside the scripts namespace only"),
    # -- codemod import rewrite -------------------------------------------------------------
    Mutant("a module named like the package prefix rewritten", "refactor_tool/commands/rewrite_imports.py",
           'if name == self.old or name.startswith(self.old + "."):', "if name.startswith(self.old):",
           ("tests/refactor_tool/commands/test_rewrite_imports.py",),
           "docs/codemod.md: only imports of the scripts package are rewritten"),
    Mutant("relative import above the package accepted", "refactor_tool/commands/rewrite_imports.py",
           "if si.level - 1 >= len(parts) or not current_package:",
           "if si.level - 1 > len(parts) or not current_package:",
           ("tests/refactor_tool/commands/test_rewrite_imports.py",),
           "docs/codemod.md: an import that would resolve differently after the move is refused"),
    Mutant("attribute named scripts rewritten", "refactor_tool/commands/rewrite_imports.py",
           "            return updated_node.with_changes(attr=original_node.attr)\n",
           "            return updated_node\n",
           ("tests/refactor_tool/commands/test_rewrite_imports.py",),
           "docs/codemod.md: only the module name is rewritten, never an attribute or keyword named scripts"),
)


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
