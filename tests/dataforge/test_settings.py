from pathlib import Path

import pytest

from dataforge.errors import ConfigurationError
from dataforge.settings import Settings


def test_embedded_defaults_need_no_server(tmp_path: Path) -> None:
    s = Settings.from_env({}, cwd=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'dataforge.db'}"
    assert s.broker_url.startswith("sqla+sqlite:///")
    assert s.redis_url is None
    assert s.task_packages == ("dataforge.tasks",)
    assert s.legacy_tasks is False


def test_round_trip_through_child_environment(tmp_path: Path) -> None:
    s = Settings.from_env(
        {"DATAFORGE_REDIS_URL": "redis://x/1", "DATAFORGE_TASK_PACKAGES": "app.tasks, more.tasks",
         "DATAFORGE_LEGACY_TASKS": "yes", "DATAFORGE_LOCK_TTL": "2.5", "DATAFORGE_CATCHUP_WINDOW": "3600"},
        cwd=tmp_path,
    )
    assert s.task_packages == ("app.tasks", "more.tasks")
    assert s.catchup_window == 3600
    assert Settings.from_env(s.as_env(), cwd=tmp_path) == s
    unbounded = Settings.from_env({}, cwd=tmp_path)
    assert unbounded.catchup_window is None and unbounded.beat_leader_ttl == 10.0
    assert Settings.from_env(unbounded.as_env(), cwd=tmp_path) == unbounded


@pytest.mark.parametrize(
    ("name", "value"),
    [("DATAFORGE_LEGACY_TASKS", "maybe"), ("DATAFORGE_LOCK_TTL", "soon"), ("DATAFORGE_LOCK_TTL", "0"),
     ("DATAFORGE_MISSED_RUNS", "twice"), ("DATAFORGE_TASK_PACKAGES", " , "),
     ("DATAFORGE_CATCHUP_WINDOW", "9"), ("DATAFORGE_CATCHUP_WINDOW", "1h")],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({name: value}, cwd=tmp_path)
    assert info.value.name == name
    assert name in str(info.value)
