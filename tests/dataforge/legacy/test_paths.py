import pytest

from dataforge.legacy.paths import HandlerMap, handler_path_spellings, parse_handler_path


@pytest.mark.parametrize("spelling", handler_path_spellings("sync_accounts"))
def test_four_spellings_name_the_same_module(spelling: str) -> None:
    assert parse_handler_path(spelling) == "sync_accounts"
    assert parse_handler_path(f"  {spelling} ") == "sync_accounts"


@pytest.mark.parametrize(
    "value",
    [None, "", "os:system", "scripts", "scripts:", "scripts.sub.mod", "scripts:_common", "../scripts/x.py",
     "scripts/x.pyc", "scripts:x:run", "app.scripts:x", "scripts.x:main", "scripts:x;rm"],
)
def test_anything_else_is_refused(value: str | None) -> None:
    assert parse_handler_path(value) is None


def test_map_wins_over_rule() -> None:
    m = HandlerMap(
        scripts_package="scripts", tasks_package="app.tasks",
        handlers={"scripts:renamed": "dataforge.new_name"},
        modules={"other": {"task_name": "dataforge.other2", "module": "app.tasks.other", "function": "other"}},
    )
    assert m.task_name_for("scripts:renamed") == "dataforge.new_name"
    assert m.task_name_for("scripts/other.py") == "dataforge.other2"
    assert m.task_name_for("scripts.plain:run") == "dataforge.plain"
    assert m.task_name_for("os:system") is None
    assert HandlerMap.from_json(m.to_json()) == m
