"""docs/cli.md against the real ``--help`` of every verb that exists when the test runs.

The reference part of the doc is generated (``python -m dataforge.cli.docgen``). This test
walks the live click tree and fails, naming the command and what is missing, when a verb,
its usage line or one of its options is not in the doc, or when the doc documents a command
that no longer exists.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dataforge.cli.docgen import BEGIN, DOC_PATH, END, CommandHelp, iter_commands, main, render, update_doc

REGENERATE = "regenerate it with `python -m dataforge.cli.docgen`"
_HEADING = re.compile(r"^#{2,4} `(dataforge[^`]*)`$", re.MULTILINE)


def _sections(doc: str) -> dict[str, str]:
    """Command path -> the text of its section in the generated part of ``doc``."""
    start, end = doc.find(BEGIN), doc.find(END)
    assert start != -1 and end > start, f"{DOC_PATH} has no generated reference; {REGENERATE}"
    block = doc[start:end]
    heads = list(_HEADING.finditer(block))
    return {
        m.group(1): block[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(block)]
        for i, m in enumerate(heads)
    }


@pytest.fixture(scope="module")
def commands() -> list[CommandHelp]:
    return list(iter_commands())


def test_the_walk_covers_every_verb_and_subcommand(commands: list[CommandHelp]) -> None:
    from dataforge.cli.main import COMMANDS

    paths = {c.path for c in commands}
    assert {f"dataforge {verb}" for verb in COMMANDS} <= paths
    for verb in ("list", "show", "add", "edit", "pause", "resume", "run-now", "history"):
        assert f"dataforge schedules {verb}" in paths
    add = next(c for c in commands if c.path == "dataforge schedules add")
    assert add.usage == "Usage: dataforge schedules add [OPTIONS] NAME"
    assert {"--task", "--interval", "--cron", "--at", "--timezone", "--kwargs", "--json"} <= set(add.options)


def test_docs_cli_md_matches_every_help(commands: list[CommandHelp]) -> None:
    sections = _sections(DOC_PATH.read_text(encoding="utf-8"))
    problems: list[str] = []
    for cmd in commands:
        section = sections.get(cmd.path)
        if section is None:
            problems.append(f"{cmd.path}: not documented")
            continue
        if cmd.usage not in section:
            problems.append(f"{cmd.path}: usage line {cmd.usage!r} not in its section")
        for option in cmd.options:
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", section):
                problems.append(f"{cmd.path}: option {option} not in its section")
        if cmd.help_text not in section:
            problems.append(f"{cmd.path}: help text differs from --help")
    live = {c.path for c in commands}
    problems += [f"{path}: documented but no such command" for path in sections if path not in live]
    assert not problems, f"{DOC_PATH} is out of date ({REGENERATE}):\n" + "\n".join(problems)


def test_help_text_is_what_the_real_command_prints(commands: list[CommandHelp]) -> None:
    """The generator renders what a user sees (same width), not a reconstruction."""
    cmd = next(c for c in commands if c.path == "dataforge schedules history")
    out = subprocess.run(
        [sys.executable, "-m", "dataforge", "schedules", "history", "--help"],
        capture_output=True, text=True, check=True, env={"COLUMNS": "120", "PATH": ""},
    ).stdout
    assert out.rstrip() == cmd.help_text


def test_docgen_rewrites_only_the_generated_part(tmp_path: Path) -> None:
    @click.group()
    def root() -> None:
        """Root."""

    @root.command()
    @click.option("--flag", is_flag=True, help="A flag.")
    def leaf(flag: bool) -> None:
        """Leaf."""

    block = render(list(iter_commands(root, prog_name="tool")))
    assert "## `tool`" in block and "### `tool leaf`" in block and "--flag" in block
    doc = tmp_path / "cli.md"
    doc.write_text("# Intro\n\nprose kept\n", encoding="utf-8")
    first = update_doc(doc.read_text(encoding="utf-8"), block)
    assert first.startswith("# Intro\n\nprose kept\n") and first.rstrip().endswith(END)
    second = update_doc(first + "\ntrailing prose\n", block.replace("A flag.", "Changed."))
    assert "Changed." in second and "A flag." not in second and second.endswith("trailing prose\n")
    assert update_doc(second, block.replace("A flag.", "Changed.")) == second  # idempotent


def test_docgen_check_mode(tmp_path: Path) -> None:
    doc = tmp_path / "cli.md"
    doc.write_text("# The command\n", encoding="utf-8")
    runner = CliRunner()
    stale = runner.invoke(main, ["--check", "--path", str(doc)])
    assert stale.exit_code == 1 and "out of date" in stale.output
    assert doc.read_text(encoding="utf-8") == "# The command\n"
    assert runner.invoke(main, ["--path", str(doc)]).exit_code == 0
    assert "dataforge schedules add" in doc.read_text(encoding="utf-8")
    fresh = runner.invoke(main, ["--check", "--path", str(doc)])
    assert fresh.exit_code == 0, fresh.output
