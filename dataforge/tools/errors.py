"""Errors of the operator tools (the demo and the worker/beat process supervisor)."""

from __future__ import annotations

from dataforge.errors import DataForgeError

__all__ = ["ProcessError", "StepFailed", "ToolError"]


class ToolError(DataForgeError):
    """Root of the tools' errors."""


class ProcessError(ToolError):
    """A child did not reach the awaited state; carries its command and log tail."""

    def __init__(self, name: str, what: str, log: str) -> None:
        self.name = name
        self.log = log
        tail = "\n".join(log.splitlines()[-40:])
        super().__init__(f"{name}: {what}\n--- last log lines ---\n{tail}")


class StepFailed(ToolError):
    """A step of the demo did not do what it shows; ``detail`` says what happened instead."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
