"""The per-process job loop: one loop for every coroutine job, clean cancellation."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from dataforge.runtime import Runtime
from dataforge.settings import Settings
from dataforge.worker.errors import JobCancelledError
from dataforge.worker.loop import JobLoop
from dataforge.worker.task import DataForgeTask


@pytest.fixture
def loop() -> Iterator[JobLoop]:
    jl = JobLoop()
    yield jl
    jl.close()


def test_two_sequential_async_jobs_share_one_loop_and_a_loop_bound_client(
    server_settings: Settings, make_app: Any
) -> None:
    app: Celery = make_app(server_settings)
    client = aioredis.Redis.from_url(server_settings.redis_url or "")  # binds to the first loop that uses it

    async def job(key: str) -> dict[str, Any]:
        await client.set(key, "1")
        return {"loop": id(asyncio.get_running_loop()), "ping": await client.ping()}

    def body(self: DataForgeTask, **kwargs: Any) -> Any:
        return self.run_job(job, kwargs)

    task = app.task(base=DataForgeTask, bind=True, name="t.async_client", shared=False)(body)
    first = task.apply(kwargs={"key": "a"}).get()
    second = task.apply(kwargs={"key": "b"}).get()
    assert first["ping"] is True and second["ping"] is True
    assert first["loop"] == second["loop"]


def test_interrupting_the_wait_cancels_the_coroutine_cleanly(loop: JobLoop) -> None:
    """Celery's soft time limit raises SoftTimeLimitExceeded in the task thread (a signal
    handler); the coroutine must be cancelled on the loop and unwind before it propagates."""
    unwound = threading.Event()
    started = threading.Event()

    async def slow() -> None:
        try:
            started.set()
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0)  # cleanup may itself await
            unwound.set()

    def on_alarm(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded("soft time limit")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        loop.loop.call_soon_threadsafe(lambda: None)  # loop up before the alarm is armed
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(SoftTimeLimitExceeded):
            loop.run(slow())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert started.is_set()
    assert unwound.is_set(), "the exception propagated before the coroutine's finally ran"

    async def after() -> str:
        return "loop still serves"

    assert loop.run(after()) == "loop still serves"


def test_a_job_cancelling_itself_is_an_ordinary_exception(loop: JobLoop) -> None:
    async def cancels() -> None:
        raise asyncio.CancelledError()

    with pytest.raises(JobCancelledError):
        loop.run(cancels())


def test_results_exceptions_and_plain_awaitables(loop: JobLoop) -> None:
    async def value() -> int:
        return 42

    async def fails() -> None:
        raise KeyError("k")

    assert loop.run(value()) == 42
    with pytest.raises(KeyError):
        loop.run(fails())

    async def make_future() -> asyncio.Future[str]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, "from a future")
        return fut

    fut = loop.run(make_future())
    assert loop.run(fut) == "from a future"


def test_threads_pool_tasks_await_concurrently_on_the_one_loop(loop: JobLoop) -> None:
    """Two task threads wait on each other: this only finishes if both coroutines are awaited
    concurrently on the same loop (serially, the first would time out)."""
    arrived: list[int] = []
    events: list[asyncio.Event] = []

    async def job() -> int:
        if not events:
            events.append(asyncio.Event())
        arrived.append(1)
        if len(arrived) == 2:
            events[0].set()
        await asyncio.wait_for(events[0].wait(), 10)
        return id(asyncio.get_running_loop())

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(loop.run(job()))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 2 and len(set(results)) == 1


def test_a_coroutine_that_ignores_cancellation_holds_the_run_for_cancel_grace_only(
    loop: JobLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/runtime.md: after the soft time limit the coroutine is awaited for at most
    ``cancel_grace``; one that swallows every cancellation must not hang the worker child.
    (The grace is shortened here; the default itself is pinned by the next test.)"""
    loop.cancel_grace = 0.5
    release = threading.Event()
    cancelled = threading.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                cancelled.set()  # and carries on regardless

    fired: list[str] = []

    def on_alarm(signum: int, frame: Any) -> None:
        if not fired:
            fired.append("soft limit")
            signal.setitimer(signal.ITIMER_REAL, 8.0)  # the watchdog: well past the grace
            raise SoftTimeLimitExceeded("soft time limit")
        fired.append("watchdog")
        raise TimeoutError("the interrupted run was still waiting for its coroutine 8 s later")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        loop.loop.call_soon_threadsafe(lambda: None)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with caplog.at_level("WARNING", logger="dataforge.worker.loop"), pytest.raises(SoftTimeLimitExceeded):
            loop.run(stubborn())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        release.set()
    assert fired == ["soft limit"], "the run waited past cancel_grace for a coroutine that ignores cancellation"
    assert cancelled.is_set()
    assert "ignored cancellation for 0.5s" in caplog.text


def test_the_cancel_grace_of_every_process_loop_is_10_seconds(tmp_path: Path) -> None:
    """docs/runtime.md: an interrupted run waits at most ``JobLoop.cancel_grace``, 10 s, for its
    coroutine to unwind. The test above shows the wait honours the attribute; this one pins
    the value every worker process's loop (the runtime's) actually has."""
    runtime = Runtime(Settings.from_env({}, cwd=tmp_path))
    try:
        assert JobLoop.cancel_grace == 10.0
        assert runtime.job_loop.cancel_grace == 10.0
    finally:
        runtime.close()
