"""Tasks written the new way, and the registry the API lists.

New tasks go here (see docs/celery-refactor-plan.md, 任务注册规范).
"""

REGISTERED_TASKS = {
    # --- maintenance (moved from scripts/ in 2023) ---
    "dataforge.cleanup_sessions": {
        "name": "会话清理",
        "description": "Delete expired user sessions",
        "category": "maintenance",
        "params": [{"name": "max_age_hours", "type": "int", "default": 24}],
    },
    "dataforge.vacuum_stats": {
        "name": "统计表整理",
        "description": "Compact the daily statistics files",
        "category": "maintenance",
        "params": [],
    },  # TODO: schedule weekly
}
