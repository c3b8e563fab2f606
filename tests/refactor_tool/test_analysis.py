"""analysis + transform: facts read with ast, and every refused shape with its line and reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from refactor_tool.analysis import NOT_LITERAL, Param, analyze
from refactor_tool.commands.rewrite_imports import ModuleIndex
from refactor_tool.options import ConvertOptions
from refactor_tool.transform import SCRIPT, TransformContext, Unit, transform_unit
from tests.refactor_tool.support import FIXTURES

REFUSED = sorted(p.name for p in (FIXTURES / "refused").glob("*.py"))


def _expectations(source: str) -> list[tuple[int, str]]:
    return [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^# expect: (\d+): (.+)$", source, re.M)]


@pytest.mark.parametrize("name", REFUSED)
def test_refused_shapes(name: str, tmp_path: Path) -> None:
    """Each file under fixtures/refused is refused with (at least) the reasons its header names."""
    source = (FIXTURES / "refused" / name).read_text()
    expected = _expectations(source)
    assert expected, f"{name} declares no expectation"
    stem = name[:-3]
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / name).write_text(source)
    unit = Unit(f"scripts/{name}", SCRIPT, f"scripts.{stem}", False, f"app/tasks/{name}", "job")
    ctx = TransformContext(str(tmp_path), ConvertOptions(), ModuleIndex())
    outcome = transform_unit(unit, ctx)
    assert outcome.failure is None
    got = [(r.line, r.reason) for r in outcome.refusals]
    for line, text in expected:
        assert any(gl == line and text in reason for gl, reason in got), f"{name}: want {line}: {text!r}, got {got}"
    assert not outcome.movable


def test_run_forms_and_params() -> None:
    facts = analyze(
        b'"""Doc."""\n'
        b"async def run(a, b: int = 2, *args, c: str = 'x', d, **kw) -> dict:\n"
        b'    """Run doc."""\n'
        b"    return {}\n"
    )
    assert facts.run is not None and facts.run.form == "def" and facts.run.is_async
    assert facts.run.docstring == "Run doc."
    assert facts.run.params == (
        Param("a", "positional", None, None),
        Param("b", "positional", "2", "int"),
        Param("args", "var_positional", None, None),
        Param("c", "keyword_only", "'x'", "str"),
        Param("d", "keyword_only", None, None),
        Param("kw", "var_keyword", None, None),
    )
    assert [p.required for p in facts.run.params] == [True, False, False, False, True, False]


def test_lambda_run_has_a_signature() -> None:
    facts = analyze(b"run = lambda days=1, **kw: days\n")
    assert facts.run is not None and facts.run.form == "lambda"
    assert facts.run.params is not None and facts.run.params[0] == Param("days", "positional", "1", None)


def test_metadata_constants() -> None:
    facts = analyze(b"NAME = 'n'\nCATEGORY = compute()\nPARAMS = ['a', {'name': 'b'}]\nINTERVAL = 60\n")
    assert facts.metadata["NAME"] == (1, "n")
    assert facts.metadata["CATEGORY"] == (2, NOT_LITERAL)
    assert facts.metadata["PARAMS"] == (3, ["a", {"name": "b"}])
    assert facts.metadata["INTERVAL"] == (4, 60)


def test_allowed_module_level_code() -> None:
    source = (
        b'"""Doc."""\n'
        b"import os\n"
        b"try:\n    import ujson as json\nexcept ImportError:\n    import json\n"
        b"if os.name == 'nt':\n    SEP = '\\\\'\nelse:\n    SEP = '/'\n"
        b"LOGGER = __import__('logging').getLogger('x')\n"
        b"'''a string used as a comment'''\n"
        b"def run():\n    return SEP\n"
        b"if __name__ == '__main__':\n    print(run())\n    for i in range(3):\n        pass\n"
    )
    facts = analyze(source)
    assert facts.problems == [] and facts.run_problems == []
    assert facts.has_main_guard and facts.main_guard_index == 7


def test_identifiers_cover_every_scope() -> None:
    facts = analyze(b"def run(p):\n    def inner():\n        local = 1\n    return [x for x in p]\nclass K: pass\n")
    assert {"run", "p", "inner", "local", "x", "K"} <= facts.identifiers


def test_not_a_job_but_a_class_with_run() -> None:
    facts = analyze(b"class Job:\n    def run(self):\n        pass\n")
    assert facts.run is None and facts.run_in_class == ("Job", 2)


def test_syntax_errors_only_the_compiler_finds_are_errors() -> None:
    with pytest.raises(SyntaxError):
        analyze(b"def run():\n    pass\nreturn 1\n")
