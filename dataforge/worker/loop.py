"""The one persistent event loop of a worker process, for legacy ``async def run`` jobs.

``asyncio.run`` per task creates and closes a loop every time, which breaks every client that
binds itself to a loop (async database engines, ``redis.asyncio`` pools, aiohttp sessions
kept in a module global): the second task finds its client attached to a closed loop. The
loop here lives for the whole process, in its own daemon thread, and task threads hand it
coroutines. A dedicated thread (rather than ``run_until_complete`` in the task thread) also
works with the ``threads`` pool, where several tasks await at once on the same loop.

Cancellation: when the waiting task thread is interrupted (Celery's soft time limit raises
``SoftTimeLimitExceeded`` in it), the coroutine is cancelled *on the loop* and awaited until
it has unwound (its ``finally`` blocks and ``async with`` exits ran), for at most
:attr:`JobLoop.cancel_grace` seconds; then the interruption propagates as the failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

from dataforge.worker.errors import JobCancelledError

__all__ = ["JobLoop"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _await(aw: Awaitable[T]) -> T:
    return await aw


class JobLoop:
    """An event loop running forever in a daemon thread; :meth:`run` blocks until done."""

    #: How long an interrupted run waits for its cancelled coroutine to unwind.
    cancel_grace: float = 10.0

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use (in the process that uses it, never before a fork)."""
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name="dataforge-job-loop", daemon=True)
                thread.start()
                ready.wait(10)
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` to completion on the loop and return its result (or raise)."""
        loop = self.loop
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        holder: list[asyncio.Future[T]] = []

        def copy(task: asyncio.Future[T]) -> None:
            if task.cancelled():
                done.set_exception(JobCancelledError("the job's coroutine was cancelled"))
            elif (exc := task.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(task.result())

        def start() -> None:
            task = asyncio.ensure_future(awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable))
            holder.append(task)
            task.add_done_callback(copy)

        loop.call_soon_threadsafe(start)
        try:
            return done.result()
        except BaseException:
            if not done.done():
                self._cancel(loop, holder, done)
            raise

    def _cancel(
        self, loop: asyncio.AbstractEventLoop, holder: list[asyncio.Future[Any]], done: concurrent.futures.Future[Any]
    ) -> None:
        # call_soon_threadsafe callbacks run in order, so `start` has run before this one.
        loop.call_soon_threadsafe(lambda: holder[0].cancel() if holder else None)
        try:
            done.result(timeout=self.cancel_grace)
        except concurrent.futures.TimeoutError:
            log.warning("job coroutine ignored cancellation for %ss; it keeps running on the loop", self.cancel_grace)
        except BaseException:  # the outcome of the cancelled job does not matter any more
            pass

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()

    def after_fork(self) -> None:
        # The loop thread did not survive the fork; the next use starts a new loop.
        self._loop = None
        self._thread = None
