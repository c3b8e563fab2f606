"""Alembic environment of DataForge (plain ``alembic`` and ``dataforge db`` both run this).

Where the database URL comes from, first match wins: ``-x url=...``, the config's
``sqlalchemy.url`` (set by ``dataforge db``), ``DATAFORGE_DATABASE_URL`` via
``Settings.from_env()``. Why the engine is built here instead of using ``dataforge.db``:

* the whole run is ONE transaction, on SQLite too: pysqlite commits implicitly before DDL, so
  a refused data step would leave the expand step's columns behind. SQLAlchemy's documented
  recipe (driver autocommit off, explicit ``BEGIN``) makes SQLite DDL transactional;
* SQLite foreign keys are OFF while migrating (the runtime turns them on): a table rebuild
  drops the old table, and with them on that would run ``ON DELETE SET NULL`` on executions.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine, create_engine, event, pool

from dataforge.db import Database, is_sqlite
from dataforge.settings import Settings
from migrations.compare import compare_type
from migrations.connections import refuse_unsupported
from migrations.errors import MigrationOptionError
from migrations.options import OPTIONS_KEY, REPORTS_KEY, SETTINGS_KEY, MigrationOptions

log = logging.getLogger("dataforge.migrations")

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _settings() -> Settings:
    given = config.attributes.get(SETTINGS_KEY)
    return given if isinstance(given, Settings) else Settings.from_env()


def _target_metadata() -> Any:
    # Only `alembic check` and `alembic revision --autogenerate` compare with the models; the
    # revisions never import them.
    cmd = getattr(config.cmd_opts, "cmd", None)
    name = getattr(cmd[0], "__name__", "") if isinstance(cmd, tuple) and cmd else ""
    if name == "check" or getattr(config.cmd_opts, "autogenerate", False):
        from dataforge.models import Base

        return Base.metadata
    return None


def _url(settings: Settings, options: MigrationOptions) -> str:
    """The database URL; offline, the legacy database given to read comes before the config's
    (it is the database the script is for, so it decides the dialect)."""
    x = context.get_x_argument(as_dictionary=True)
    url = x.get("url") or options.legacy_db or config.get_main_option("sqlalchemy.url") or settings.database_url
    # Before any connection or output: on MariaDB/MySQL even Alembic's version table, created
    # before the first revision runs, would stay behind (their DDL commits at once).
    refuse_unsupported(url)
    return Database(url).url  # normalised driver (postgresql:// -> psycopg 3)


def _engine(url: str) -> Engine:
    if not is_sqlite(url):
        return create_engine(url, poolclass=pool.NullPool)
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # no implicit commits; BEGIN below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def _configure_kwargs(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": _target_metadata(),
        # SQLite cannot ALTER most things; Alembic rebuilds the table (batch mode).
        "render_as_batch": dialect_name == "sqlite",
        # One transaction for the whole run (see the module docstring), SQLite included.
        "transactional_ddl": True,
        "transaction_per_migration": False,
        "compare_type": compare_type,
    }


def run_migrations_offline(options: MigrationOptions) -> None:
    url = _url(_settings(), options)
    dialect = "sqlite" if is_sqlite(url) else "postgresql"
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **_configure_kwargs(dialect))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online(options: MigrationOptions) -> None:
    if options.legacy_db is not None:
        raise MigrationOptionError(
            "legacy_db", "...", "is for --sql only: an online upgrade reads the database it migrates"
        )
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        context.configure(connection=given, **_configure_kwargs(given.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = _engine(_url(_settings(), options))
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **_configure_kwargs(connection.dialect.name))
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


_options = MigrationOptions.resolve(context.get_x_argument(as_dictionary=True), _settings())
config.attributes[OPTIONS_KEY] = _options
config.attributes.setdefault(REPORTS_KEY, [])
if context.is_offline_mode():
    run_migrations_offline(_options)
else:
    run_migrations_online(_options)
