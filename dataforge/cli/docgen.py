"""Generate the command reference of docs/cli.md from the real ``--help`` output.

Verbs are written by several people and change; a hand-copied reference goes stale the day
someone adds an option. This module walks the click tree (every verb that exists when it
runs, including groups and their sub-commands) and renders each command's help text, so the
reference is regenerated, never edited by hand::

    python -m dataforge.cli.docgen            # rewrite the generated part of docs/cli.md
    python -m dataforge.cli.docgen --check    # exit 1 if docs/cli.md is out of date

Only the part between :data:`BEGIN` and :data:`END` is rewritten; prose around it is kept.
tests/dataforge/cli/test_cli_doc.py checks the doc against the same walk.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

__all__ = [
    "BEGIN",
    "DOC_PATH",
    "END",
    "HELP_WIDTH",
    "CommandHelp",
    "generated_block",
    "iter_commands",
    "main",
    "render",
    "update_doc",
]

BEGIN = "<!-- BEGIN GENERATED: python -m dataforge.cli.docgen -->"
END = "<!-- END GENERATED -->"
#: Fixed width so the output does not depend on the terminal the generator runs in: 78 is what
#: click prints on any terminal at least 80 columns wide (its default maximum, minus 2).
HELP_WIDTH = 78
DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


@dataclass(frozen=True)
class CommandHelp:
    """One command of the tree: its full path (``dataforge schedules add``) and its facts."""

    path: str
    usage: str
    help_text: str
    #: Every option spelling (``--interval``, ``-h``...) and argument metavar of the command.
    options: tuple[str, ...]
    is_group: bool


def _help_for(cmd: click.Command, ctx: click.Context) -> CommandHelp:
    formatter = ctx.make_formatter()
    cmd.format_usage(ctx, formatter)
    usage = formatter.getvalue().strip()
    options: list[str] = []
    for param in cmd.get_params(ctx):
        if isinstance(param, click.Option):
            options.extend(param.opts)
            options.extend(param.secondary_opts)
    return CommandHelp(
        path=ctx.command_path,
        usage=usage,
        help_text=cmd.get_help(ctx).rstrip(),
        options=tuple(options),
        is_group=isinstance(cmd, click.Group),
    )


def _settings(cmd: click.Command) -> dict[str, Any]:
    """The command's own context settings (``-h`` as help...), at the fixed width."""
    return {**cmd.context_settings, "terminal_width": HELP_WIDTH}


def iter_commands(root: click.Command | None = None, prog_name: str = "dataforge") -> Iterator[CommandHelp]:
    """Depth-first over the command tree, root first, sub-commands in their listed order."""
    if root is None:
        from dataforge.cli.main import cli

        root = cli

    def walk(cmd: click.Command, ctx: click.Context) -> Iterator[CommandHelp]:
        yield _help_for(cmd, ctx)
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is None or sub.hidden:
                    continue
                sub_ctx = click.Context(sub, info_name=name, parent=ctx, **_settings(sub))
                yield from walk(sub, sub_ctx)

    ctx = click.Context(root, info_name=prog_name, **_settings(root))
    yield from walk(root, ctx)


def render(commands: list[CommandHelp]) -> str:
    """Markdown: one section per command with its ``--help`` in a text block."""
    parts = [BEGIN, ""]
    for item in commands:
        depth = item.path.count(" ")
        heading = "#" * min(2 + depth, 4)
        parts += [f"{heading} `{item.path}`", "", "```text", item.help_text, "```", ""]
    parts.append(END)
    return "\n".join(parts)


def generated_block() -> str:
    return render(list(iter_commands()))


def update_doc(text: str, block: str) -> str:
    """``text`` with its generated part replaced by ``block`` (appended if it has none)."""
    start = text.find(BEGIN)
    end = text.find(END)
    if start == -1 or end == -1 or end < start:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[:start] + block + text[end + len(END):]


@click.command("docgen")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the doc is out of date.")
@click.option("--path", "doc_path", type=click.Path(dir_okay=False, path_type=Path), default=DOC_PATH,
              show_default=True, help="The Markdown file holding the reference.")
def main(check: bool, doc_path: Path) -> None:
    """Regenerate the command reference in docs/cli.md from every verb's --help."""
    old = doc_path.read_text(encoding="utf-8") if doc_path.exists() else "# The `dataforge` command\n"
    new = update_doc(old, generated_block())
    if check:
        if new != old:
            click.echo(f"{doc_path} is out of date: run python -m dataforge.cli.docgen", err=True)
            sys.exit(1)
        click.echo(f"{doc_path} is up to date")
        return
    if new != old:
        doc_path.write_text(new, encoding="utf-8")
        click.echo(f"wrote {doc_path}")
    else:
        click.echo(f"{doc_path} unchanged")


if __name__ == "__main__":
    main()
