"""The task package: ``REGISTERED_TASKS`` (the seed's format) and the example tasks.

Every module of this package is imported by the worker and beat (``DATAFORGE_TASK_PACKAGES``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["REGISTERED_TASKS"]

#: task name -> {"name", "description", "category", "params"}; see docs/architecture.md.
REGISTERED_TASKS: dict[str, dict[str, Any]] = {}
