"""Where an import statement goes in a block, the way ruff's isort rules (I001) place it.

A converted module gains imports (``from dataforge.celery_app import celery_app``...) and some
of its imports change module (``scripts._common`` -> ``app.tasks._common``). A project whose CI
runs ruff or isort must stay green, so each such statement is put where ``ruff check --select
I001 --fix`` would put it, *given the block as it is*: every other statement, its comments and
its blank lines stay as written. On a block that was sorted, the result is sorted; on one that
was not, nothing else is reordered.

The rules are ruff's defaults (isort's "default" profile): sections future, standard library,
third-party, first-party, local (relative) in that order, one blank line between sections;
in a section ``import x`` lines before ``from x import y`` lines, each ordered by module name
in case-insensitive natural order; one blank line above a commented import inside a section;
after the block one blank line, two before a ``def`` or ``class``. A top-level package is
first-party when the backend holds it (``src = [".", "src"]``) or the project's ruff settings
say so (``known-first-party``); ``dataforge`` is third-party unless one of those says otherwise.

The statements are libcst nodes; the functions here are pure.
"""

from __future__ import annotations

import fnmatch
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libcst as cst
from libcst.helpers import get_full_name_for_node

__all__ = [
    "FIRST_PARTY",
    "FUTURE",
    "LOCAL_FOLDER",
    "STDLIB",
    "THIRD_PARTY",
    "ImportStyle",
    "Statement",
    "add_import",
    "is_import_line",
    "place_imports",
    "required_blank_lines",
]

#: A statement of a module or block body, as libcst types it.
Statement = cst.SimpleStatementLine | cst.BaseCompoundStatement

#: Sections, in the order isort writes them.
FUTURE, STDLIB, THIRD_PARTY, FIRST_PARTY, LOCAL_FOLDER = range(5)
_DEFAULT_LINE_LENGTH = 88
_CONFIG_FILES = (".ruff.toml", "ruff.toml", "pyproject.toml")


@dataclass(frozen=True)
class ImportStyle:
    """How the project's imports are sorted: which modules are first-party, the line length.

    Frozen and picklable: built once per run from the backend dir and sent to every worker.
    """

    #: Dotted paths of the packages and modules the project holds (``src`` roots): ruff and
    #: isort call ``import a.b`` first-party when ``a/b/`` or ``a/b.py`` exists there.
    first_party_modules: frozenset[str] = frozenset()
    #: The top-level package of the files being written (ruff's ``detect-same-package``).
    same_package: str | None = None
    #: ``known-first-party`` / ``known-third-party`` patterns of the project's ruff settings.
    known_first_party: tuple[str, ...] = ()
    known_third_party: tuple[str, ...] = ()
    line_length: int = _DEFAULT_LINE_LENGTH
    #: Where the settings came from (for the report), ``None`` for ruff's defaults.
    config_file: str | None = field(default=None, compare=False)

    @classmethod
    def for_backend(
        cls, root: Path, same_package: str | None = None, also_first_party: Iterable[str] = ()
    ) -> ImportStyle:
        """The style of the project at ``root``: its ruff settings, else ruff's defaults.

        ``also_first_party``: modules that the conversion itself creates.
        """
        settings, config_file = _ruff_settings(root)
        lint = settings.get("lint")
        isort = (lint.get("isort") if isinstance(lint, dict) else None) or settings.get("isort") or {}
        src = settings.get("src", [".", "src"])
        modules: set[str] = set(also_first_party)
        for entry in src if isinstance(src, list) else []:
            directory = (root / str(entry)).resolve()
            if directory.is_dir():
                modules.update(_module_paths(directory))
        line_length = settings.get("line-length", _DEFAULT_LINE_LENGTH)
        return cls(
            first_party_modules=frozenset(modules),
            same_package=same_package,
            known_first_party=tuple(str(p) for p in isort.get("known-first-party", []) or []),
            known_third_party=tuple(str(p) for p in isort.get("known-third-party", []) or []),
            line_length=line_length if isinstance(line_length, int) and line_length > 0 else _DEFAULT_LINE_LENGTH,
            config_file=config_file,
        )

    def section(self, module: str, level: int = 0) -> int:
        """The isort section of ``module`` (``level`` > 0: a relative import), in ruff's order of
        tests: future, relative, the project's known-* settings, standard library, same
        package, a module of the project, else third-party."""
        if level > 0:
            return LOCAL_FOLDER
        if module == "__future__":
            return FUTURE
        if _matches(module, self.known_first_party):
            return FIRST_PARTY
        if _matches(module, self.known_third_party):
            return THIRD_PARTY
        top = module.split(".")[0]
        if top in sys.stdlib_module_names:
            return STDLIB
        if top == self.same_package or module in self.first_party_modules:
            return FIRST_PARTY
        return THIRD_PARTY


def _module_paths(directory: Path, prefix: str = "", depth: int = 0) -> Iterator[str]:
    """Dotted paths of every package directory and module file under ``directory``."""
    try:
        children = list(directory.iterdir())
    except OSError:
        return
    for child in children:
        if child.is_dir():
            if child.name.isidentifier() and depth < 12 and child.name != "__pycache__":
                dotted = prefix + child.name
                yield dotted
                yield from _module_paths(child, dotted + ".", depth + 1)
        elif child.suffix in (".py", ".pyi") and child.stem.isidentifier() and child.stem != "__init__":
            yield prefix + child.stem


def _matches(module: str, patterns: Sequence[str]) -> bool:
    parts = module.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns for prefix in prefixes)


def _ruff_settings(root: Path) -> tuple[dict[str, Any], str | None]:
    """The first ruff settings found in ``root`` (ruff's own order), or none."""
    for name in _CONFIG_FILES:
        path = root / name
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # ruff itself would stop on it; the defaults are the best guess
        if name == "pyproject.toml":
            data = data.get("tool", {}).get("ruff")
            if not isinstance(data, dict):
                continue
        return data, name
    return {}, None


# -- ordering ------------------------------------------------------------------------------------
_CHUNKS = re.compile(r"(\d+)")


def _natural(text: str) -> tuple[tuple[int, int, str], ...]:
    """Natural order (``module2`` before ``module10``), as ruff compares names."""
    return tuple((1, int(chunk), chunk) if chunk.isdigit() else (0, 0, chunk) for chunk in _CHUNKS.split(text) if chunk)


def _member_key(name: str, asname: str | None) -> tuple[Any, ...]:
    """ruff's order of the names in ``from x import ...``: CONSTANTS, Classes, others."""
    if len(name) > 1 and name.isupper():
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return (name != "*", kind, _natural(name.lower()), _natural(name), _natural((asname or "").lower()))


def _aliases(stmt: cst.SimpleStatementLine) -> list[tuple[str, str | None]]:
    small = stmt.body[0]
    names = small.names if isinstance(small, cst.Import | cst.ImportFrom) else ()
    if isinstance(names, cst.ImportStar):
        return [("*", None)]
    out = []
    for alias in names:
        asname = alias.asname.name if alias.asname is not None else None
        out.append((get_full_name_for_node(alias.name) or "", get_full_name_for_node(asname) if asname else None))
    return out


def is_import_line(stmt: Statement) -> bool:
    """A statement line made only of import statements."""
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, cst.Import | cst.ImportFrom) for s in stmt.body
    )


@dataclass(frozen=True)
class _Key:
    section: int
    is_from: bool
    order: tuple[Any, ...]

    def sort_key(self) -> tuple[Any, ...]:
        return (self.section, self.is_from, self.order)


def _key(stmt: cst.SimpleStatementLine, style: ImportStyle) -> _Key:
    small = stmt.body[0]
    if isinstance(small, cst.Import):
        name, asname = _aliases(stmt)[0]
        return _Key(
            style.section(name), False, (_natural(name.lower()), _natural(name), _natural((asname or "").lower()))
        )
    assert isinstance(small, cst.ImportFrom)
    module = get_full_name_for_node(small.module) if small.module is not None else ""
    level = len(small.relative)
    first = _aliases(stmt)[0]
    # Relative imports: the furthest (most dots) first, as ruff's default "furthest-to-closest".
    return _Key(
        style.section(module or "", level),
        True,
        (-level, _natural((module or "").lower()), _natural(module or ""), _member_key(*first)),
    )


# -- blank lines ---------------------------------------------------------------------------------
def _split_leading(lines: Sequence[cst.EmptyLine]) -> tuple[int, list[cst.EmptyLine]]:
    """``(blank lines above the first comment, the comment lines and everything after them)``."""
    blanks = 0
    for line in lines:
        if line.comment is not None:
            break
        blanks += 1
    return blanks, list(lines[blanks:])


def _with_blanks(stmt: Statement, blanks: int) -> Statement:
    current, attached = _split_leading(stmt.leading_lines)
    if current == blanks:
        return stmt
    return stmt.with_changes(leading_lines=[cst.EmptyLine() for _ in range(blanks)] + attached)


def _is_definition(stmt: Statement) -> bool:
    return isinstance(stmt, cst.FunctionDef | cst.ClassDef)


def required_blank_lines(stmt: Statement) -> int:
    """Blank lines isort (and pycodestyle E302) want between an import block and ``stmt``."""
    return 2 if _is_definition(stmt) else 1


def _desired(sequence: Sequence[tuple[cst.SimpleStatementLine, _Key]], first_blanks: int) -> list[int]:
    out = []
    for i, (stmt, key) in enumerate(sequence):
        if i == 0:
            out.append(first_blanks)
        elif key.section != sequence[i - 1][1].section or _split_leading(stmt.leading_lines)[1]:
            out.append(1)
        else:
            out.append(0)
    return out


# -- placing -------------------------------------------------------------------------------------
def _blocks(body: Sequence[Statement]) -> list[tuple[int, int]]:
    """``(start, end)`` of every maximal run of import lines."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(body):
        if is_import_line(body[i]):
            j = i
            while j < len(body) and is_import_line(body[j]):
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def _arrange(
    block: Sequence[cst.SimpleStatementLine],
    moving: Iterable[int],
    add: Sequence[cst.SimpleStatementLine],
    style: ImportStyle,
    first_blanks: int,
) -> list[cst.SimpleStatementLine]:
    """``block`` with the statements at indexes ``moving``, and ``add``, each at its sorted place.

    The other statements keep their order, and their blank lines as written when the statement
    above them is still the one that was (else they get the blank lines isort wants there).
    """
    moving_set = set(moving)
    keyed = [(s, _key(s, style)) for s in block]
    fixed = [(i, item) for i, item in enumerate(keyed) if i not in moving_set]
    incoming = sorted(
        [item for i, item in enumerate(keyed) if i in moving_set] + [(s, _key(s, style)) for s in add],
        key=lambda item: item[1].sort_key(),
    )
    merged: list[tuple[cst.SimpleStatementLine, _Key]] = []
    origin: list[int | None] = []  # index in `block` of a statement that stays, else None
    j = 0
    for item in incoming:
        while j < len(fixed) and fixed[j][1][1].sort_key() <= item[1].sort_key():
            merged.append(fixed[j][1])
            origin.append(fixed[j][0])
            j += 1
        merged.append(item)
        origin.append(None)
    for index, item in fixed[j:]:
        merged.append(item)
        origin.append(index)
    after = _desired(merged, first_blanks)
    out: list[cst.SimpleStatementLine] = []
    for position, ((stmt, _), was, blanks) in enumerate(zip(merged, origin, after, strict=True)):
        above = origin[position - 1] if position > 0 else -1
        if was is not None and was - 1 not in moving_set and above == was - 1:
            out.append(stmt)
        else:
            new = _with_blanks(stmt, blanks)
            assert isinstance(new, cst.SimpleStatementLine)
            out.append(new)
    return out


def place_imports(
    body: Sequence[Statement],
    style: ImportStyle,
    *,
    add: Sequence[cst.SimpleStatementLine] = (),
    moved: Iterable[int] = (),
    insert_at: int = 0,
    after_docstring: bool = False,
) -> list[Statement]:
    """``body`` with the import lines at indexes ``moved`` re-placed in their own block, and
    ``add`` placed in the first block (a new block at ``insert_at`` when there is none).

    ``after_docstring``: the new block follows the module docstring (one blank line between).
    """
    result = list(body)
    moved_set = set(moved)
    blocks = _blocks(result)
    # Re-place moved statements inside their own blocks (last block first: indexes stay valid).
    for start, end in reversed(blocks):
        inside = [i - start for i in range(start, end) if i in moved_set]
        if not inside:
            continue
        lines = result[start:end]
        first_blanks = _split_leading(lines[0].leading_lines)[0]
        result[start:end] = _arrange(lines, inside, (), style, first_blanks)  # type: ignore[arg-type]
    if not add:
        return result
    blocks = _blocks(result)
    if blocks:
        start, end = blocks[0]
        lines = result[start:end]
        first_blanks = _split_leading(lines[0].leading_lines)[0]
        result[start:end] = _arrange(lines, (), add, style, first_blanks)  # type: ignore[arg-type]
        return result
    # No import block yet: a new one, then the blank lines isort wants after it.
    first_blanks = 1 if after_docstring else 0
    arranged: list[Statement] = list(_arrange([], (), add, style, first_blanks))
    following = result[insert_at:]
    if following:
        following[0] = _with_blanks(following[0], required_blank_lines(following[0]))
    return [*result[:insert_at], *arranged, *following]


def add_import(
    body: Sequence[Statement],
    statement: cst.SimpleStatementLine,
    style: ImportStyle,
    **placement: Any,
) -> list[Statement]:
    """``body`` with ``from m import name`` added: into the first block's existing
    ``from m import ...`` (isort merges them) when there is one, else as its own line."""
    small = statement.body[0]
    merged = _merge_into_existing(body, small, style) if isinstance(small, cst.ImportFrom) else None
    if merged is not None:
        return merged
    return place_imports(body, style, add=[statement], **placement)


def _merge_into_existing(body: Sequence[Statement], new: cst.ImportFrom, style: ImportStyle) -> list[Statement] | None:
    assert not isinstance(new.names, cst.ImportStar)
    if len(new.names) != 1 or new.names[0].asname is not None or new.relative or new.module is None:
        return None  # `as` imports stay on their own line (ruff: combine-as-imports = false)
    module = get_full_name_for_node(new.module)
    blocks = _blocks(body)
    if not blocks:
        return None
    start, end = blocks[0]
    for i in range(start, end):
        line = body[i]
        assert isinstance(line, cst.SimpleStatementLine)
        small = line.body[0]
        if (
            len(line.body) != 1
            or not isinstance(small, cst.ImportFrom)
            or small.relative
            or small.module is None
            or get_full_name_for_node(small.module) != module
            or isinstance(small.names, cst.ImportStar)
            or any(alias.asname is not None for alias in small.names)
        ):
            continue
        alias = new.names[0]
        name = get_full_name_for_node(alias.name) or ""
        names = list(small.names)
        position = sum(_member_key(*a) < _member_key(name, None) for a in _aliases(line))
        result = list(body)
        result[i] = line.with_changes(body=[_insert_alias(small, names, alias, position, style, line)])
        return result
    return None


def _insert_alias(
    node: cst.ImportFrom,
    names: list[cst.ImportAlias],
    alias: cst.ImportAlias,
    position: int,
    style: ImportStyle,
    line: cst.SimpleStatementLine,
) -> cst.ImportFrom:
    if node.lpar is not None:
        # Parenthesized (one name per line, usually): the new name takes the spacing of its place.
        lead = node.lpar.whitespace_after
        if position < len(names):
            spacing = lead if position == 0 else _comma_spacing(names[position - 1], lead)
            names.insert(position, alias.with_changes(comma=cst.Comma(whitespace_after=spacing)))
        else:
            last = names[-1]
            between = _comma_spacing(names[-2], lead) if len(names) > 1 else lead
            names[-1] = last.with_changes(comma=cst.Comma(whitespace_after=between))
            names.append(alias.with_changes(comma=last.comma))
        return node.with_changes(names=names)
    plain = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in names]
    plain.insert(position, alias.with_changes(comma=cst.MaybeSentinel.DEFAULT))
    one_line = node.with_changes(
        names=[
            *(a.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))) for a in plain[:-1]),
            plain[-1],
        ]
    )
    text = cst.Module(body=[line.with_changes(body=[one_line], leading_lines=[])]).code.splitlines()[0]
    if len(text) <= style.line_length:
        return one_line
    # Too long for one line: ruff's wrapped form, one name per line and a trailing comma.
    indent = cst.ParenthesizedWhitespace(
        first_line=cst.TrailingWhitespace(), indent=True, last_line=cst.SimpleWhitespace("    ")
    )
    closing = cst.ParenthesizedWhitespace(first_line=cst.TrailingWhitespace(), indent=True)
    wrapped = [a.with_changes(comma=cst.Comma(whitespace_after=indent)) for a in plain[:-1]]
    wrapped.append(plain[-1].with_changes(comma=cst.Comma(whitespace_after=closing)))
    return node.with_changes(
        names=wrapped,
        lpar=cst.LeftParen(whitespace_after=indent),
        rpar=cst.RightParen(),
    )


def _comma_spacing(
    alias: cst.ImportAlias, default: cst.BaseParenthesizableWhitespace
) -> cst.BaseParenthesizableWhitespace:
    return alias.comma.whitespace_after if isinstance(alias.comma, cst.Comma) else default
