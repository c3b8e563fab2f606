"""Per-process resources built from :class:`~dataforge.settings.Settings`.

A :class:`Runtime` hangs off the Celery app (``app.dataforge``), so every component that has
the app (a task via ``self.app``, a signal handler via ``sender.app``, beat via ``self.app``)
reaches the same settings and database without module globals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataforge.db import Database
from dataforge.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["Runtime", "get_runtime"]


class Runtime:
    """Settings plus the lazily-created resources that depend on them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        #: Free slots for components (lock backend, job loop...) created on first use;
        #: keyed by component name so each is built once per process.
        self._components: dict[str, Any] = {}

    def component(self, name: str, factory: Any) -> Any:
        """Return the component ``name``, building it with ``factory(self)`` on first use."""
        comp = self._components.get(name)
        if comp is None:
            comp = self._components[name] = factory(self)
        return comp

    def after_fork(self) -> None:
        """Called in each prefork child: drop inherited pools and per-process components."""
        self.db.dispose_after_fork()
        for comp in self._components.values():
            hook = getattr(comp, "after_fork", None)
            if hook is not None:
                hook()
        self._components.clear()

    def close(self) -> None:
        for comp in self._components.values():
            hook = getattr(comp, "close", None)
            if hook is not None:
                hook()
        self._components.clear()
        self.db.dispose()


def get_runtime(app: Celery) -> Runtime:
    """The runtime attached by :func:`dataforge.celery_app.configure`."""
    runtime = getattr(app, "dataforge", None)
    if runtime is None:
        raise RuntimeError(
            f"Celery app {app.main!r} has no DataForge runtime; build it with "
            "dataforge.celery_app.create_app(settings) or call configure(app, settings)"
        )
    return runtime  # type: ignore[no-any-return]
