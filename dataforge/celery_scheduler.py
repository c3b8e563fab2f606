"""The beat scheduler's public name: ``celery beat -S dataforge.celery_scheduler:DatabaseScheduler``.

The app's default ``beat_scheduler`` names this module, as the design and deployments do; the
class lives in :mod:`dataforge.scheduler.beat`.
"""

from dataforge.scheduler.beat import DatabaseScheduler

__all__ = ["DatabaseScheduler"]
