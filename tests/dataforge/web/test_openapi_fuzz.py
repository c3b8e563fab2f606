"""Schemathesis against /openapi.json: generated requests to every operation, on SQLite and
PostgreSQL, with the token. No 500s; every status code, content type, header and body is
the one the schema documents."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from dataforge.db import Database
from dataforge.models import utcnow
from dataforge.settings import Settings
from dataforge.web import create_web_app
from tests.dataforge.web.support import add_execution, add_schedule, auth

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def api_schema(db_settings: Settings) -> Iterator[schemathesis.BaseSchema]:
    db = Database(db_settings.database_url)
    for i in range(3):
        sid = add_schedule(db, next_run_at=utcnow() + timedelta(minutes=i))
        add_execution(db, sid, status="failure" if i else "success", error="boom" if i else None)
    db.dispose()
    # run-now publishes to a broker nobody listens on: any example that reaches it answers
    # 503 (documented), never waits.
    web = create_web_app(db_settings.with_(broker_url="redis://127.0.0.1:9/0"))
    yield schemathesis.openapi.from_asgi("/openapi.json", web)
    web.state.console.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers={**auth(), "Host": "127.0.0.1:8080"}, checks=CHECKS)
