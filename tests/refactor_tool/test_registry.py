"""REGISTERED_TASKS entries from module facts (pure)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dataforge.catalog.params import TaskParams, check_kwargs
from dataforge.errors import ScheduleError
from dataforge.worker.errors import JobArgumentError
from dataforge.worker.kwargs import bind_kwargs
from refactor_tool.analysis import analyze
from refactor_tool.registry import describe, job_entry, render_literal, signature_params, task_entry


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
            {"name": "kwargs", "kind": "var_keyword"},
        ],
    }
    assert notes == []


def test_a_run_that_takes_nothing_says_so_and_an_unknown_one_declares_nothing() -> None:
    assert signature_params(analyze(b"def run():\n    pass\n").run.params) == [{"name": "(none)", "kind": "none"}]  # type: ignore[union-attr]
    assert signature_params(analyze(b"def run(*a, _k=1):\n    pass\n").run.params)[0]["kind"] == "none"  # type: ignore[union-attr]
    assert job_entry(analyze(b"from x import make\nrun = make()\n"), "x", [])["params"] == []


def test_params_constant_gains_the_var_keyword_item_of_run() -> None:
    facts = analyze(b"PARAMS = ['days']\ndef run(days=1, **extra):\n    pass\n")
    assert job_entry(facts, "x", [])["params"] == [
        {"name": "days", "required": False, "default": 1},
        {"name": "extra", "kind": "var_keyword"},
    ]
    assert job_entry(analyze(b"PARAMS = []\ndef run(**kw):\n    pass\n"), "x", [])["params"] == []


_NAMES = ["a", "b", "c", "scheduled_task_id"]
_signature = st.tuples(
    st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(["pos_only", "pos", "kw_only"]), st.booleans()),
             max_size=4, unique_by=lambda p: p[0]),
    st.booleans(),
    st.booleans(),
)  # fmt: skip


def _source(sig: tuple[list[tuple[str, str, bool]], bool, bool]) -> str:
    params, star_args, var_kw = sig
    # Python's own ordering rules: positional-only, positional, *args, keyword-only, **kwargs;
    # a positional parameter with a default makes every later positional one need one too.
    pos_only = [p for p in params if p[1] == "pos_only"]
    pos = [p for p in params if p[1] == "pos"]
    kw_only = [p for p in params if p[1] == "kw_only"]
    parts: list[str] = []
    seen_default = False
    for group in (pos_only, pos):
        for name, _, default in group:
            # Required positional-only parameters are refused by the codemod; give them defaults.
            default = default or seen_default or group is pos_only
            seen_default = seen_default or default
            parts.append(f"{name}=1" if default else name)
        if group is pos_only and group:
            parts.append("/")
    parts.append("*args" if star_args else "*" if kw_only else "")
    parts.extend(f"{name}=1" if default else name for name, _, default in kw_only)
    if var_kw:
        parts.append("**kwargs")
    return f"def run({', '.join(p for p in parts if p)}):\n    pass\n"


@given(_signature, st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(), max_size=4))
def test_registry_params_accept_exactly_what_the_runtime_binds(
    sig: tuple[list[tuple[str, str, bool]], bool, bool], kwargs: dict[str, Any]
) -> None:
    """The codemod's entry, read by the schedule writers' rule, accepts a schedule's kwargs exactly
    when the converted task would give every key to run() and call it without a TypeError."""
    source = _source(sig)
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - a generated signature, nothing else
    entry = job_entry(analyze(source.encode()), "job", [])
    try:
        check_kwargs("dataforge.job", kwargs, TaskParams.from_registry(entry["params"]))
        schedule_accepts = True
    except ScheduleError:
        schedule_accepts = False
    try:
        bound = bind_kwargs(namespace["run"], {**kwargs, "scheduled_task_id": 1})
        runtime_takes_all = set(bound.dropped) <= {"scheduled_task_id"}
    except JobArgumentError:
        runtime_takes_all = False
    assert schedule_accepts == runtime_takes_all, (source, entry["params"], kwargs)


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
