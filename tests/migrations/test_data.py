"""What the data revision writes, what it refuses, and what its downgrade puts back."""

from __future__ import annotations

import ast
import json
from typing import Any

import pytest
from alembic.migration import MigrationContext
from sqlalchemy import text

from migrations.errors import MigrationRefusedError
from migrations.legacy_data import UNMAPPED_TASK_NAME
from migrations.options import REPORTS_KEY
from migrations.report import STOPPED, MigrationReport
from migrations.sql import lit
from tests.migrations.support import (
    BLOCKING_ROWS,
    NO_JSON_FORM,
    PYTHON_LITERAL_SHAPES,
    QUIRK_SCHEDULES,
    build_legacy_db,
    downgrade,
    engine_for,
    literal_schedules,
    rows,
    schema_snapshot,
    upgrade,
)


def _by_id(url: str) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in rows(url, ("scheduled_tasks",))["scheduled_tasks"]}


def _reports(cfg: Any) -> list[MigrationReport]:
    return list(cfg.attributes.get(REPORTS_KEY, []))


def _exec(url: str, statement: str) -> None:
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def test_task_names_and_kwargs_after_upgrade(db_url: str) -> None:
    build_legacy_db(db_url)
    cfg = upgrade(db_url)
    s = _by_id(db_url)
    # Four spellings, one task; rows that had a task_name keep it, even when it disagrees.
    for i in (1, 2, 3, 4, 11, 12, 13, 14, 15):
        assert s[i]["task_name"] == "dataforge.sync_accounts", i
    assert s[5]["task_name"] == "dataforge.report"
    assert s[6]["task_name"] == "dataforge.cleanup"
    assert s[7]["task_name"] == "dataforge.new_cleanup"
    assert s[8]["task_name"] == "dataforge.gone"  # script no longer exists: the rule still names it
    assert s[18]["task_name"] == "dataforge.padded"  # whitespace around the spelling
    assert s[19]["task_name"] == "dataforge.blank_task"  # '' task_name counts as none
    assert s[21]["task_name"] == "dataforge.once_job"
    assert s[22]["task_name"] == "dataforge.x"
    # Inactive rows naming no task get the placeholder and a reason; they stay inactive.
    for i in (9, 10, 20):
        assert s[i]["task_name"] == UNMAPPED_TASK_NAME
        assert s[i]["invalid_reason"].startswith("data migration: no task")
        assert s[i]["status"] in ("paused", "disabled")
    # handler_kwargs: JSON kept byte-identical; rewritten ones are JSON objects, originals kept.
    assert (s[1]["handler_kwargs"], s[1]["handler_kwargs_legacy"]) == ('{"days": 7}', None)
    assert (s[18]["handler_kwargs"], s[18]["handler_kwargs_legacy"]) == ('  {"a": 1}  ', None)
    assert (s[2]["handler_kwargs"], s[2]["handler_kwargs_legacy"]) == ("{}", "")
    assert (s[3]["handler_kwargs"], s[3]["handler_kwargs_legacy"]) == ("{}", "null")
    assert (s[21]["handler_kwargs"], s[21]["handler_kwargs_legacy"]) == ("{}", "None")
    repr_text = QUIRK_SCHEDULES[3][9]
    assert s[4]["handler_kwargs_legacy"] == repr_text
    assert json.loads(s[4]["handler_kwargs"]) == ast.literal_eval(repr_text)
    assert json.loads(s[11]["handler_kwargs"]) == {"n": 1}
    assert json.loads(s[12]["handler_kwargs"]) == {"n": 2}
    # What SQL cannot prove, Python converts: 'True' inside a string, a backslash.
    for i in (13, 14):
        assert s[i]["handler_kwargs_legacy"] == QUIRK_SCHEDULES[i - 1][9]
        assert json.loads(s[i]["handler_kwargs"]) == ast.literal_eval(QUIRK_SCHEDULES[i - 1][9])
        assert s[i]["invalid_reason"] is None
    # JSON, but not an object: kept as is, flagged with the reason.
    assert (s[15]["handler_kwargs"], s[15]["handler_kwargs_legacy"]) == ("[1, 2]", None)
    assert s[15]["invalid_reason"] == (
        "data migration: handler_kwargs is not a JSON object (kept as is): JSON an array, not an object; "
        "rewrite it as JSON"
    )
    assert all(r["legacy_values"] is not None for r in s.values())
    # Legacy retries numbered so (celery_task_id, attempt) is unique.
    attempts = {r["id"]: r["attempt"] for r in rows(db_url, ("task_executions",))["task_executions"]}
    assert [attempts[i] for i in (1, 2, 3, 4, 5, 6, 7, 8)] == [0, 1, 2, 0, 1, 0, 0, 0]
    # The report names every row that was changed or flagged, by reason.
    (report,) = [r for r in _reports(cfg) if "data migration" in r.title]
    assert report.ids("task_name_disagrees_with_handler_path") == [7]
    assert report.ids("handler_path_unrecognised") == [22]
    assert report.ids("inactive_unrecognised_handler_path") == [9, 20]
    assert report.ids("inactive_no_task_name_or_handler_path") == [10]
    assert report.ids("kwargs_python_repr") == [4, 12, 13, 14]
    assert report.ids("kwargs_reserved_keys") == [11, 12]
    assert report.ids("kwargs_unconvertible") == [15]
    assert report.ids("kwargs_empty") == [2, 3, 21]
    # The upgrade's report names the active rows it leaves unable to run, as the preflight does.
    assert report.ids("invalid_cron") == [16] and report.ids("unknown_timezone") == [17]
    assert report.ids(STOPPED) == [16, 17]
    assert not report.blocking and report.stops_rows


def _normalised(value: Any) -> Any:
    """What a Python literal's JSON object equals: tuples are lists."""
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalised(v) for v in value]
    return value


@pytest.mark.parametrize("shape", sorted(PYTHON_LITERAL_SHAPES), ids=["tuple", "quote_in_double", "nested", "dquote"])
def test_python_literal_shape_becomes_the_equal_json_object_and_keeps_running(db_url: str, shape: int) -> None:
    build_legacy_db(db_url, [r for r in literal_schedules() if r[0] == shape], [])
    data = rows(db_url)
    cfg = upgrade(db_url)
    row = _by_id(db_url)[shape]
    assert json.loads(row["handler_kwargs"]) == _normalised(ast.literal_eval(PYTHON_LITERAL_SHAPES[shape]))
    assert row["handler_kwargs_legacy"] == PYTHON_LITERAL_SHAPES[shape]
    assert row["invalid_reason"] is None and row["status"] == "active"
    (report,) = [r for r in _reports(cfg) if "data migration" in r.title]
    assert report.ids("kwargs_python_repr") == [shape] and not report.stops_rows
    downgrade(db_url, "0001_legacy_baseline")
    assert rows(db_url) == data


def test_kwargs_without_a_json_form_are_kept_flagged_with_the_exact_reason(db_url: str) -> None:
    build_legacy_db(db_url, literal_schedules(), [])
    data = rows(db_url)
    cfg = upgrade(db_url)
    s = _by_id(db_url)
    for i, (kwargs, reason) in NO_JSON_FORM.items():
        assert (s[i]["handler_kwargs"], s[i]["handler_kwargs_legacy"]) == (kwargs, None), i
        assert s[i]["invalid_reason"] == (
            f"data migration: handler_kwargs is not a JSON object (kept as is): {reason}; rewrite it as JSON"
        ), i
    (report,) = [r for r in _reports(cfg) if "data migration" in r.title]
    assert report.ids("kwargs_unconvertible") == sorted(NO_JSON_FORM)
    for item in report.groups["kwargs_unconvertible"]:
        assert item.detail.endswith(f": {NO_JSON_FORM[int(item.id)][1]}"), item
    # Active rows that will not run after the upgrade: exactly those, each with its reasons.
    assert report.ids(STOPPED) == sorted(NO_JSON_FORM)
    assert all(item.reasons == ("task_name_from_handler_path", "kwargs_unconvertible")
               for item in report.groups[STOPPED])  # fmt: skip
    downgrade(db_url, "0001_legacy_baseline")
    assert rows(db_url) == data


def test_refused_upgrade_changes_nothing(db_url: str) -> None:
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *BLOCKING_ROWS])
    schema, data = schema_snapshot(db_url), rows(db_url)
    with pytest.raises(MigrationRefusedError) as refused:
        upgrade(db_url)
    report = refused.value.report
    assert report is not None and report.blocking
    assert report.ids("blocked_unrecognised_handler_path") == [40]
    assert report.ids("blocked_no_task_name_or_handler_path") == [41]
    assert "id=40 blocked_junk" in str(refused.value)
    # One transaction: not even the expand step's columns or alembic_version are left.
    assert schema_snapshot(db_url) == schema
    assert rows(db_url) == data
    engine = engine_for(db_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is None
    engine.dispose()


def test_pause_policy_pauses_and_the_downgrade_reactivates(db_url: str) -> None:
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *BLOCKING_ROWS])
    data = rows(db_url)
    cfg = upgrade(db_url, x={"on_unmappable": "pause"})
    s = _by_id(db_url)
    for i in (40, 41):
        assert (s[i]["status"], s[i]["task_name"]) == ("paused", UNMAPPED_TASK_NAME)
        assert "paused by on_unmappable=pause" in s[i]["invalid_reason"]
    (report,) = [r for r in _reports(cfg) if "data migration" in r.title]
    assert report.ids("paused_unrecognised_handler_path") == [40]
    assert report.ids("paused_no_task_name_or_handler_path") == [41]
    downgrade(db_url, "0001_legacy_baseline")
    assert rows(db_url) == data


def test_downgrade_keeps_later_edits_and_gives_new_rows_a_handler_path(db_url: str) -> None:
    build_legacy_db(db_url)
    upgrade(db_url)
    _exec(db_url, "UPDATE scheduled_tasks SET task_name = 'dataforge.renamed' WHERE id = 1")
    _exec(db_url, "UPDATE scheduled_tasks SET handler_kwargs = '{\"days\": 1}' WHERE id = 2")
    _exec(
        db_url,
        "INSERT INTO scheduled_tasks (id, name, task_type, task_name, interval_seconds, handler_kwargs, status) "
        "VALUES (100, 'new_style', 'interval', 'dataforge.fresh', 60, '{}', 'active'), "
        "(101, 'foreign', 'interval', 'other.lib.task', 60, '{}', 'active')",
    )
    cfg = downgrade(db_url, "0002_expand")
    s = _by_id(db_url)
    assert s[1]["task_name"] == "dataforge.renamed"  # the edit wins over the legacy NULL
    assert s[3]["task_name"] is None  # untouched rows go back...
    # ...but handler_kwargs stay JSON at 0002 (beat reads them there), originals kept aside.
    assert (s[3]["handler_kwargs"], s[3]["handler_kwargs_legacy"]) == ("{}", "null")
    assert (s[100]["handler_path"], s[100]["task_name"]) == ("scripts:fresh", "dataforge.fresh")
    assert s[101]["handler_path"] is None
    (report,) = [r for r in _reports(cfg) if "0003_data downgrade" in r.title]
    assert report.ids("restore_skipped_edited") == [1]
    assert report.ids("handler_path_written") == [100]
    assert report.ids("no_legacy_handler_path") == [101]
    # Up again: the written handler_path agrees with task_name, nothing is flagged for it; the
    # kwargs originals survive the cycle.
    cfg = upgrade(db_url)
    (report,) = [r for r in _reports(cfg) if "data migration" in r.title]
    assert 100 not in report.ids("task_name_disagrees_with_handler_path")
    assert _by_id(db_url)[3]["handler_kwargs_legacy"] == "null"
    # Down to the legacy schema: the original texts come back, except where edited since.
    cfg = downgrade(db_url, "0001_legacy_baseline")
    s = _by_id(db_url)
    assert s[3]["handler_kwargs"] == "null" and s[4]["handler_kwargs"] == QUIRK_SCHEDULES[3][9]
    assert s[2]["handler_kwargs"] == '{"days": 1}'
    (report,) = [r for r in _reports(cfg) if "0002_expand downgrade" in r.title]
    assert report.ids("restore_skipped_edited") == [2]


def test_map_file_wins_over_the_rule(db_url: str, tmp_path: Any) -> None:
    build_legacy_db(db_url)
    map_file = tmp_path / "dataforge-handler-map.json"
    map_file.write_text(
        json.dumps(
            {
                "version": 1,
                "scripts_package": "scripts",
                "tasks_package": "app.tasks",
                "handlers": {"os:system": "dataforge.safe_replacement"},
                "modules": {
                    "sync_accounts": {
                        "task_name": "dataforge.accounts.sync",
                        "module": "app.tasks.sync_accounts",
                        "function": "sync_accounts",
                    }
                },
            }
        )
    )
    upgrade(db_url, x={"map": str(map_file)})
    s = _by_id(db_url)
    assert {s[i]["task_name"] for i in (1, 2, 3, 4)} == {"dataforge.accounts.sync"}
    assert s[9]["task_name"] == "dataforge.safe_replacement"
    downgrade(db_url, "0002_expand", x={"map": str(map_file)})
    assert _by_id(db_url)[1]["task_name"] is None


def test_contract_refuses_rows_without_task_name(db_url: str) -> None:
    build_legacy_db(db_url)
    upgrade(db_url, "0003_data")
    _exec(
        db_url,
        "INSERT INTO scheduled_tasks (id, name, task_type, handler_path, interval_seconds, handler_kwargs, status) "
        "VALUES (200, 'late_legacy_writer', 'interval', 'scripts:late', 60, '{}', 'active')",
    )
    with pytest.raises(MigrationRefusedError, match="1 rows have no task_name") as refused:
        upgrade(db_url)
    assert refused.value.report is not None and refused.value.report.ids("blocked_no_task_name_or_handler_path") == [
        200
    ]
    engine = engine_for(db_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0003_data"
    engine.dispose()
    downgrade(db_url, "0002_expand")
    upgrade(db_url)  # the data step picks the late row up
    assert _by_id(db_url)[200]["task_name"] == "dataforge.late"


def test_a_database_migrated_before_the_python_step_is_repaired_by_down_and_up(db_url: str) -> None:
    """Until the Python step existed, 0003 kept such rows as they were and flagged them. Going
    down to 0002 and up again converts them: 0003's downgrade clears its own flags, and the
    kwargs still hold their original text."""
    build_legacy_db(db_url, literal_schedules(), [])
    data = rows(db_url)
    upgrade(db_url)
    old_flag = "data migration: handler_kwargs is not a JSON object (kept as is): rewrite it as JSON"
    no_kwargs_record = (
        "json_remove(legacy_values, '$.handler_kwargs')" if "sqlite" in db_url
        else "(CAST(legacy_values AS jsonb) - 'handler_kwargs')::text"
    )  # fmt: skip
    for i, text_ in PYTHON_LITERAL_SHAPES.items():  # what the former 0003 left behind
        _exec(
            db_url,
            f"UPDATE scheduled_tasks SET handler_kwargs = {lit(text_)}, handler_kwargs_legacy = NULL, "
            f"invalid_reason = {lit(old_flag)}, legacy_values = {no_kwargs_record} WHERE id = {i}",
        )
    downgrade(db_url, "0002_expand")
    upgrade(db_url)
    s = _by_id(db_url)
    for i, text_ in PYTHON_LITERAL_SHAPES.items():
        assert json.loads(s[i]["handler_kwargs"]) == _normalised(ast.literal_eval(text_))
        assert (s[i]["handler_kwargs_legacy"], s[i]["invalid_reason"]) == (text_, None)
    downgrade(db_url, "0001_legacy_baseline")
    assert rows(db_url) == data
