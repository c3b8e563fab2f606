"""Errors of the legacy compatibility plug-in."""

from __future__ import annotations

from dataforge.errors import DataForgeError

__all__ = ["LegacyHandlerError", "LegacySwitchError"]


class LegacySwitchError(DataForgeError):
    """The switch cannot be read or written (no flags table: the database is not migrated)."""


class LegacyHandlerError(DataForgeError):
    """A legacy ``handler_path`` the shim or the forwarder refuses. Nothing was imported."""

    def __init__(self, handler_path: object, reason: str) -> None:
        self.handler_path = handler_path
        self.reason = reason
        super().__init__(f"handler_path {handler_path!r}: {reason}")
