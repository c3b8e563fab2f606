"""Backend configuration, read from the environment once at import."""

import os

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///dataforge-legacy.db")
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0")
RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "redis://localhost:6379/1")
REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/2")
# seconds a scheduled task keeps its lock
TASK_LOCK_TTL = int(os.environ.get("TASK_LOCK_TTL", "3600"))
