"""``dataforge db``: the bundled Alembic migrations, without needing alembic.ini.

``upgrade``, ``downgrade``, ``current`` and ``sql`` wrap Alembic's commands with the config of
:mod:`migrations.config` (the environment shipped in the package, the URL from the settings).
``check`` is the preflight: it runs the data migration's own classification ``SELECT``
(:mod:`migrations.legacy_data`) read-only and prints every row the upgrade would change, flag
or refuse, grouped by reason, with ids. Exit codes: 0 fine, 1 the upgrade would refuse (or
refused), 2 the command failed (database unreachable, bad option).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy import Connection, inspect
from sqlalchemy.exc import SQLAlchemyError

from dataforge.cli.common import EXIT_CHANGED, EXIT_FAILED, CliContext, emit_json, pass_cli
from dataforge.db import Database
from dataforge.errors import DataForgeError, ScheduleError
from dataforge.settings import Settings

__all__ = ["db", "preflight"]

#: Revisions after which the data step has run (the preflight has nothing left to classify).
_DATA_APPLIED = (
    "0003_data", "0004_contract", "0005_change_triggers", "0006_executions_hot_close", "0008_schedule_policies",
    "0007_drop_handler_path",
)  # fmt: skip
_BEFORE_EXPAND = (None, "0001_legacy_baseline")
_OPTIONAL_REVISIONS = ("0007_drop_handler_path",)
#: Former id -> what to run on a database stamped with it (Alembic cannot read such a database).
#: The optional drop was ``0006_drop_handler_path`` (after 0005_change_triggers) until
#: 0006_executions_hot_close took its place; docs/migrations.md, "Renamed revision".
_RENAMED_REVISIONS = {
    "0006_drop_handler_path": (
        "DROP INDEX ix_task_executions_status_started_at; "
        "UPDATE alembic_version SET version_num = '0007_drop_handler_path' "
        "WHERE version_num = '0006_drop_handler_path';"
    ),
}
#: 0007_drop_handler_path followed 0006_executions_hot_close until 0008_schedule_policies came
#: after it: a database that ran 0007 then is stamped 0007 without 0008's columns. The fix gives
#: it back the dropped (empty) column, so that 0008 and then 0007 run as they do on the way up
#: (docs/migrations.md, "Revision numbers").
_BEFORE_0008_FIX = (
    "ALTER TABLE scheduled_tasks ADD COLUMN handler_path VARCHAR(255); "
    "UPDATE alembic_version SET version_num = '0006_executions_hot_close'; "
    "then `dataforge db upgrade 0007_drop_handler_path`"
)


def _lacks_0008(conn: Connection, revision: str | None) -> bool:
    """Stamped 0007_drop_handler_path, but without the columns of 0008_schedule_policies."""
    if revision != "0007_drop_handler_path":
        return False
    return "overlap_policy" not in {c["name"] for c in inspect(conn).get_columns("scheduled_tasks")}


def _before_0008_hint() -> str:
    return ("the database ran 0007_drop_handler_path before 0008_schedule_policies existed and lacks its "
            f"columns; run, in one transaction: {_BEFORE_0008_FIX} (docs/migrations.md, \"Revision numbers\")")


#: ScheduleError.field -> report reason of the preflight.
_FLAG_FOR_FIELD = {"cron_expression": "invalid_cron", "timezone": "unknown_timezone"}


def _x_options(x: tuple[str, ...], **named: str | None) -> dict[str, str]:
    from migrations.config import x_dict

    try:
        out = x_dict(x)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    out.update({k: v for k, v in named.items() if v is not None})
    return out


def _engine_url(settings: Settings, x_args: Mapping[str, str]) -> str:
    return Database(x_args.get("url") or settings.database_url).url


@contextmanager
def _connection(url: str) -> Iterator[Connection]:
    """A connection whose transaction is always rolled back: the preflight changes nothing."""
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"database {db.engine.url.render_as_string(hide_password=True)}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    finally:
        db.dispose()


def _current(conn: Connection) -> tuple[str | None, bool]:
    """(current revision, legacy tables present)."""
    from alembic.migration import MigrationContext

    current = MigrationContext.configure(conn).get_current_revision()
    tables = set(inspect(conn).get_table_names())
    return current, {"scheduled_tasks", "task_executions"} <= tables


def _config(cli: CliContext, x_args: Mapping[str, str], *, optional: bool, output: Any = None) -> Any:
    from migrations.config import alembic_config

    return alembic_config(
        cli.settings, url=x_args.get("url"), x_args=x_args, optional=optional, output=output, configure_logger=False
    )


def _needs_optional(cli: CliContext, x_args: Mapping[str, str], revision: str | None, flag: bool) -> bool:
    """The optional revisions are loaded when asked for, named, or where the database already is."""
    if flag or (revision is not None and revision.split("@")[-1] in _OPTIONAL_REVISIONS):
        return True
    try:
        with _connection(_engine_url(cli.settings, x_args)) as conn:
            current, _ = _current(conn)
    except click.ClickException:
        return False
    return current in _OPTIONAL_REVISIONS


def _print_reports(cli: CliContext, cfg: Any, as_json: bool, extra: Mapping[str, Any]) -> None:
    from migrations.options import REPORTS_KEY

    reports = list(cfg.attributes.get(REPORTS_KEY, []))
    if as_json:
        emit_json({**{k: v for k, v in extra.items() if k != "x_args"}, "reports": [r.to_json() for r in reports]})
        return
    for report in reports:
        if report.groups:
            click.echo(report.render())
    with _connection(_engine_url(cli.settings, extra.get("x_args", {}))) as conn:
        revision, _ = _current(conn)
    click.echo(f"database at {revision or 'base (no revision)'}")


def _renamed_hint(revision: str) -> str:
    return (
        f"the database is stamped {revision!r}, a revision id that was renamed; run, in one transaction: "
        f'{_RENAMED_REVISIONS[revision]} (docs/migrations.md, "Renamed revision")'
    )


def _run_alembic(cli: CliContext, action: str, fn: Any, as_json: bool, x_args: Mapping[str, str] | None = None) -> None:
    from alembic.util import CommandError

    from migrations.errors import MigrationOptionError, MigrationRefusedError

    try:
        fn()
    except CommandError as exc:
        renamed = [old for old in _RENAMED_REVISIONS if f"'{old}'" in str(exc)]
        if not renamed:
            raise
        click.echo(f"error: {exc}; {_renamed_hint(renamed[0])}", err=True)
        raise SystemExit(EXIT_FAILED) from exc
    except MigrationRefusedError as exc:
        report = exc.report
        if exc.revision == "0003_data" and x_args is not None:
            # Nothing was changed: the preflight's report is the refusal's (same SELECT, same
            # blocking rows) plus the schedule flags only Python can check (cron, time zone).
            report = preflight(cli.settings, x_args)[0]
        if as_json:
            emit_json({"action": action, "refused": True, "revision": exc.revision, "reason": exc.reason,
                       "report": report.to_json() if report else None})  # fmt: skip
        else:
            click.echo(f"migration {exc.revision} refused: {exc.reason}; nothing was changed", err=True)
            if report is not None:
                click.echo(report.render(), err=True)
        raise SystemExit(EXIT_CHANGED) from exc
    except (MigrationOptionError, DataForgeError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_FAILED) from exc
    except SQLAlchemyError as exc:
        click.echo(f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}", err=True)
        raise SystemExit(EXIT_FAILED) from exc


_x_option = click.option(
    "-x", "x", multiple=True, metavar="KEY=VALUE",
    help="Alembic -x option (map=, on_unmappable=, scripts_package=, url=, allow_drop_data=, legacy_tables=).",
)  # fmt: skip
_map_option = click.option("--map", "map_file", type=click.Path(dir_okay=False), help="Handler map file (-x map=).")
_policy_option = click.option(
    "--on-unmappable", type=click.Choice(["refuse", "pause"]), default=None,
    help="Active rows that name no task: refuse the upgrade (default) or pause them.",
)  # fmt: skip
_json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")


@click.group("db")
def db() -> None:
    """Migrate the scheduling tables (Alembic, bundled; docs/migrations.md)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@_map_option
@_policy_option
@click.option("--optional", "optional", is_flag=True, help="Also load migrations/optional (0007_drop_handler_path).")
@click.option("--sql", "offline", is_flag=True, help="Print the SQL instead of running it (like `db sql`).")
@_x_option
@_json_option
@pass_cli
def upgrade(
    cli: CliContext, revision: str, map_file: str | None, on_unmappable: str | None, optional: bool,
    offline: bool, x: tuple[str, ...], as_json: bool,
) -> None:  # fmt: skip
    """Upgrade to REVISION (default head). A legacy database is adopted automatically."""
    from alembic import command

    x_args = _x_options(x, map=map_file, on_unmappable=on_unmappable)
    if not offline:
        with _connection(_engine_url(cli.settings, x_args)) as conn:
            if _lacks_0008(conn, _current(conn)[0]):
                click.echo(f"error: {_before_0008_hint()}", err=True)
                raise SystemExit(EXIT_FAILED)
    cfg = _config(cli, x_args, optional=_needs_optional(cli, x_args, revision, optional) if not offline else optional)
    _run_alembic(cli, "upgrade", lambda: command.upgrade(cfg, revision, sql=offline), as_json, x_args)
    if not offline:
        _print_reports(cli, cfg, as_json, {"action": "upgrade", "revision": revision, "x_args": x_args})


@db.command("downgrade")
@click.argument("revision")
@_map_option
@_x_option
@click.option("--sql", "offline", is_flag=True, help="Print the SQL instead of running it.")
@_json_option
@pass_cli
def downgrade(
    cli: CliContext, revision: str, map_file: str | None, x: tuple[str, ...], offline: bool, as_json: bool
) -> None:
    """Downgrade to REVISION: 0002_expand for the rollback drill, 0001_legacy_baseline for legacy."""
    from alembic import command

    x_args = _x_options(x, map=map_file)
    cfg = _config(cli, x_args, optional=True)
    target = revision if not offline or ":" in revision else f"head:{revision}"
    _run_alembic(cli, "downgrade", lambda: command.downgrade(cfg, target, sql=offline), as_json)
    if not offline:
        _print_reports(cli, cfg, as_json, {"action": "downgrade", "revision": revision, "x_args": x_args})


@db.command("current")
@_x_option
@_json_option
@pass_cli
def current(cli: CliContext, x: tuple[str, ...], as_json: bool) -> None:
    """The database's revision, and the head it could go to."""
    from alembic.script import ScriptDirectory

    x_args = _x_options(x)
    with _connection(_engine_url(cli.settings, x_args)) as conn:
        revision, legacy = _current(conn)
        lacks_0008 = _lacks_0008(conn, revision)
    head = ScriptDirectory.from_config(_config(cli, x_args, optional=False)).get_current_head()
    state = (
        "empty database" if revision is None and not legacy
        else "legacy database (never migrated): `dataforge db upgrade` adopts it" if revision is None
        else "at head" if revision == head
        else _before_0008_hint() if lacks_0008
        else "optional revisions applied" if revision in _OPTIONAL_REVISIONS
        else _renamed_hint(revision) if revision in _RENAMED_REVISIONS
        else "behind head: `dataforge db upgrade`"
    )  # fmt: skip
    if as_json:
        emit_json({"current": revision, "head": head, "legacy_tables": legacy, "state": state})
        return
    click.echo(f"current: {revision or '-'}  head: {head}  ({state})")


@db.command("sql")
@click.argument("revision_range", default="base:head")
@click.option("--downgrade", "down", is_flag=True, help="Render a downgrade (RANGE like head:0002_expand).")
@click.option("--legacy-db", is_flag=True, help="The target already has the legacy tables (-x legacy_tables=adopt).")
@click.option("--optional", "optional", is_flag=True, help="Also load migrations/optional.")
@_map_option
@_policy_option
@_x_option
@pass_cli
def sql(
    cli: CliContext, revision_range: str, down: bool, legacy_db: bool, optional: bool, map_file: str | None,
    on_unmappable: str | None, x: tuple[str, ...],
) -> None:  # fmt: skip
    """Print the migration as a SQL script for review (offline; the database is not touched)."""
    from alembic import command

    x_args = _x_options(x, map=map_file, on_unmappable=on_unmappable, legacy_tables="adopt" if legacy_db else None)
    buffer = io.StringIO()
    cfg = _config(cli, x_args, optional=optional or down, output=buffer)
    run = command.downgrade if down else command.upgrade
    _run_alembic(cli, "sql", lambda: run(cfg, revision_range, sql=True), False)
    sys.stdout.write(buffer.getvalue())


def _schedule_flags(conn: Connection, report: Any) -> None:
    """Rows whose schedule beat will refuse (bad cron, unknown zone...): flagged, never dropped."""
    from sqlalchemy import text

    from dataforge.scheduler.schedules import validate_schedule
    from migrations.report import Item

    rows = conn.execute(
        text(
            "SELECT id, name, status, task_type, interval_seconds, cron_expression, run_at, timezone "
            "FROM scheduled_tasks ORDER BY id"
        )
    )
    for row in rows:
        try:
            validate_schedule(
                row.task_type, interval_seconds=row.interval_seconds, cron_expression=row.cron_expression,
                run_at=row.run_at, timezone=row.timezone, schedule_id=row.id,
            )  # fmt: skip
        except ScheduleError as exc:
            code = {"cron_expression": "invalid_cron", "timezone": "unknown_timezone"}.get(
                exc.field, "invalid_schedule"
            )
            report.add(code, Item(row.id, row.name, f"status={row.status!r}: {exc.field}={exc.value!r}: {exc.reason}"))


def preflight(settings: Settings, x_args: Mapping[str, str]) -> tuple[Any, str | None]:
    """The report ``dataforge db check`` prints, and the revision the database is at.

    Read-only: one transaction, rolled back (on PostgreSQL the classification needs a
    session-temporary helper function; it goes with the rollback).
    """
    from sqlalchemy import text

    from migrations.legacy_data import collect_report, prepare_statements
    from migrations.options import MigrationOptions
    from migrations.report import Item, MigrationReport

    options = MigrationOptions.resolve(x_args, settings)
    with _connection(_engine_url(settings, x_args)) as conn:
        revision, legacy = _current(conn)
        if not legacy:
            report = MigrationReport(title="DataForge data migration report")
            report.notes.append("no scheduling tables: `dataforge db upgrade` creates the schema")
            return report, revision
        if revision in _DATA_APPLIED or revision in _RENAMED_REVISIONS:
            report = MigrationReport(title=f"DataForge data migration report (database at {revision})")
            report.notes.append("the data migration (0003_data) is already applied")
            if revision in _RENAMED_REVISIONS:
                report.notes.append(_renamed_hint(revision))
            for row in conn.execute(text("SELECT id, name FROM scheduled_tasks WHERE task_name IS NULL ORDER BY id")):
                report.add("blocked_no_task_name_or_handler_path", Item(row.id, row.name, "task_name is NULL"))
        else:
            dialect = conn.dialect.name
            for statement in prepare_statements(dialect):
                conn.execute(text(statement))
            report = collect_report(conn, dialect, options, include_executions=revision in _BEFORE_EXPAND)
        _schedule_flags(conn, report)
        report.notes.append(f"database at {revision or 'legacy (no Alembic version)'}")
        return report, revision


@db.command("check")
@_map_option
@_policy_option
@_x_option
@_json_option
@pass_cli
def check(cli: CliContext, map_file: str | None, on_unmappable: str | None, x: tuple[str, ...], as_json: bool) -> None:
    """Preflight: what the upgrade would change, flag or refuse, by reason, with ids. Changes nothing.

    Exit 1 when the upgrade would refuse (fix the rows, or choose --on-unmappable pause).
    """
    from migrations.errors import MigrationOptionError

    x_args = _x_options(x, map=map_file, on_unmappable=on_unmappable)
    try:
        report, revision = preflight(cli.settings, x_args)
    except (MigrationOptionError, DataForgeError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_FAILED) from exc
    if as_json:
        emit_json({"revision": revision, **report.to_json()})
    else:
        click.echo(report.render())
        if report.blocking:
            click.echo("the upgrade would REFUSE: fix the [BLOCK] rows or use --on-unmappable pause", err=True)
    if report.blocking:
        raise SystemExit(EXIT_CHANGED)
