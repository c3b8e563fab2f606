"""Helpers shared by the jobs: where the data lives, JSON files, timing, retries."""

import asyncio
import functools
import json
import logging
import os
import time
from pathlib import Path

# Relative to the working directory of the worker (the backend folder in production).
DATA_DIR = Path(os.environ.get("DATAFORGE_DATA_DIR", "data"))

logger = logging.getLogger("scripts")


def load_json(name, default=None):
    path = DATA_DIR / name
    if not path.exists():
        return default
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def save_json(name, data):
    """Write atomically: a crash leaves the old file, never half a file."""
    path = DATA_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def timed(func):
    """Log how long a job took. Works for sync and async run()."""
    if asyncio.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args, **kwargs):
            start = time.monotonic()
            try:
                return await func(*args, **kwargs)
            finally:
                logger.info("%s took %.3fs", func.__module__, time.monotonic() - start)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        start = time.monotonic()
        try:
            return func(*args, **kwargs)
        finally:
            logger.info("%s took %.3fs", func.__module__, time.monotonic() - start)

    return wrapper


def retrying(func, attempts=3, delay=0.0):
    """Call an async job again when it raises ConnectionError (flaky upstreams)."""

    @functools.wraps(func)
    async def wrapper(**kwargs):
        for attempt in range(1, attempts + 1):
            try:
                return await func(**kwargs)
            except ConnectionError:
                if attempt == attempts:
                    raise
                await asyncio.sleep(delay)

    return wrapper
