"""ConvertJobCommand: before/after fixtures (byte-exact), idempotency, and inline CodemodTest cases."""

from __future__ import annotations

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.commands.convert_job import ConvertJobCommand
from refactor_tool.errors import ConversionRefused
from refactor_tool.options import ConvertOptions, ImportTarget
from tests.refactor_tool.support import fixture_pair, fixture_stems, lint_pair, run_command, run_sources

#: Fixture stem -> job (module) name, where the fixture is about the name itself.
JOBS = {"builtin_name": "filter", "name_collision": "export_invoices"}


@pytest.mark.parametrize("stem", fixture_stems("convert_job"))
def test_fixture(stem: str) -> None:
    before, after = fixture_pair("convert_job", stem)
    job = JOBS.get(stem, stem)
    out, _ = run_command(ConvertJobCommand, before, job=job)
    assert out == after
    # run() is byte-identical, and the output is valid Python in the file's own encoding.
    assert run_sources(before) == run_sources(after)
    compile(after, f"{stem}.py", "exec", dont_inherit=True)
    # Idempotent: converting the output again changes nothing.
    again, _ = run_command(ConvertJobCommand, after, job=job)
    assert again == after
    # ruff-clean (I001, E30x, E402) wherever the input was.
    lint_before, lint_after = lint_pair(before, after)
    assert lint_after <= lint_before, f"the conversion added {lint_after - lint_before}"


def test_odd_encodings_and_newlines_survive() -> None:
    _, latin = fixture_pair("convert_job", "latin1")
    assert latin.startswith(b"# -*- coding: latin-1 -*-\n")
    assert "Récupère".encode("latin-1") in latin and "Récupère".encode() not in latin
    _, crlf = fixture_pair("convert_job", "crlf_tabs")
    assert b"\n" not in crlf.replace(b"\r\n", b"") and b"\n\treturn self.run_job(run, kwargs)\r\n" in crlf
    _, bom = fixture_pair("convert_job", "bom")
    assert bom.startswith(b"\xef\xbb\xbf") and bom.count(b"\xef\xbb\xbf") == 1
    _, tail = fixture_pair("convert_job", "no_trailing_newline")
    assert tail.endswith(b"return self.run_job(run, kwargs)")


def test_collisions_are_reported() -> None:
    before, _ = fixture_pair("convert_job", "name_collision")
    _, warnings = run_command(ConvertJobCommand, before, job="export_invoices")
    assert warnings == [
        "task function named export_invoices_task_2() because 'export_invoices' is already taken in this module"
    ]
    before, _ = fixture_pair("convert_job", "celery_app_taken")
    _, warnings = run_command(ConvertJobCommand, before, job="celery_app_taken")
    assert any("imported celery_app as dataforge_celery_app" in w for w in warnings)


class ConvertJobInlineTest(CodemodTest):
    TRANSFORM = ConvertJobCommand

    def test_configurable_import_targets(self) -> None:
        before = """
            def run():
                return 1
        """
        after = """
            from myproj.base import JobTask
            from myproj.worker import app


            def run():
                return 1


            @app.task(base=JobTask, bind=True, name="dataforge.custom")
            def custom(self, **kwargs):
                \"\"\"Run scripts/custom.py's run() as a DataForge task.\"\"\"
                return self.run_job(run, kwargs)
        """
        options = ConvertOptions(
            celery_app_import=ImportTarget.parse("myproj.worker:app"),
            base_import=ImportTarget.parse("myproj.base.JobTask"),
        )
        self.assertCodemod(before, after, job="custom", options=options)

    def test_existing_import_of_the_target_is_reused(self) -> None:
        before = """
            from dataforge.celery_app import celery_app

            def run():
                return celery_app.main
        """
        after = """
            from dataforge.celery_app import celery_app
            from dataforge.tasks.base import DataForgeTask

            def run():
                return celery_app.main


            @celery_app.task(base=DataForgeTask, bind=True, name="dataforge.reuse")
            def reuse(self, **kwargs):
                \"\"\"Run scripts/reuse.py's run() as a DataForge task.\"\"\"
                return self.run_job(run, kwargs)
        """
        self.assertCodemod(before, after, job="reuse")

    def test_module_without_run_is_not_a_job(self) -> None:
        source = """
            def main():
                return 1
        """
        self.assertCodemod(source, source, job="tool", expected_skip=True)

    def test_keyword_module_name_gets_another_function_name(self) -> None:
        before = """
            def run():
                return 1
        """
        after = """
            from dataforge.celery_app import celery_app
            from dataforge.tasks.base import DataForgeTask


            def run():
                return 1


            @celery_app.task(base=DataForgeTask, bind=True, name="dataforge.class")
            def class_task(self, **kwargs):
                \"\"\"Run scripts/class.py's run() as a DataForge task.\"\"\"
                return self.run_job(run, kwargs)
        """
        self.assertCodemod(
            before,
            after,
            job="class",
            expected_warnings=["task function named class_task() because 'class' is a keyword"],
        )

    def test_run_only_inside_a_class_is_not_a_job(self) -> None:
        source = """
            class BaseJob:
                async def run(self, **kwargs):
                    return kwargs
        """
        self.assertCodemod(source, source, job="_base", expected_skip=True)

    def test_non_identifier_module_name_is_refused(self) -> None:
        with pytest.raises(ConversionRefused, match="not a Python identifier"):
            self.assertCodemod("def run():\n    return 1\n", "", job="sync-accounts")
