"""Real services for tests: PostgreSQL, Redis, RabbitMQ.

Outside CI a missing service skips the tests that need it (a laptop without Redis can still
run the pure-logic suite). Under ``CI=true`` it is a failure: CI must never go green by
skipping the tests that matter.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

__all__ = [
    "PG_ADMIN_URL",
    "RABBITMQ_URL",
    "REDIS_BASE_URL",
    "fresh_postgres_database",
    "redis_db_url",
    "require_service",
]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get("DATAFORGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("DATAFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: Each suite that flushes Redis uses its own db number, so parallel runs do not collide.
REDIS_DB = int(os.environ.get("DATAFORGE_TEST_REDIS_DB", "1"))
RABBITMQ_URL = os.environ.get("DATAFORGE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> None:
    """Skip (locally) or fail (CI) when ``name`` does not answer at ``url``."""
    if _reachable(url, default_port):
        return
    msg = f"{name} is not reachable at {url}"
    if IN_CI:
        pytest.fail(f"{msg}: CI=true requires it (.ci/run starts it)", pytrace=False)
    pytest.skip(msg)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database, yield its URL, drop it afterwards (with its connections)."""
    import psycopg

    require_service("PostgreSQL", PG_ADMIN_URL, 5432)
    name = f"dftest_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_db_url(db: int = REDIS_DB) -> Iterator[str]:
    """A Redis URL on a db number flushed before and after the test."""
    import redis

    require_service("Redis", REDIS_BASE_URL, 6379)
    url = f"{REDIS_BASE_URL}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()
