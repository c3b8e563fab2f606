"""Errors the migrations raise on purpose, rooted at the project's :class:`DataForgeError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataforge.errors import DataForgeError

if TYPE_CHECKING:
    from migrations.report import MigrationReport

__all__ = ["DatabaseUnavailableError", "MigrationOptionError", "MigrationRefusedError", "UnsupportedDatabaseError"]


class MigrationRefusedError(DataForgeError):
    """A revision found rows it must not migrate under the chosen policy; nothing was changed.

    ``report`` is the same report ``dataforge db check`` prints (rows grouped by reason, with
    ids); ``revision`` names the revision that refused.
    """

    def __init__(self, revision: str, reason: str, report: MigrationReport | None = None) -> None:
        self.revision = revision
        self.reason = reason
        self.report = report
        text = f"migration {revision} refused: {reason}; the whole upgrade was rolled back, nothing changed"
        if report is not None:
            text += "\n" + report.render()
        super().__init__(text)


class MigrationOptionError(DataForgeError):
    """An ``-x key=value`` option (or the map file it names) cannot be used."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option = option
        self.value = value
        self.reason = reason
        super().__init__(f"-x {option}={value!r}: {reason}")


class DatabaseUnavailableError(DataForgeError):
    """A database the command must read cannot be opened (unreachable, missing, not legacy).

    ``url`` is shown without its password.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"database {url}: {reason}")


class UnsupportedDatabaseError(DataForgeError):
    """The database is neither SQLite nor PostgreSQL (MariaDB, MySQL...): refused from its URL,
    before anything connects to it, so nothing changes. Refusing later is too late there: those
    databases commit DDL at once, so even Alembic's version table would stay behind.

    ``url`` is shown without its password.
    """

    def __init__(self, url: str, backend: str, supported: tuple[str, ...]) -> None:
        self.url = url
        self.backend = backend
        super().__init__(
            f"database {url}: {backend} is not supported; DataForge migrations run on {' and '.join(supported)} "
            "only (docs/migrations.md); nothing was changed"
        )
