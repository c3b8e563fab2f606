"""Every verb against the one exit-code table (dataforge/cli/exits.py), on SQLite and PostgreSQL.

Table-driven: each row is a command line and the status it must end with. Each command is
run twice: for people (an error is ONE line on stderr, no traceback, no driver class name, no
hint that does not apply) and, where the verb has ``--json``, for scripts (exactly one strict
JSON document on stdout, errors included, whose ``error.code`` is the exit status).

States: a database that is unreachable (a closed port; a SQLite file in a missing folder),
one without the schema, one at an outdated revision (the legacy baseline), and a ready one
on which the verbs are driven through success, idempotent repeats, refusals and "no" answers.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from dataforge.cli.exits import Exit, exit_table
from dataforge.cli.main import cli
from dataforge.settings import Settings
from tests.conftest import create_schema
from tests.migrations.support import BLOCKING_ROWS, QUIRK_SCHEDULES, build_legacy_db
from tests.support.services import fresh_postgres_database

TASK = "dataforge.example_cleanup"
#: Words that must never reach a user: driver and SQLAlchemy class names, a Python traceback,
#: the former blanket hint.
LEAKS = re.compile(r"Traceback|OperationalError|ProgrammingError|DataError|psycopg|sqlite3\.|"
                   r"sqlalche\.me|is the schema up to date")
BACKENDS = ["sqlite", "postgresql"]

#: Verbs that have --json.
JSON_VERBS = {("schedules",), ("legacy",), ("tasks",), ("verify",), ("db", "check"), ("db", "current"),
              ("db", "upgrade"), ("db", "downgrade")}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: Exit
    #: Text the output (human form) must contain.
    needle: str = ""
    #: Also run with --json (off for a write whose repeat would have another outcome).
    json: bool = True


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in --json output (not JSON): {text[:300]}")

    return json.loads(text, parse_constant=refuse)


def _has_json(args: tuple[str, ...]) -> bool:
    return args[:1] in JSON_VERBS or args[:2] in JSON_VERBS


def run(env: dict[str, str], case: Case, cwd: Path) -> None:
    """Run ``case`` for people and (if the verb has it) with --json; assert the contract."""
    runner = CliRunner()
    human = runner.invoke(cli, list(case.args), env=env, catch_exceptions=False)
    where = f"`dataforge {' '.join(case.args)}`"
    assert human.exit_code == case.code, f"{where}: exit {human.exit_code}, expected {case.code}:\n{human.output}"
    assert not LEAKS.search(human.output), f"{where} leaks internals:\n{human.output}"
    assert case.needle in human.output, f"{where}: {case.needle!r} not in:\n{human.output}"
    if case.code in (Exit.REFUSED, Exit.ENVIRONMENT):
        lines = [line for line in human.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: not one error line:\n{human.stderr}"
    if not case.json or not _has_json(case.args):
        return
    scripted = runner.invoke(cli, [*case.args, "--json"], env=env, catch_exceptions=False)
    assert scripted.exit_code == case.code, f"{where} --json: exit {scripted.exit_code}:\n{scripted.output}"
    document = _strict(scripted.stdout)
    if case.code in (Exit.REFUSED, Exit.ENVIRONMENT):
        error = document["error"]
        assert error["code"] == case.code and error["message"] and error["kind"], document
        assert set(error) == {"code", "kind", "message", "field"}, document
        assert not LEAKS.search(error["message"]), document


def env_for(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    settings = Settings.from_env({"DATAFORGE_DATABASE_URL": url, **extra}, cwd=tmp_path)
    return {**settings.as_env(), "COLUMNS": "250"}


#: Every verb that needs the database, with arguments that would otherwise succeed or
#: refuse: the environment must be reported first.
DB_VERBS: list[tuple[str, ...]] = [
    ("schedules", "list"),
    ("schedules", "show", "x"),
    ("schedules", "add", "x", "--task", TASK, "--interval", "60"),
    ("schedules", "edit", "x", "--description", "d"),
    ("schedules", "pause", "x"),
    ("schedules", "resume", "x"),
    ("schedules", "delete", "x", "--yes"),
    ("schedules", "run-now", "x"),
    ("schedules", "history", "x"),
    ("legacy", "status"),
    ("legacy", "enable"),
    ("legacy", "disable"),
]
DB_ADMIN_VERBS: list[tuple[str, ...]] = [("db", "check"), ("db", "current"), ("db", "upgrade"),
                                         ("db", "downgrade", "0002_expand")]  # fmt: skip


def _unreachable_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'x.db'}"
    return "postgresql://nobody:secret@127.0.0.1:1/x"


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unreachable_database_is_exit_3_for_every_verb(backend: str, tmp_path: Path) -> None:
    env = env_for(_unreachable_url(backend, tmp_path), tmp_path)
    needle = "does not exist" if backend == "sqlite" else "Connection refused"
    for args in [*DB_VERBS, *DB_ADMIN_VERBS]:
        run(env, Case(args, Exit.ENVIRONMENT, needle), tmp_path)
        assert "secret" not in CliRunner().invoke(cli, list(args), env=env).output
    assert not (tmp_path / "no").exists(), "a verb created the missing folder"


@pytest.fixture
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(backend, URL) of an existing database without any table."""
    backend: str = request.param
    if backend == "sqlite":
        path = tmp_path / "empty.db"
        sqlite3.connect(path).close()
        yield backend, f"sqlite:///{path}"
    else:
        with fresh_postgres_database() as url:
            yield backend, url


@pytest.mark.parametrize("empty_url", BACKENDS, indirect=True)
def test_a_database_without_the_schema_is_exit_3_naming_db_upgrade(empty_url: tuple[str, str],
                                                                   tmp_path: Path) -> None:
    _backend, url = empty_url
    env = env_for(url, tmp_path)
    for args in DB_VERBS:
        run(env, Case(args, Exit.ENVIRONMENT, "has no DataForge schema: run `dataforge db upgrade`"), tmp_path)
    # The db verbs are the ones that create it.
    run(env, Case(("db", "current"), Exit.OK, "empty database"), tmp_path)
    run(env, Case(("db", "check"), Exit.OK, "creates the schema"), tmp_path)
    run(env, Case(("db", "downgrade", "nowhere"), Exit.REFUSED, "nowhere"), tmp_path)
    run(env, Case(("db", "upgrade"), Exit.OK, "database at 0008_schedule_policies"), tmp_path)
    run(env, Case(("schedules", "list"), Exit.OK), tmp_path)


def test_a_sqlite_file_that_does_not_exist_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    env = env_for(f"sqlite:///{path}", tmp_path)
    for args in DB_VERBS:
        run(env, Case(args, Exit.ENVIRONMENT, "does not exist yet: run `dataforge db upgrade` to create it"),
            tmp_path)
    assert not path.exists()


@pytest.mark.parametrize("empty_url", BACKENDS, indirect=True)
def test_an_outdated_revision_is_exit_3_naming_db_upgrade(empty_url: tuple[str, str], tmp_path: Path) -> None:
    _backend, url = empty_url
    env = env_for(url, tmp_path)
    run(env, Case(("db", "upgrade", "0001_legacy_baseline"), Exit.OK), tmp_path)
    for args in DB_VERBS:
        run(env, Case(args, Exit.ENVIRONMENT, "is at revision 0001_legacy_baseline, older than"), tmp_path)
    run(env, Case(("db", "current"), Exit.OK, "behind head"), tmp_path)
    # 0002_expand is where a rollback runs: the legacy switch and the read verbs work there (the
    # policy and counter columns 0008 adds read as null); the verbs that write a schedule need
    # 0008_schedule_policies and say so.
    run(env, Case(("db", "upgrade", "0002_expand"), Exit.OK), tmp_path)
    run(env, Case(("legacy", "enable"), Exit.OK, "legacy switch: ON"), tmp_path)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO scheduled_tasks (name, task_type, handler_path, interval_seconds, handler_kwargs, status,"
                " max_retries, run_count, success_count, failure_count, created_at, updated_at) VALUES ('old',"
                " 'interval', 'scripts:sync', 60, '{}', 'active', 0, 3, 2, 1, '2026-01-01', '2026-01-01')"))
    finally:
        engine.dispose()
    run(env, Case(("schedules", "list"), Exit.OK, "1 schedule(s)"), tmp_path)
    run(env, Case(("schedules", "show", "old"), Exit.OK, "runs: 3 sent, 2 succeeded, 1 failed"), tmp_path)
    run(env, Case(("schedules", "show", "1", "--json"), Exit.OK, '"missed_count": null', json=False), tmp_path)
    run(env, Case(("schedules", "history", "old"), Exit.OK, "0 execution(s)"), tmp_path)
    run(env, Case(("schedules", "pause", "old"), Exit.ENVIRONMENT, "older than 0008_schedule_policies"), tmp_path)
    run(env, Case(("db", "upgrade"), Exit.OK), tmp_path)
    run(env, Case(("schedules", "pause", "old"), Exit.OK), tmp_path)


@pytest.fixture
def ready(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a database with the schema, on the backend of ``request.param``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dataforge.db'}"
        create_schema(url)
        yield env_for(url, tmp_path)
    else:
        with fresh_postgres_database() as url:
            create_schema(url)
            yield env_for(url, tmp_path)


#: Driven in order on one database: success, idempotent repeats, refusals.
READY_STEPS: list[Case] = [
    Case(("schedules", "list"), Exit.OK, "0 schedule(s)"),
    Case(("schedules", "add", "x", "--task", TASK, "--interval", "60"), Exit.OK, "added schedule 1", json=False),
    Case(("schedules", "add", "x2", "--task", TASK, "--interval", "60", "--json"), Exit.OK, '"name": "x2"',
         json=False),
    Case(("schedules", "add", "x", "--task", TASK, "--interval", "60"), Exit.REFUSED, "exists"),
    Case(("schedules", "add", "y", "--task", TASK), Exit.REFUSED, "give one of --interval SECONDS, --cron EXPR"),
    Case(("schedules", "add", "y", "--task", "no.such.task", "--interval", "5"), Exit.REFUSED, "not registered"),
    Case(("schedules", "add", "y", "--task", TASK, "--interval", "2147483648"), Exit.REFUSED, "2147483647"),
    Case(("schedules", "add", "y", "--task", TASK, "--interval", "abc"), Exit.REFUSED, "--interval"),
    Case(("schedules", "add"), Exit.REFUSED, "Missing argument 'NAME'"),
    Case(("schedules", "add", "y", "--bogus"), Exit.REFUSED, "No such option"),
    Case(("schedules", "nosuchverb"), Exit.REFUSED, "No such command"),
    Case(("schedules", "show", "x"), Exit.OK, "every 60s"),
    Case(("schedules", "show", "nope"), Exit.REFUSED, "no schedule with id or name 'nope'"),
    Case(("schedules", "show", "99999999999999999999"), Exit.REFUSED, "no schedule"),
    Case(("schedules", "edit", "x", "--description", "d"), Exit.OK, "edited schedule 1"),
    Case(("schedules", "edit", "x", "--description", "d"), Exit.OK, "unchanged"),
    Case(("schedules", "edit", "nope", "--description", "d"), Exit.REFUSED, "no schedule"),
    Case(("schedules", "edit", "x", "--cron", "61 * * * *"), Exit.REFUSED, "--cron"),
    Case(("schedules", "pause", "x"), Exit.OK, "paused schedule 1"),
    Case(("schedules", "pause", "x"), Exit.OK, "is already paused"),
    Case(("schedules", "resume", "x"), Exit.OK, "resumed schedule 1"),
    Case(("schedules", "resume", "x"), Exit.OK, "is already active"),
    Case(("schedules", "resume", "nope"), Exit.REFUSED, "no schedule"),
    Case(("schedules", "history", "x"), Exit.OK, "0 execution(s)"),
    Case(("schedules", "history", "x", "--state", "exploded"), Exit.REFUSED, "--state"),
    Case(("schedules", "run-now", "x"), Exit.OK, "sent dataforge.example_cleanup"),
    Case(("schedules", "run-now", "nope"), Exit.REFUSED, "no schedule"),
    Case(("schedules", "delete", "x"), Exit.REFUSED, "needs --yes"),
    Case(("schedules", "delete", "x", "--yes"), Exit.OK, "deleted schedule 1", json=False),
    Case(("schedules", "delete", "x", "--yes"), Exit.REFUSED, "no schedule"),
    Case(("legacy", "status"), Exit.OK, "legacy switch: off"),
    Case(("legacy", "enable"), Exit.OK, "legacy switch: ON"),
    Case(("legacy", "enable"), Exit.OK, "already enabled"),
    Case(("legacy", "disable"), Exit.OK, "legacy switch: off"),
    Case(("legacy", "disable"), Exit.OK, "already disabled"),
    Case(("db", "current"), Exit.OK, "head: 0008_schedule_policies"),
    Case(("db", "upgrade", "0099_nowhere"), Exit.REFUSED, "0099_nowhere"),
    Case(("db", "check", "-x", "on_unmappable=ignore"), Exit.REFUSED, "expected refuse or pause"),
    Case(("tasks",), Exit.OK, TASK),
    Case(("tasks", "--check"), Exit.OK, TASK),
    Case(("demo", "--seconds", "1"), Exit.REFUSED, "--seconds"),
    Case(("convert", "no/such/dir"), Exit.REFUSED, "does not exist"),
    Case(("verify", "no/such/dir", "--cases", "x.json"), Exit.REFUSED, "does not exist"),
    Case(("nosuchverb",), Exit.REFUSED, "No such command"),
    Case(("--bogus",), Exit.REFUSED, "No such option"),
    Case(("db", "sql"), Exit.OK, "CREATE TABLE scheduled_tasks"),
]


@pytest.mark.parametrize("ready", BACKENDS, indirect=True)
def test_every_verb_on_a_ready_database(ready: dict[str, str], tmp_path: Path) -> None:
    for case in READY_STEPS:
        run(ready, case, tmp_path)


@pytest.mark.parametrize("ready", BACKENDS, indirect=True)
def test_an_unreachable_broker_is_exit_3(ready: dict[str, str], tmp_path: Path) -> None:
    run(ready, Case(("schedules", "add", "x", "--task", TASK, "--interval", "60"), Exit.OK, json=False), tmp_path)
    down = {**ready, "DATAFORGE_BROKER_URL": "redis://:secret@127.0.0.1:1/0"}
    run(down, Case(("schedules", "run-now", "x"), Exit.ENVIRONMENT, "could not send to the broker"), tmp_path)
    assert "secret" not in CliRunner().invoke(cli, ["schedules", "run-now", "x"], env=down).output


def test_a_bad_setting_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    env = {"DATAFORGE_LOCK_TTL": "soon", "DATAFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    run(env, Case(("schedules", "list"), Exit.REFUSED, "DATAFORGE_LOCK_TTL"), tmp_path)
    missing = {**env, "DATAFORGE_LOCK_TTL": "60", "DATAFORGE_TASK_PACKAGES": "no_such_pkg"}
    create_schema(env["DATAFORGE_DATABASE_URL"])
    run(missing, Case(("tasks",), Exit.REFUSED, "DATAFORGE_TASK_PACKAGES"), tmp_path)
    run(missing, Case(("schedules", "add", "x", "--task", TASK, "--interval", "5"), Exit.REFUSED,
                      "DATAFORGE_TASK_PACKAGES"), tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_answer_no_is_exit_1(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'legacy.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    build_legacy_db(url, [*QUIRK_SCHEDULES, *BLOCKING_ROWS])
    env = env_for(url, tmp_path)
    run(env, Case(("db", "check"), Exit.NO, "[BLOCK]"), tmp_path)
    run(env, Case(("db", "upgrade"), Exit.NO, "refused"), tmp_path)
    scripts = tmp_path / "tree" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "job.py").write_text("async def run(days=1):\n    return days\n", encoding="utf-8")
    run(env, Case(("convert", str(tmp_path / "tree"), "--check"), Exit.NO, "would be changed"), tmp_path)


def test_docs_state_the_table() -> None:
    from dataforge.cli.docgen import DOC_PATH

    doc = DOC_PATH.read_text(encoding="utf-8")
    assert exit_table() in doc, f"{DOC_PATH} must hold the exit table of dataforge/cli/exits.py:\n{exit_table()}"


def test_root_help_states_the_table() -> None:
    out: Result = CliRunner().invoke(cli, ["--help"], env={"COLUMNS": "250"})
    flat = " ".join(out.output.split())
    for code in Exit:
        assert f"{int(code)}: " in flat
    assert "the same for every verb" in flat
