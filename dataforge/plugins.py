"""The one seam through which optional behaviour joins the runtime: plug-ins with event hooks.

The core (scheduler, worker, recorder) never imports a plug-in. The app factory installs each
plug-in on the app (:func:`dataforge.celery_app.create_app`), and the core calls the hooks
below at the moments they are named after. Every hook has a do-nothing default, so a plug-in
overrides only the events it cares about. The legacy compatibility path
(:mod:`dataforge.legacy`) is the plug-in this project ships; removing it is removing its
installation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataforge.runtime import DataForgeApp, Runtime
    from dataforge.scheduler.dispatch import DispatchContext, RowSnapshot

__all__ = ["Plugin", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """What beat sends for a row: a registered task name, plus kwargs the plug-in adds."""

    task_name: str
    extra_kwargs: Mapping[str, Any] = field(default_factory=dict)


class Plugin:
    """Base class of plug-ins. Override the hooks you need; the others do nothing."""

    #: Shown in logs and in ``dataforge tasks`` output.
    name: str = "plugin"

    def on_app_configured(self, app: DataForgeApp) -> None:
        """The app has its settings and runtime; connect signals, extend ``include``..."""

    def on_beat_refresh(self, runtime: Runtime) -> None:
        """Beat re-reads its view of the world (at start, then on every full refresh)."""

    def resolve_row(self, row: RowSnapshot, ctx: DispatchContext) -> Target | None:
        """A row whose ``task_name`` is empty or not registered: the target to send it to.

        ``None`` when the plug-in does not claim the row; raise
        :class:`~dataforge.errors.ScheduleError` to have beat flag the row with the reason.
        """
        return None
