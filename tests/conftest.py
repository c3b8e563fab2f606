"""Fixtures every test package shares: real services, fresh databases, settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataforge.models import Base
from dataforge.settings import Settings
from tests.support.services import RABBITMQ_URL, fresh_postgres_database, redis_db_url, require_service

# pytest-celery's autoload is off (`-p no:celery` in pyproject.toml: its `celery_worker`
# fixture needs Docker). Celery's own plugin gives celery_app / celery_worker for eager and
# in-process worker tests.
pytest_plugins = ("celery.contrib.pytest",)

#: The checkout under test. Worker, beat and CLI processes that tests start inherit it at the
#: front of PYTHONPATH, so they import this tree's code even when the virtualenv's editable
#: install points at another checkout.
REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO_ROOT))]
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A flushed Redis database for this test."""
    with redis_db_url() as url:
        yield url


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("RabbitMQ", RABBITMQ_URL, 5672)
    return RABBITMQ_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'dataforge.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend in turn: a SQLite file, then a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schedules.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def create_schema(url: str) -> None:
    """Create the target schema from the models (tests that are not about migrations)."""
    from dataforge.db import Database

    engine = Database(url).engine
    Base.metadata.create_all(engine)
    engine.dispose()


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    """The embedded defaults (SQLite + sqla broker + DB locks), rooted in tmp_path, schema created."""
    settings = Settings.from_env({}, cwd=tmp_path)
    create_schema(settings.database_url)
    return settings


@pytest.fixture
def server_settings(tmp_path: Path, pg_url: str, redis_url: str) -> Settings:
    """Production-shaped settings: PostgreSQL schedules, Redis broker, results and locks."""
    settings = Settings.from_env(
        {
            "DATAFORGE_DATABASE_URL": pg_url,
            "DATAFORGE_BROKER_URL": redis_url,
            "DATAFORGE_RESULT_BACKEND": redis_url,
            "DATAFORGE_REDIS_URL": redis_url,
        },
        cwd=tmp_path,
    )
    create_schema(settings.database_url)
    return settings

