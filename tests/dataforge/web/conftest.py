"""Fixtures of the console tests: each runs on SQLite (the embedded default) and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dataforge.db import Database
from dataforge.settings import Settings
from tests.conftest import create_schema
from tests.dataforge.web.support import TOKEN, console


@pytest.fixture(params=["sqlite", "postgresql"])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on a fresh database of each kind (schema from the models), with a token."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dataforge.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    create_schema(url)
    # The broker is never reached by these tests except run-now, which gets its own broker.
    return Settings.from_env({"DATAFORGE_DATABASE_URL": url, "DATAFORGE_API_TOKEN": TOKEN}, cwd=tmp_path)


@pytest.fixture
def db(db_settings: Settings) -> Iterator[Database]:
    database = Database(db_settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def web(db_settings: Settings) -> Iterator[tuple[FastAPI, TestClient]]:
    with console(db_settings) as pair:
        yield pair


@pytest.fixture
def client(web: tuple[FastAPI, TestClient]) -> TestClient:
    return web[1]
