"""RewriteImportsCommand: fixtures, idempotency, dependency resolution against the module index."""

from __future__ import annotations

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.analysis import analyze
from refactor_tool.commands.rewrite_imports import ModuleIndex, RewriteImportsCommand, resolve_imports
from refactor_tool.errors import ConversionRefused
from refactor_tool.options import ConvertOptions
from tests.refactor_tool.support import fixture_pair, fixture_stems, lint_pair, run_command

INDEX = ModuleIndex(
    modules=frozenset(
        {"scripts", "scripts._common", "scripts.lib", "scripts.lib.dates", "scripts.job", "scripts.other"}
    ),
    packages=frozenset({"scripts", "scripts.lib", "scripts.ns"}),
)


@pytest.mark.parametrize("stem", fixture_stems("rewrite_imports"))
def test_fixture(stem: str) -> None:
    before, after = fixture_pair("rewrite_imports", stem)
    out, _ = run_command(RewriteImportsCommand, before, module="scripts.job")
    assert out == after
    compile(after, f"{stem}.py", "exec", dont_inherit=True)
    again, _ = run_command(RewriteImportsCommand, after, module="scripts.job")
    assert again == after
    lint_before, lint_after = lint_pair(before, after)
    assert lint_after <= lint_before, f"the rewrite added {lint_after - lint_before}"


def test_custom_tasks_package() -> None:
    before, _ = fixture_pair("rewrite_imports", "plain_import_usage")
    out, _ = run_command(
        RewriteImportsCommand, before, module="scripts.job", options=ConvertOptions(tasks_package="backend.jobs")
    )
    assert b"import backend.jobs.lib.dates\n" in out
    assert b"return backend.jobs.lib.dates.parse_day(day)" in out


def test_dependencies_include_package_inits() -> None:
    facts = analyze(b"from scripts.lib.dates import latest\nfrom . import _common\nimport scripts.other as o\n")
    resolved = resolve_imports(facts, "scripts.job", False, INDEX, "scripts")
    deps = resolved.dependencies
    assert resolved.problems == []
    assert [d for d, _ in deps] == ["scripts", "scripts.lib", "scripts.lib.dates", "scripts._common", "scripts.other"]
    assert dict(deps)["scripts.lib.dates"] == 1 and dict(deps)["scripts._common"] == 2


def test_from_package_import_of_a_submodule_depends_on_it() -> None:
    facts = analyze(b"from scripts import _common, other\n")
    resolved = resolve_imports(facts, "scripts.job", False, INDEX, "scripts")
    assert resolved.problems == []
    assert {d for d, _ in resolved.dependencies} == {"scripts", "scripts._common", "scripts.other"}


def test_type_checking_imports_are_type_only_dependencies() -> None:
    facts = analyze(
        b"from typing import TYPE_CHECKING\nimport typing\nfrom scripts import _common\n"
        b"if TYPE_CHECKING:\n    from scripts.other import Thing\n"
        b"if typing.TYPE_CHECKING:\n    import scripts.lib.dates\nelse:\n    from scripts.lib import dates\n"
    )
    resolved = resolve_imports(facts, "scripts.job", False, INDEX, "scripts")
    assert {d for d, _ in resolved.dependencies} == {"scripts", "scripts._common", "scripts.lib", "scripts.lib.dates"}
    assert resolved.type_only == [("scripts.other", 5)]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (b"from scripts._missing import x\n", "imports scripts._missing, which does not exist"),
        (b"import scripts.nothere\n", "imports scripts.nothere, which does not exist"),
        (b"from scripts.ns import thing\n", "imports scripts.ns.thing, which does not exist"),
        (b"from .. import up\n", "reaches above the scripts package"),
    ],
)
def test_unresolvable_imports_are_refused(source: bytes, reason: str) -> None:
    with pytest.raises(ConversionRefused) as info:
        run_command(RewriteImportsCommand, source, module="scripts.job", index=INDEX)
    assert [r.line for r in info.value.refusals] == [1]
    assert reason in info.value.refusals[0].reason


def test_relative_import_from_a_subpackage_resolves_upwards() -> None:
    facts = analyze(b"from .. import _common\nfrom . import dates\n")
    resolved = resolve_imports(facts, "scripts.lib.util", False, INDEX, "scripts")
    assert resolved.problems == [] and {d for d, _ in resolved.dependencies} >= {"scripts._common", "scripts.lib.dates"}


class RewriteImportsInlineTest(CodemodTest):
    TRANSFORM = RewriteImportsCommand

    def test_nothing_to_rewrite(self) -> None:
        source = """
            import os
            from app.config import settings
        """
        self.assertCodemod(source, source, module="scripts.job")

    def test_a_package_whose_name_starts_like_scripts_is_not_the_scripts_package(self) -> None:
        # One statement that imports both: only the scripts alias changes.
        before = """
            import scripts.other as other, scriptsdb as db
        """
        after = """
            import app.tasks.other as other, scriptsdb as db
        """
        self.assertCodemod(before, after, module="scripts.job")

    def test_nested_rewrite_is_reported(self) -> None:
        before = """
            def run():
                from scripts._common import x
                return x
        """
        after = """
            def run():
                from app.tasks._common import x
                return x
        """
        self.assertCodemod(
            before, after, module="scripts.job",
            expected_warnings=["line 2: import inside a function body rewritten to app.tasks"],
        )  # fmt: skip
