"""The legacy settings: what each is, what the runtime reads instead (reported, never deleted)."""

from __future__ import annotations

import ast

from refactor_tool.legacy_settings import ConfigSetting, celery_setting_note, config_settings, runtime_counterpart


def test_config_settings_and_the_environment_they_read() -> None:
    source = (
        "import os\nfrom os import environ\n\n"
        'DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite://")\n'
        'BROKER_URL = os.getenv("CELERY_BROKER_URL")\n'
        'TTL: int = int(environ["TASK_LOCK_TTL"])\n'
        "DEBUG = True\n"
        "lower_case = 1\n"
        "A, B = 1, 2\n"
    )
    assert config_settings(ast.parse(source)) == [
        ConfigSetting("DATABASE_URL", 4, "DATABASE_URL"),
        ConfigSetting("BROKER_URL", 5, "CELERY_BROKER_URL"),
        ConfigSetting("TTL", 6, "TASK_LOCK_TTL"),
        ConfigSetting("DEBUG", 7, None),
    ]


def test_counterparts_by_name_or_by_environment_variable() -> None:
    assert runtime_counterpart("BROKER_URL") == "DATAFORGE_BROKER_URL"
    assert runtime_counterpart("TTL", "TASK_LOCK_TTL") == "DATAFORGE_LOCK_TTL"
    assert runtime_counterpart("DEBUG") is None


def test_celery_setting_notes() -> None:
    assert celery_setting_note("broker", 3) == "line 3: broker is not applied: the runtime reads DATAFORGE_BROKER_URL"
    assert "DATAFORGE_TASK_PACKAGES" in celery_setting_note("include", 4)
    assert celery_setting_note("task_routes", 5).endswith("configured only by its DATAFORGE_* settings")
