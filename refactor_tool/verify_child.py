"""The child process of ``dataforge verify``: runs the cases one way and writes the outcomes.

``python -m refactor_tool.verify_child {legacy|eager|worker} CASES.json OUT.json`` with the
tree to use as the working directory and first on ``PYTHONPATH``, and the DataForge settings
in the environment (set by :func:`refactor_tool.verify._child_env`). Never meant to be run by
hand; it exists because the legacy tree and the converted tree both define ``app``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _normalise(result: Any) -> dict[str, Any]:
    """The result as a JSON round trip through kombu (what the result backend stores)."""
    from kombu.utils.json import dumps, loads

    try:
        return {"ok": True, "result": loads(dumps(result))}  # type: ignore[no-untyped-call]
    except (TypeError, ValueError) as exc:
        return {
            "ok": False,
            "exception": "EncodeError",
            "exception_types": ["EncodeError"],
            "message": f"result is not JSON-serialisable: {exc}",
        }


def _failure(exc: BaseException, state: str = "FAILURE") -> dict[str, Any]:
    return {
        "ok": False,
        "exception": type(exc).__qualname__,
        "exception_types": [c.__qualname__ for c in type(exc).__mro__ if c not in (object, BaseException)],
        "message": str(exc),
        "state": state,
    }


def _legacy(cases: list[dict[str, Any]], scripts_package: str) -> list[dict[str, Any]]:
    """As ``execute_scheduled_task`` did: import, inject, ``asyncio.run`` a coroutine function."""
    from refactor_tool.verify import legacy_call_kwargs

    sys.path.insert(0, os.getcwd())
    out = []
    for case in cases:
        try:
            module = importlib.import_module(f"{scripts_package}.{case['job']}")
            handler: Callable[..., Any] = module.run
            kwargs = legacy_call_kwargs(case["kwargs"], case["scheduled_task_id"])
            if asyncio.iscoroutinefunction(handler):
                result = asyncio.run(handler(**kwargs))
            else:
                result = handler(**kwargs)
            out.append(_normalise(result))
        except Exception as exc:  # noqa: BLE001 - the exception IS the outcome
            out.append(_failure(exc))
    return out


def _converted_app() -> Any:
    from dataforge.celery_app import celery_app
    from dataforge.models import Base
    from dataforge.runtime import get_runtime

    Base.metadata.create_all(get_runtime(celery_app).db.engine)
    celery_app.loader.import_default_modules()
    return celery_app


def _message(case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What beat sends: the schedule's kwargs plus its id, max_retries in a header."""
    from dataforge.protocol import MAX_RETRIES_HEADER

    return {**case["kwargs"], "scheduled_task_id": case["scheduled_task_id"]}, {MAX_RETRIES_HEADER: 0}


def _outcome(state: str, value: Any) -> dict[str, Any]:
    if state == "SUCCESS":
        return _normalise(value)
    if isinstance(value, BaseException):
        return _failure(value, state)
    return {"ok": False, "exception": state, "exception_types": [state], "message": repr(value), "state": state}


def _eager(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    app = _converted_app()
    out = []
    for case in cases:
        task = app.tasks.get(case["task_name"])
        if task is None:
            out.append({"ok": False, "exception": "NotRegistered", "message": case["task_name"]})
            continue
        kwargs, headers = _message(case)
        result = task.apply(kwargs=kwargs, headers=headers)
        out.append(_outcome(result.state, result.result))
    return out


def _worker(cases: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    from celery.exceptions import TimeoutError as CeleryTimeout

    from dataforge.tools.processes import CeleryProcess, worker_command

    app = _converted_app()
    out = []
    log = Path("worker.log").resolve()
    with CeleryProcess("verify-worker", worker_command(concurrency=1), log_file=log) as proc:
        proc.wait_ready(timeout)
        for case in cases:
            kwargs, headers = _message(case)
            async_result = app.send_task(case["task_name"], kwargs=kwargs, headers=headers)
            try:
                async_result.get(timeout=timeout, propagate=False)
            except CeleryTimeout:
                out.append(
                    {
                        "ok": False,
                        "exception": "Timeout",
                        "message": f"no result within {timeout}s (worker log: {log})",
                        "state": async_result.state,
                    }
                )
                continue
            out.append(_outcome(async_result.state, async_result.result))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refactor_tool.verify_child")
    parser.add_argument("mode", choices=["legacy", "eager", "worker"])
    parser.add_argument("cases", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--scripts-package", default="scripts")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    cases = json.loads(args.cases.read_text(encoding="utf-8"))
    if args.mode == "legacy":
        outcomes = _legacy(cases, args.scripts_package)
    elif args.mode == "eager":
        outcomes = _eager(cases)
    else:
        outcomes = _worker(cases, args.timeout)
    args.out.write_text(json.dumps(outcomes, default=repr), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
