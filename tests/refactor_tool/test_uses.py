"""What a job really runs and uses: refusals name the thing and the job's line, and never spread
from a module that is not a job (whole trees, converted in check mode)."""

from __future__ import annotations

from pathlib import Path

from refactor_tool.report import ConvertReport, FileReport
from refactor_tool.runner import convert
from tests.refactor_tool.support import make_tree

HELPER = (
    "import os\n\n"
    "HERE = os.path.dirname(__file__)\n\n\n"
    "def data_file(name):\n    return os.path.join(HERE, name)\n\n\n"
    "def slug(text):\n    return text.lower()\n"
)

FILES = "from scripts import _files\n\n\n"


def _file(report: ConvertReport, path: str) -> FileReport:
    return next(f for f in report.files if f.path == path)


def _status(report: ConvertReport) -> dict[str, str]:
    return {f.path: f.status for f in report.files if f.path.startswith("scripts/")}


def test_only_the_jobs_that_use_a_name_that_cannot_move_are_refused(tmp_path: Path) -> None:
    report = convert(
        make_tree(
            tmp_path,
            {
                "scripts/_files.py": HELPER,
                "scripts/uses_slug.py": "from scripts._files import slug\n\n\ndef run():\n    return slug('A')\n",
                "scripts/uses_data.py": f"{FILES}def run():\n    return _files.data_file('x')\n",
                "scripts/whole.py": f"{FILES}def run(name='slug'):\n    return getattr(_files, name)\n",
            },
        ),
        mode="check",
    )
    assert _status(report) == {
        "scripts/_files.py": "changed",
        "scripts/uses_slug.py": "changed",
        "scripts/uses_data.py": "refused",
        "scripts/whole.py": "refused",
    }
    assert _file(report, "scripts/uses_data.py").reasons == [
        "scripts/uses_data.py:5: uses scripts._files.data_file, which uses scripts._files.HERE, which changes meaning "
        "once moved: scripts/_files.py:3: uses __file__: the module moves from scripts/ to the tasks package, so "
        "paths built from it would point elsewhere; read the location from a setting instead"
    ]
    assert _file(report, "scripts/whole.py").reasons[0].startswith("scripts/whole.py:5: uses scripts._files.*, which")


def test_a_name_re_exported_by_the_package_init_is_followed(tmp_path: Path) -> None:
    report = convert(
        make_tree(
            tmp_path,
            {
                "scripts/__init__.py": "from ._files import HERE, slug\n",
                "scripts/_files.py": HELPER,
                "scripts/a.py": "from scripts import slug\n\n\ndef run():\n    return slug('A')\n",
                "scripts/b.py": "from . import HERE\n\n\ndef run():\n    return HERE\n",
            },
        ),
        mode="check",
    )
    assert _status(report)["scripts/a.py"] == "changed"
    assert (
        _file(report, "scripts/b.py")
        .reasons[0]
        .startswith(
            "scripts/b.py:1: uses scripts.HERE, which uses scripts._files.HERE, which changes meaning once moved"
        )
    )


def test_what_runs_at_import_refuses_every_job_that_runs_it_but_type_checking_imports_do_not(tmp_path: Path) -> None:
    report = convert(
        make_tree(
            tmp_path,
            {
                "scripts/_noisy.py": "print('loaded')\n\n\nclass Thing:\n    pass\n",
                "scripts/_wrapper.py": "from scripts._noisy import Thing\n\nWrapped = Thing\n",
                "scripts/direct.py": "import scripts._wrapper\n\n\ndef run():\n    return 1\n",
                "scripts/typed.py": (
                    "from __future__ import annotations\n\nfrom typing import TYPE_CHECKING\n\n"
                    "if TYPE_CHECKING:\n    from scripts._noisy import Thing\n\n\n"
                    "def run(thing: Thing | None = None):\n    return 2\n"
                ),
                "scripts/main_only.py": (
                    "def run():\n    return 3\n\n\nif __name__ == '__main__':\n"
                    "    from scripts._noisy import Thing\n    print(Thing, run())\n"
                ),
            },
        ),
        mode="check",
    )
    assert _file(report, "scripts/direct.py").reasons == [
        "scripts/direct.py:1: imports scripts._noisy, which cannot move: scripts/_noisy.py:1: module-level statement "
        "`print('loaded')` runs at import; the worker imports every task module at start-up (legacy imported a job "
        "only to run it): move it into run() or a function"
    ]
    assert _status(report)["scripts/typed.py"] == _status(report)["scripts/main_only.py"] == "changed"
    assert _status(report)["scripts/_noisy.py"] == "skipped"  # never refused itself, and it does not move
    assert any("imported for type checking only" in n for n in _file(report, "scripts/typed.py").notes)


def test_a_job_running_code_that_reads_the_lock_key_gets_it(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/_base.py": "class Job:\n    def run(self, **kwargs):\n        return kwargs.get('_lock_key')\n",
            "scripts/report.py": "from scripts._base import Job\n\nrun = Job().run\n",
            "scripts/plain.py": "def run(**kwargs):\n    return sorted(kwargs)\n",
        },
    )
    report = convert(root)
    assert report.exit_code(check=False) == 0, report.summary_lines()
    assert b"return self.run_job(run, kwargs, legacy_lock_key=True)" in (root / "app/tasks/report.py").read_bytes()
    assert b"return self.run_job(run, kwargs)\n" in (root / "app/tasks/plain.py").read_bytes()
    assert any(
        "runs code that reads _lock_key (scripts/_base.py:3)" in n for n in _file(report, "scripts/report.py").notes
    )
    assert convert(root, mode="check").exit_code(check=True) == 0  # and it stays that way on a re-run


def test_a_refused_job_refuses_the_jobs_that_call_it(tmp_path: Path) -> None:
    report = convert(
        make_tree(
            tmp_path,
            {
                "scripts/gen.py": "def run():\n    yield 1\n",
                "scripts/caller.py": (
                    "from scripts.gen import run as gen_run\n\n\ndef run():\n    return list(gen_run())\n"
                ),
            },
        ),
        mode="check",
    )
    assert (
        _file(report, "scripts/caller.py")
        .reasons[0]
        .startswith("scripts/caller.py:1: imports scripts.gen, which was refused (run() is a generator")
    )


def test_a_package_init_that_cannot_be_carried_over_refuses_every_job(tmp_path: Path) -> None:
    report = convert(
        make_tree(
            tmp_path,
            {
                "scripts/__init__.py": "import logging\n\nlogger = logging.getLogger('scripts')\n",
                "scripts/ping.py": "def run():\n    return 1\n",
                "app/tasks/__init__.py": "logger = None\nREGISTERED_TASKS = {}\n",
            },
        ),
        mode="check",
    )
    assert _file(report, "scripts/__init__.py").reasons == [
        "scripts/__init__.py:3: binds 'logger', which app/tasks/__init__.py:1 binds too; rename one, then re-run"
    ]
    assert _file(report, "scripts/ping.py").reasons == [
        "scripts/ping.py:1: imports scripts, which cannot be carried over into app/tasks/__init__.py: "
        "scripts/__init__.py:3: binds 'logger', which app/tasks/__init__.py:1 binds too; rename one, then re-run"
    ]
