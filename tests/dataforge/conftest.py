"""Fixtures for DataForgeTask tests in eager mode (real databases and lock stores)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery, signals

from dataforge.celery_app import create_app
from dataforge.settings import Settings


@pytest.fixture(params=["embedded", "server"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """Each test runs on the embedded defaults (SQLite, DB locks) and on PostgreSQL + Redis."""
    value: Settings = request.getfixturevalue(f"{request.param}_settings")
    return value


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], Celery]]:
    apps: list[Celery] = []

    def make(settings: Settings) -> Celery:
        app = create_app(settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.runtime.close()


@pytest.fixture
def app(settings: Settings, make_app: Callable[[Settings], Celery]) -> Celery:
    return make_app(settings)


@pytest.fixture
def events() -> Iterator[list[str]]:
    """Signal names in the order they fire, for tasks whose name starts with ``t.``."""
    seen: list[str] = []

    def receiver(name: str) -> Callable[..., None]:
        def on(sender: Any = None, **kwargs: Any) -> None:
            task = kwargs.get("task") or sender
            if not str(getattr(task, "name", "")).startswith("t."):
                return
            state = kwargs.get("state")
            seen.append(f"signal:{name}" + (f":{state}" if state else ""))

        return on

    connected = []
    for name in ("task_prerun", "task_success", "task_failure", "task_retry", "task_postrun"):
        sig = getattr(signals, name)
        handler = receiver(name)
        sig.connect(handler, weak=False)
        connected.append((sig, handler))
    yield seen
    for sig, handler in connected:
        sig.disconnect(handler)
