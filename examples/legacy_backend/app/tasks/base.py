"""DataForgeTask of the legacy backend: a Redis lock per scheduled task, plus retry defaults."""

import logging

from celery import Task

logger = logging.getLogger(__name__)


class DataForgeTask(Task):
    abstract = True
    autoretry_for = ()
    max_retries = 0
    _lock = None

    def before_start(self, task_id, args, kwargs):
        # Imported here: importing app.config at module level would pull the legacy settings
        # into every process that lists the task modules.
        import redis

        from app import config

        scheduled_task_id = kwargs.get("scheduled_task_id")
        if scheduled_task_id is None:
            return
        client = redis.Redis.from_url(config.REDIS_URL)
        self._lock = client.lock(f"scheduled_task:{scheduled_task_id}", timeout=config.TASK_LOCK_TTL, blocking=False)
        if not self._lock.acquire():
            logger.warning("scheduled task %s is already running", scheduled_task_id)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        if self._lock is not None:
            try:
                self._lock.release()
            except Exception:  # noqa: BLE001
                pass
            self._lock = None
