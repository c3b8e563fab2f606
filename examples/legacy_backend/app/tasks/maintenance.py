"""Maintenance tasks, already written the new way (2023)."""

import json
import os
import time
from pathlib import Path

from app.celery_app import celery_app
from app.tasks.base import DataForgeTask

DATA_DIR = Path(os.environ.get("DATAFORGE_DATA_DIR", "data"))


@celery_app.task(base=DataForgeTask, bind=True, name="dataforge.cleanup_sessions")
def cleanup_sessions(self, **kwargs):
    """Delete expired user sessions."""
    max_age_hours = int(kwargs.get("max_age_hours", 24))
    sessions_dir = DATA_DIR / "sessions"
    removed = 0
    if sessions_dir.is_dir():
        cutoff = time.time() - max_age_hours * 3600
        for path in sorted(sessions_dir.glob("*.json")):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return {"removed": removed, "max_age_hours": max_age_hours}


@celery_app.task(base=DataForgeTask, bind=True, name="dataforge.vacuum_stats")
def vacuum_stats(self, **kwargs):
    """Compact the daily statistics files into one."""
    stats_dir = DATA_DIR / "stats"
    merged = {}
    if stats_dir.is_dir():
        for path in sorted(stats_dir.glob("*.json")):
            merged[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return {"days": len(merged)}
