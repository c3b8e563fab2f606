"""The exit status of every ``dataforge`` verb: one table, so a CI gate or a script can tell
"the answer is no" from "you asked wrongly" from "the database is down".

The root group applies it to every error (:mod:`dataforge.cli.failures`); docs/cli.md and
``dataforge --help`` print :data:`MEANINGS`, and a test runs every verb against it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = ["MEANINGS", "Exit", "exit_table"]


class Exit(IntEnum):
    #: Done, or already in the requested state.
    OK = 0
    #: The command ran and its answer is "no".
    NO = 1
    #: Bad input or a refused request.
    REFUSED = 2
    #: The environment: a service unreachable, the schema missing or outdated.
    ENVIRONMENT = 3


#: What each status means, as docs/cli.md and ``dataforge --help`` state it.
MEANINGS: Final = {
    Exit.OK: "done, or already in the requested state (pause, resume, legacy enable/disable say so)",
    Exit.NO: "the command's answer is no: `convert --check` would change files, `tasks --check` finds the "
    "registries disagree, `db check` finds rows the upgrade would refuse (and `db upgrade` refuses them), "
    "`verify` finds differences",
    Exit.REFUSED: "bad input or a refused request: usage, validation, unknown names, values out of range, "
    "a verb that does not apply to the row",
    Exit.ENVIRONMENT: "the environment: the database, broker or lock store is unreachable, or the schema is "
    "missing or outdated (the message says which, and the command that fixes it)",
}


def exit_table() -> str:
    """The table as Markdown rows (docs/cli.md holds exactly these lines)."""
    rows = ["| exit | meaning |", "|---|---|"]
    rows += [f"| {int(code)} | {MEANINGS[code]} |" for code in Exit]
    return "\n".join(rows)
