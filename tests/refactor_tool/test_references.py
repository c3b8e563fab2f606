"""find_references: every way a file can reach a module or a name of it, with its line."""

from __future__ import annotations

from refactor_tool.references import Reference, Targets, find_references, module_of_path

REGISTRY = "app.scheduler.registry"
TARGETS = Targets(frozenset({"app.celery_tasks"}), {REGISTRY: frozenset({"discover_scripts"})})


def _lines(source: str, path: str = "app/api/views.py", targets: Targets = TARGETS) -> list[tuple[int, str | None]]:
    return [(r.line, r.name) for r in find_references(path, source.encode(), targets)]


def test_every_spelling_of_a_use() -> None:
    source = (
        "from app.scheduler.registry import discover_scripts as scan\n"  # 1
        "import app.scheduler.registry\n"  # 2
        "from app.scheduler import registry\n"  # 3
        "from ..scheduler import registry as reg\n"  # 4 (relative, from app/api/)
        "\n"
        "def f():\n"
        "    scan()\n"  # 7
        "    app.scheduler.registry.discover_scripts()\n"  # 8
        "    registry.discover_scripts()\n"  # 9
        "    reg.discover_scripts\n"  # 10
        "    registry.get_registered_tasks()\n"  # 11: another name, not a target
    )
    assert _lines(source) == [(1, "discover_scripts"), (7, "discover_scripts"), (8, "discover_scripts"),
                              (9, "discover_scripts"), (10, "discover_scripts")]  # fmt: skip


def test_modules_by_import_and_by_name_in_a_string() -> None:
    source = (
        "import app.celery_tasks\n"  # 1
        "from app import celery_tasks as legacy\n"  # 2
        "from app.celery_tasks import execute_scheduled_task\n"  # 3
        'INCLUDE = ["app.celery_tasks", "app.celery_tasks_legacy"]\n'  # 4: the first string only
        'TASK = "app.celery_tasks.execute_scheduled_task"\n'  # 5: a task name, not the module
        'SPEC = "app.celery_tasks:execute_scheduled_task"\n'  # 6
        "legacy.execute_scheduled_task.delay()\n"  # 7
    )
    assert _lines(source) == [(1, None), (2, None), (3, None), (4, None), (6, None), (7, None)]


def test_a_file_without_the_names_is_not_parsed_and_a_broken_file_has_none() -> None:
    assert _lines("import json\n") == []
    assert _lines("def broken(:\n    discover_scripts\n") == []


def test_module_of_path() -> None:
    assert module_of_path("app/api/x.py") == ("app.api.x", False)
    assert module_of_path("app/__init__.py") == ("app", True)


def test_reference_format() -> None:
    assert Reference("app/x.py", 3, "app.y", "z").format() == "app/x.py:3"
