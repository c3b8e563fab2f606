"""``get_registered_tasks()``'s public name (the design keeps it for API queries).

The task catalogue lives in :mod:`dataforge.catalog.registry`.
"""

from dataforge.catalog.registry import check_registry, get_registered_tasks

__all__ = ["check_registry", "get_registered_tasks"]
