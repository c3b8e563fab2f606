"""libcst codemod that converts legacy ``scripts/*.py`` jobs into registered DataForge tasks.

Public API (the CLI verbs ``dataforge convert`` / ``dataforge verify`` are thin layers over it)::

    from refactor_tool import ConvertOptions, convert
    report = convert(Path("backend"), ConvertOptions(), mode="check", jobs=2)
    report.exit_code(check=True), report.to_json(), report.diff()

``convert`` raises :class:`NothingToConvert` for a folder without ``scripts/`` nor the tasks
package, and :class:`WriteInterrupted` for a Ctrl-C during the write phase (the tree is then as
it was, or fully converted). See docs/codemod.md.
"""

from refactor_tool.errors import ConversionRefused, RefactorError, Refusal
from refactor_tool.options import MAP_FILE_NAME, ConvertOptions, ImportTarget
from refactor_tool.report import Change, ConvertReport, FileReport
from refactor_tool.runner import NothingToConvert, convert
from refactor_tool.writes import WriteInterrupted

__all__ = [
    "MAP_FILE_NAME",
    "Change",
    "ConversionRefused",
    "ConvertOptions",
    "ConvertReport",
    "FileReport",
    "ImportTarget",
    "NothingToConvert",
    "RefactorError",
    "Refusal",
    "WriteInterrupted",
    "convert",
]
