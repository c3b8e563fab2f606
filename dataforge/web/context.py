"""What every request of the console needs, built once per process by the app factory.

One Celery app (for ``run-now``'s publish and the task registry) and its runtime's database;
the task catalog is imported on first use and kept, since task packages change only with a
restart. A failed import is not kept: the next request tries again, so a fixed deploy heals
without restarting the console, and reads (lists, history, metrics) never depend on it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from dataforge.catalog.registry import (
    RegistryCheck,
    TaskCatalog,
    catalog_from_app,
    check_registry,
    get_registered_tasks,
)
from dataforge.db import Database
from dataforge.runtime import DataForgeApp
from dataforge.settings import Settings
from dataforge.web.errors import CatalogUnavailableError

__all__ = ["Console"]


@dataclass
class Console:
    """The console's resources: settings, the Celery app, its database, the task catalog."""

    settings: Settings
    app: DataForgeApp
    _catalog: TaskCatalog | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def db(self) -> Database:
        return self.app.runtime.db

    def catalog(self) -> TaskCatalog:
        """The schedulable tasks; :class:`CatalogUnavailableError` while the packages do not import."""
        with self._lock:
            if self._catalog is None:
                try:
                    self._catalog = catalog_from_app(self.app)
                except ImportError as exc:
                    raise CatalogUnavailableError(self.settings.task_packages, exc) from exc
            return self._catalog

    def tasks(self) -> tuple[dict[str, dict[str, Any]], RegistryCheck]:
        """``REGISTERED_TASKS`` joined with Celery's registry, and where the two disagree."""
        try:
            return get_registered_tasks(self.app), check_registry(self.app)
        except ImportError as exc:
            raise CatalogUnavailableError(self.settings.task_packages, exc) from exc

    def close(self) -> None:
        self.app.runtime.close()
