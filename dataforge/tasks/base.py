"""``DataForgeTask``'s public name: ``from dataforge.tasks.base import DataForgeTask``.

Converted jobs, hand-written tasks and the design import it from here; the class lives in
:mod:`dataforge.worker.task`.
"""

from dataforge.worker.task import DataForgeTask

__all__ = ["DataForgeTask"]
