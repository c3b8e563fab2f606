"""prune: removed statements take what only they used with them, and nothing else changes."""

from __future__ import annotations

import ast

import libcst as cst
from hypothesis import given, settings
from hypothesis import strategies as st

from refactor_tool.analysis import statement_bindings
from refactor_tool.pruning import loaded_names, prune
from tests.refactor_tool.support import lint_pair


def _prune(source: str, *names: str) -> tuple[str, list[str], list[tuple[int, str]]]:
    tree_ast = ast.parse(source)
    remove = {i for i, s in enumerate(tree_ast.body) if statement_bindings(s) & set(names)}
    pruned = prune(cst.parse_module(source), tree_ast, remove)
    return pruned.module.code, [r.name for r in pruned.removed], pruned.broken


def test_imports_and_state_only_the_removed_code_used_go() -> None:
    source = (
        "import json\nimport os\nfrom app.models import Row, Table\n\n_cache = {}\n\n\n"
        "def handler():\n    _cache[1] = Row\n    return json.dumps(os.sep)\n\n\n"
        "def kept():\n    return Table, os.sep\n"
    )
    code, removed, broken = _prune(source, "handler")
    assert code == "import os\nfrom app.models import Table\n\n\ndef kept():\n    return Table, os.sep\n"
    assert removed == ["json", "Row", "_cache", "handler"] and broken == []


def test_a_statement_that_stays_and_reads_what_went_is_returned() -> None:
    _, _, broken = _prune("def a():\n    return 1\n\n\ndef b():\n    return a()\n", "a")
    assert broken == [(5, "a")]


def test_a_literal_all_loses_what_went_and_keeps_its_layout() -> None:
    code, _, _ = _prune('__all__ = [\n    "a",\n    "b",\n]\n\n\ndef a():\n    pass\n\n\ndef b():\n    pass\n', "b")
    assert code.startswith('__all__ = [\n    "a",\n]\n')
    code, _, _ = _prune('__all__ = ("a", "b")\n\n\ndef a():\n    pass\n\n\ndef b():\n    pass\n', "b")
    assert code.startswith('__all__ = ("a",)\n')


def test_blank_lines_stay_what_isort_and_pep8_want() -> None:
    source = (
        "import os\n\nimport requests\n\nfrom app import x\n\n\ndef gone():\n    return requests, x\n\n\n"
        "VALUE = os.sep\n"
    )
    code, _, _ = _prune(source, "gone")
    assert code == "import os\n\nVALUE = os.sep\n"
    before, after = lint_pair(source.encode(), code.encode())
    assert after <= before


def test_nothing_removed_changes_nothing() -> None:
    source = "import os\n\n\ndef f():\n    return os\n"
    assert _prune(source)[0] == source


# -- generated modules ---------------------------------------------------------------------------
NAMES = [f"n{i}" for i in range(8)]


@st.composite
def modules(draw: st.DrawFn) -> tuple[str, set[str]]:
    """A module of imports, assignments, defs and calls reading earlier names; and defs to remove."""
    lines: list[str] = []
    bound: list[str] = []
    defs: list[str] = []
    for name in draw(st.permutations(NAMES)):
        reads = draw(st.lists(st.sampled_from(bound), max_size=3)) if bound else []
        used = " + ".join(f"str({r})" for r in reads) or "'x'"
        kind = draw(st.sampled_from(["import", "from", "assign", "def", "call"]))
        if kind == "import":
            lines.append(f"import os as {name}\n")
        elif kind == "from":
            lines.append(f"from os import sep as {name}\n")
        elif kind == "assign":
            lines.append(f"{name} = {used}\n")
        elif kind == "def":
            lines.append(f"\n\ndef {name}():\n    return {used}\n")
            defs.append(name)
        else:
            lines.append(f"print({used})\n")
            continue
        bound.append(name)
    remove = set(draw(st.lists(st.sampled_from(defs), unique=True))) if defs else set()
    return "".join(lines), remove


@settings(max_examples=300, deadline=None)
@given(modules())
def test_generated_modules(case: tuple[str, set[str]]) -> None:
    source, remove = case
    tree_ast = ast.parse(source)
    indexes = {i for i, s in enumerate(tree_ast.body) if statement_bindings(s) & remove}
    pruned = prune(cst.parse_module(source), tree_ast, indexes)
    code = pruned.module.code
    out = ast.parse(code)
    compile(code, "<pruned>", "exec")
    bound = set().union(*(statement_bindings(s) for s in out.body)) if out.body else set()
    reads = set().union(*(loaded_names(s) for s in out.body)) if out.body else set()
    gone = {r.name for r in pruned.removed}
    broken = {name for _, name in pruned.broken}
    # Nothing left reads a name that went, unless reported, and only the explicitly removed
    # statements can break something (what went with them was read by nothing that stays).
    assert (reads & set(NAMES)) - bound <= broken <= remove
    assert not gone & bound
    assert remove <= gone
    # Only removals: every kept line is a line of the input, in order.
    kept = [line for line in code.splitlines() if line.strip()]
    source_lines = iter(line for line in source.splitlines() if line.strip())
    assert all(any(line == s for s in source_lines) for line in kept)
    # Pruning the output again with nothing to remove changes nothing.
    assert prune(pruned.module, out, set()).module.code == code
