"""``dataforge db``: the bundled Alembic migrations, without needing alembic.ini.

``upgrade``, ``downgrade``, ``current`` and ``sql`` wrap Alembic's commands with the config of
:mod:`migrations.config` (the environment shipped in the package, the URL from the settings).
``check`` is the preflight (:mod:`migrations.preflight`): the data migration's own staging,
on a connection that cannot change the database, and the report of every row the upgrade
would change, flag or refuse, grouped by reason, with ids, and of every active row it would
leave unable to run.

Exit codes: 0 done / nothing stops; 1 the answer is "no": the upgrade would refuse (or
refused), or ``check`` finds active rows the upgrade would leave unable to run; 2 bad input
(usage, an option, a revision Alembic does not know); 3 the environment: the database cannot
be reached or read, or is stamped with a revision id that was renamed.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from sqlalchemy import Connection, inspect

from dataforge.cli import failures
from dataforge.cli.common import JSON_META, CliContext, emit_json, json_option, pass_cli
from dataforge.cli.exits import Exit
from dataforge.cli.failures import Failure, Kind
from dataforge.settings import Settings

__all__ = ["db"]

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


def _x_options(x: tuple[str, ...], **named: str | None) -> dict[str, str]:
    from migrations.config import x_dict

    try:
        out = x_dict(x)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    out.update({k: v for k, v in named.items() if v is not None})
    return out


def _url(settings: Settings, x_args: Mapping[str, str]) -> str:
    return x_args.get("url") or settings.database_url


def _fail(code: Exit, kind: Kind, message: str) -> NoReturn:
    """End the verb with a failure the shared mapping cannot classify from an exception alone."""
    failures.report(Failure(code, kind, message), as_json=bool(click.get_current_context().meta.get(JSON_META)))
    raise SystemExit(code)


@contextmanager
def _inspect(url: str) -> Iterator[Connection | None]:
    """A connection that cannot change the database (``None``: a SQLite file that does not
    exist yet); one that cannot be opened ends the verb with exit 3 (the shared mapping)."""
    from migrations.connections import inspection_connection

    with inspection_connection(url, missing_ok=True) as conn:
        yield conn


def _current(url: str) -> tuple[str | None, bool]:
    """(current revision, legacy tables present) of the database at ``url``."""
    from migrations.preflight import current

    with _inspect(url) as conn:
        return (None, False) if conn is None else current(conn)


def _config(cli: CliContext, x_args: Mapping[str, str], *, optional: bool, output: Any = None) -> Any:
    from migrations.config import alembic_config

    return alembic_config(
        cli.settings, url=x_args.get("url"), x_args=x_args, optional=optional, output=output, configure_logger=False
    )


def _needs_optional(cli: CliContext, x_args: Mapping[str, str], revision: str | None, flag: bool) -> bool:
    """The optional revisions are loaded when asked for, named, or where the database already is."""
    from migrations.preflight import OPTIONAL_REVISIONS

    if flag or (revision is not None and revision.split("@")[-1] in OPTIONAL_REVISIONS):
        return True
    return _current(_url(cli.settings, x_args))[0] in OPTIONAL_REVISIONS


def _print_reports(cli: CliContext, cfg: Any, as_json: bool, extra: Mapping[str, Any]) -> None:
    from migrations.options import REPORTS_KEY

    reports = list(cfg.attributes.get(REPORTS_KEY, []))
    if as_json:
        emit_json({**{k: v for k, v in extra.items() if k != "x_args"}, "reports": [r.to_json() for r in reports]})
        return
    for report in reports:
        if report.groups:
            click.echo(report.render())
    revision, _ = _current(_url(cli.settings, extra.get("x_args", {})))
    click.echo(f"database at {revision or 'base (no revision)'}")


def _renamed_hint(revision: str) -> str:
    from migrations.preflight import RENAMED_REVISIONS

    return (
        f"the database is stamped {revision!r}, a revision id that was renamed; run, in one transaction: "
        f'{RENAMED_REVISIONS[revision]} (docs/migrations.md, "Renamed revision")'
    )


def _run_alembic(cli: CliContext, action: str, fn: Any, as_json: bool, x_args: Mapping[str, str] | None = None) -> None:
    from alembic.util import CommandError

    from migrations.errors import MigrationRefusedError
    from migrations.preflight import RENAMED_REVISIONS, preflight

    try:
        fn()
    except CommandError as exc:
        renamed = [old for old in RENAMED_REVISIONS if f"'{old}'" in str(exc)]
        if renamed:
            _fail(Exit.ENVIRONMENT, Kind.SCHEMA_OUTDATED, f"{exc}; {_renamed_hint(renamed[0])}")
        raise
    except MigrationRefusedError as exc:
        report = exc.report
        if exc.revision == "0003_data" and x_args is not None:
            # Nothing was changed: the preflight's report is the refusal's (same staging, same
            # rows), with the legacy retries the rolled-back 0002 had numbered.
            report = preflight(cli.settings, x_args)[0]
        if as_json:
            emit_json({"action": action, "refused": True, "revision": exc.revision, "reason": exc.reason,
                       "report": report.to_json() if report else None})  # fmt: skip
        else:
            click.echo(f"migration {exc.revision} refused: {exc.reason}; nothing was changed", err=True)
            if report is not None:
                click.echo(report.render(), err=True)
        raise SystemExit(Exit.NO) from exc


_x_option = click.option(
    "-x", "x", multiple=True, metavar="KEY=VALUE",
    help="Alembic -x option (map=, on_unmappable=, scripts_package=, url=, allow_drop_data=, legacy_tables=, "
    "legacy_db=).",
)  # fmt: skip
_map_option = click.option("--map", "map_file", type=click.Path(dir_okay=False), help="Handler map file (-x map=).")
_policy_option = click.option(
    "--on-unmappable", type=click.Choice(["refuse", "pause"]), default=None,
    help="Active rows that name no task: refuse the upgrade (default) or pause them.",
)  # fmt: skip
_json_option = json_option("One JSON document on stdout (errors too).")


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
        from migrations.preflight import current as read_current

        with _inspect(_url(cli.settings, x_args)) as conn:
            if conn is not None and _lacks_0008(conn, read_current(conn)[0]):
                _fail(Exit.ENVIRONMENT, Kind.SCHEMA_OUTDATED, _before_0008_hint())
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

    from migrations.preflight import OPTIONAL_REVISIONS, RENAMED_REVISIONS
    from migrations.preflight import current as read_current

    x_args = _x_options(x)
    with _inspect(_url(cli.settings, x_args)) as conn:
        revision, legacy = (None, False) if conn is None else read_current(conn)
        lacks_0008 = conn is not None and _lacks_0008(conn, revision)
    head = ScriptDirectory.from_config(_config(cli, x_args, optional=False)).get_current_head()
    state = (
        "empty database" if revision is None and not legacy
        else "legacy database (never migrated): `dataforge db upgrade` adopts it" if revision is None
        else "at head" if revision == head
        else _before_0008_hint() if lacks_0008
        else "optional revisions applied" if revision in OPTIONAL_REVISIONS
        else _renamed_hint(revision) if revision in RENAMED_REVISIONS
        else "behind head: `dataforge db upgrade`"
    )  # fmt: skip
    if as_json:
        emit_json({"current": revision, "head": head, "legacy_tables": legacy, "state": state})
        return
    click.echo(f"current: {revision or '-'}  head: {head}  ({state})")


@db.command("sql")
@click.argument("revision_range", default="base:head")
@click.option("--downgrade", "down", is_flag=True, help="Render a downgrade (RANGE like head:0002_expand).")
@click.option(
    "--legacy-db", "legacy_db", metavar="URL",
    help="The legacy database the script is for, read (read-only) so the script converts every handler_kwargs "
    "exactly as the online upgrade does (-x legacy_db=URL; implies -x legacy_tables=adopt).",
)  # fmt: skip
@click.option("--optional", "optional", is_flag=True, help="Also load migrations/optional.")
@_map_option
@_policy_option
@_x_option
@pass_cli
def sql(
    cli: CliContext, revision_range: str, down: bool, legacy_db: str | None, optional: bool, map_file: str | None,
    on_unmappable: str | None, x: tuple[str, ...],
) -> None:  # fmt: skip
    """Print the migration as a SQL script for review (offline; no database is changed).

    For an existing legacy database give it with --legacy-db URL: without the rows, a script
    stops (changing nothing) where a handler_kwargs needs the Python conversion.
    """
    from alembic import command

    x_args = _x_options(x, map=map_file, on_unmappable=on_unmappable, legacy_db=legacy_db)
    buffer = io.StringIO()
    cfg = _config(cli, x_args, optional=optional or down, output=buffer)
    run = command.downgrade if down else command.upgrade
    _run_alembic(cli, "sql", lambda: run(cfg, revision_range, sql=True), False)
    sys.stdout.write(buffer.getvalue())


@db.command("check")
@_map_option
@_policy_option
@_x_option
@_json_option
@pass_cli
def check(cli: CliContext, map_file: str | None, on_unmappable: str | None, x: tuple[str, ...], as_json: bool) -> None:
    """Preflight: what the upgrade would change, flag or refuse, by reason, with ids. Changes nothing.

    Exit 1 when the upgrade would refuse, or would leave an active row unable to run (paused,
    unmapped, kwargs or schedule beat refuses: each row is listed with all its reasons).
    """
    from migrations.preflight import RENAMED_REVISIONS, preflight

    x_args = _x_options(x, map=map_file, on_unmappable=on_unmappable)
    report, revision = preflight(cli.settings, x_args)
    if revision in RENAMED_REVISIONS:
        _fail(Exit.ENVIRONMENT, Kind.SCHEMA_OUTDATED, _renamed_hint(revision))
    if as_json:
        emit_json({"revision": revision, **report.to_json()})
    else:
        click.echo(report.render())
    if report.blocking:
        if not as_json:
            click.echo("the upgrade would REFUSE: fix the [BLOCK] rows or use --on-unmappable pause", err=True)
        raise SystemExit(Exit.NO)
    if report.stops_rows:
        if not as_json:
            click.echo("active rows would stop running after the upgrade: see [STOP]", err=True)
        raise SystemExit(Exit.NO)
