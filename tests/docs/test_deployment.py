"""docker-compose.yml runs the same worker and beat commands the tests and CI run natively."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dataforge.tools.processes import beat_command, worker_command

ROOT = Path(__file__).resolve().parents[2]


def _compose_commands() -> dict[str, list[str]]:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    commands: dict[str, list[str]] = {}
    service = None
    for line in text.splitlines():
        header = re.match(r"^  ([a-z_]+):\s*$", line)
        if header:
            service = header.group(1)
        command = re.match(r"^    command: (\[.*\])\s*$", line)
        if command and service:
            # The commands are written as JSON-compatible flow sequences.
            commands[service] = json.loads(command.group(1))
    return commands


def _native(argv: list[str]) -> list[str]:
    # Natively the interpreter is sys.executable; in the image it is `python`.
    return ["python", *argv[1:]]


def test_worker_command_matches_native() -> None:
    assert _compose_commands()["worker"] == _native(worker_command())


def test_beat_command_matches_native() -> None:
    assert _compose_commands()["beat"] == _native(beat_command())
