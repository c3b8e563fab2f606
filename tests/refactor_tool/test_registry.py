"""REGISTERED_TASKS entries from module facts (pure)."""

from __future__ import annotations

from refactor_tool.analysis import analyze
from refactor_tool.registry import describe, job_entry, render_literal, task_entry


def test_signature_fallback() -> None:
    facts = analyze(
        b'"""Sync accounts.\n\nLonger text."""\n'
        b"from x import DEFAULT\n"
        b"def run(days: int = 7, when=DEFAULT, *, flag, scheduled_task_id=None, _private=1, **kwargs):\n    pass\n"
    )
    notes: list[str] = []
    entry = job_entry(facts, "sync_accounts", notes)
    assert entry == {
        "name": "sync_accounts",
        "description": "Sync accounts.",
        "category": "legacy",
        "params": [
            {"name": "days", "required": False, "default": 7, "annotation": "int"},
            {"name": "when", "required": False, "default_expr": "DEFAULT"},
            {"name": "flag", "required": True},
        ],
    }
    assert notes == []


def test_constants_win_and_fallbacks_are_noted() -> None:
    facts = analyze(
        b"NAME = '\xe8\xb4\xa6\xe5\x8f\xb7\xe5\x90\x8c\xe6\xad\xa5'\nDESCRIPTION = describe()\nCATEGORY = 'sync'\n"
        b"PARAMS = ['days', {'name': 'mode', 'type': 'str'}]\nSCHEDULE = '0 * * * *'\n"
        b"def run(days: int = 7, mode='a'):\n    '''Run doc.'''\n"
    )
    notes: list[str] = []
    entry = job_entry(facts, "sync", notes)
    assert entry["name"] == "账号同步" and entry["category"] == "sync"
    assert entry["description"] == "Run doc."
    assert entry["params"] == [
        {"name": "days", "required": False, "default": 7, "annotation": "int"},
        {"name": "mode", "type": "str"},
    ]
    assert any("DESCRIPTION (line 2) is not a literal" in n for n in notes)
    assert any("SCHEDULE (line 5) is not carried over" in n for n in notes)


def test_unknown_signature_uses_params_names() -> None:
    facts = analyze(b"from lib import make\nPARAMS = ['days']\nrun = make()\n")
    assert job_entry(facts, "x", [])["params"] == [{"name": "days"}]


def test_task_entry_of_a_converted_module_matches_the_job_entry() -> None:
    source = (
        b'"""Ping."""\nfrom dataforge.celery_app import celery_app\nfrom dataforge.tasks.base import DataForgeTask\n'
        b"def run(n: int = 1):\n    return n\n"
        b"@celery_app.task(base=DataForgeTask, bind=True, name='dataforge.ping')\n"
        b"def ping(self, **kwargs):\n    return self.run_job(run, kwargs)\n"
    )
    facts = analyze(source)
    assert task_entry(facts.tasks[0], facts, "ping") == job_entry(facts, "ping", [])


def test_task_entry_of_a_hand_written_task() -> None:
    facts = analyze(
        b"@app.task(bind=True, name='dataforge.vacuum')\ndef vacuum(self, table: str = 'events'):\n"
        b"    '''Vacuum a table.'''\n"
    )
    assert task_entry(facts.tasks[0], facts, "vacuum") == {
        "name": "vacuum",
        "description": "Vacuum a table.",
        "category": "legacy",
        "params": [{"name": "table", "required": False, "default": "events", "annotation": "str"}],
    }


def test_describe_and_render() -> None:
    assert describe("  First line\n  continues.\n\n  Second paragraph.") == "First line continues."
    assert describe(None) == ""
    assert render_literal({"a": [1, (2,)], "b": None, "c": 'é"q'}) == '{"a": [1, (2,)], "b": None, "c": "é\\"q"}'
    long = render_literal({"k": "x" * 120}, indent="\t")
    assert long == '{\n\t"k": "' + "x" * 120 + '",\n}'
