"""Carry ``scripts/__init__.py`` over into the tasks package's ``__init__.py``.

Every job imported ``scripts/__init__.py`` before it ran, and many read names from it
(``from scripts import API_VERSION``, ``from . import slugify``, ``scripts.logger``). Once the
jobs live in the tasks package, ``from app.tasks import API_VERSION`` and ``from . import ...``
must find the same names, defined once: keeping a copy importable as ``scripts`` would give a
re-exported helper a second module object (two caches, two classes of the same name) next to
the moved one. So its docstring, comments and statements are kept, in order, in the tasks
package's ``__init__.py``, beside ``REGISTERED_TASKS``; its imports of ``scripts`` were
already rewritten like everywhere else.

When the tasks package has no ``__init__.py`` yet, the carried file becomes it, as it was.
Else the carried imports join the existing import block (where ruff's isort rules put them;
an import already there is not repeated), and the other statements follow the existing
code, its docstring turned into comments above them (the package keeps its own docstring).
A name bound by both files cannot keep both meanings: that is refused. Carrying twice
changes nothing.
"""

from __future__ import annotations

import ast
import inspect

import libcst as cst
from libcst.codemod import CodemodContext

from refactor_tool.analysis import ImportBinding, analyze, statement_bindings
from refactor_tool.commands._base import Command
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.import_layout import ImportStyle, Statement, add_import, is_import_line

__all__ = ["CarryPackageInitCommand", "carry_package_init"]


def _code(module: cst.Module, stmt: Statement) -> str:
    return module.code_for_node(stmt.with_changes(leading_lines=[]))


def _is_docstring(stmt: Statement) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, cst.SimpleString | cst.ConcatenatedString)
    )


def _top_bindings(tree: ast.Module) -> dict[str, int]:
    """Module-level names bound by anything but a plain top-level import, with their line."""
    out: dict[str, int] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        for name in sorted(statement_bindings(stmt)):
            out.setdefault(name, stmt.lineno)
    return out


def _same_import(a: ImportBinding, b: ImportBinding) -> bool:
    return (a.module, a.attr, a.level) == (b.module, b.attr, b.level)


def _comment_lines(docstring: str) -> list[cst.EmptyLine]:
    lines = inspect.cleandoc(docstring).splitlines()
    return [cst.EmptyLine(comment=cst.Comment(f"# {line}".rstrip())) for line in lines]


def _already_carried(
    target: cst.Module,
    carried: cst.Module,
    target_imports: dict[str, ImportBinding],
    carried_imports: dict[str, ImportBinding],
) -> bool:
    """A re-run: the carried statements are all there, in order, and so are its imports and
    comments (the docstring became comments)."""
    body = list(carried.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    while body and is_import_line(body[0]):
        body.pop(0)
    target_codes = [_code(target, s) for s in target.body]
    position = 0
    wanted = [_code(carried, s) for s in body]
    for code in target_codes:
        if position < len(wanted) and code == wanted[position]:
            position += 1
    if position < len(wanted):
        return False
    for name, binding in carried_imports.items():
        theirs = target_imports.get(name)
        if theirs is None or not _same_import(theirs, binding):
            return False
    if not wanted:
        text = target.code
        docstring = carried.body[0] if carried.body and _is_docstring(carried.body[0]) else None
        comments = [line.comment.value for line in carried.header if line.comment is not None]
        if docstring is not None:
            comments.extend(c.comment.value for c in _comment_lines(_docstring_text(carried, docstring)) if c.comment)
        return all(comment in text for comment in comments)
    return True


def _docstring_text(module: cst.Module, docstring: Statement) -> str:
    return str(ast.literal_eval(module.code_for_node(docstring.with_changes(leading_lines=[])).strip()))


def carry_package_init(
    target: bytes | None, carried: bytes, style: ImportStyle, path: str = "__init__.py", origin: str = "__init__.py"
) -> bytes | None:
    """The tasks package's ``__init__.py`` (``target``, ``None`` when missing) with ``carried``
    taken over; ``None`` when there is nothing to write (both empty).

    Raises :class:`ConversionRefused` when both files bind one name differently.
    """
    carried_module = cst.parse_module(carried)
    if not carried_module.body and not any(line.comment for line in carried_module.header):
        return target
    if target is None:
        return carried
    target_module = cst.parse_module(target)
    target_facts = analyze(target)
    carried_facts = analyze(carried)
    if _already_carried(target_module, carried_module, target_facts.imports, carried_facts.imports):
        return target
    target_names = _top_bindings(ast.parse(target))
    problems: list[Refusal] = []
    for name, line in _top_bindings(ast.parse(carried)).items():
        where = target_names.get(name) or (target_facts.imports[name].line if name in target_facts.imports else None)
        if where is not None:
            problems.append(Refusal(line, f"binds {name!r}, which {path}:{where} binds too; rename one, then re-run"))
    for name, binding in carried_facts.imports.items():
        theirs = target_facts.imports.get(name)
        if name in target_names or (theirs is not None and not _same_import(theirs, binding)):
            line = target_names.get(name) or (theirs.line if theirs else 1)
            problems.append(
                Refusal(binding.line, f"imports {name!r}, which {path}:{line} binds to something else; rename one")
            )
    if problems:
        raise ConversionRefused(sorted(set(problems)), origin)

    body = list(carried_module.body)
    docstring = body[0] if body and _is_docstring(body[0]) else None
    if docstring is not None:
        body = body[1:]
    imports: list[cst.SimpleStatementLine] = []
    while body and is_import_line(body[0]):
        import_line = body.pop(0)
        assert isinstance(import_line, cst.SimpleStatementLine)
        imports.extend(_split_imports(import_line, target_facts.imports))
    # The carried comments: the file's header, the docstring's text, then the statements' own.
    lead: list[cst.EmptyLine] = [line for line in carried_module.header if line.comment is not None]
    if docstring is not None:
        lead.extend(_comment_lines(_docstring_text(carried_module, docstring)))
    new_body = list(target_module.body)
    if body:
        first = body[0]
        own = [line for line in first.leading_lines]
        while own and own[0].comment is None:
            own.pop(0)
        if lead and own:
            lead.append(cst.EmptyLine())
        body[0] = first.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine(), *lead, *own])
        new_body.extend(body)
    elif lead:
        # Only comments (and imports) to carry: they stay readable at the end of the file.
        footer = [cst.EmptyLine(), cst.EmptyLine(), *lead]
        target_module = target_module.with_changes(footer=[*target_module.footer, *footer])
    docstring_first = bool(new_body) and _is_docstring(new_body[0])
    for statement in imports:
        new_body = add_import(
            new_body, statement, style, insert_at=1 if docstring_first else 0, after_docstring=docstring_first
        )
    return target_module.with_changes(body=new_body).bytes


def _split_imports(line: cst.SimpleStatementLine, existing: dict[str, ImportBinding]) -> list[cst.SimpleStatementLine]:
    """The import line as one statement per import, without the names the target already imports."""
    out: list[cst.SimpleStatementLine] = []
    for small in line.body:
        assert isinstance(small, cst.Import | cst.ImportFrom)
        if isinstance(small.names, cst.ImportStar):
            out.append(cst.SimpleStatementLine(body=[small.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)]))
            continue
        keep = []
        for alias in small.names:
            bound = alias.evaluated_alias or alias.evaluated_name
            if isinstance(small, cst.Import) and alias.asname is None:
                bound = bound.split(".")[0]
            if bound not in existing:
                keep.append(alias)
        if not keep:
            continue
        keep[-1] = keep[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        statement = small.with_changes(names=keep, semicolon=cst.MaybeSentinel.DEFAULT)
        trailing = line.trailing_whitespace if len(line.body) == 1 else cst.TrailingWhitespace()
        out.append(cst.SimpleStatementLine(body=[statement], trailing_whitespace=trailing))
    return out


class CarryPackageInitCommand(Command):
    """Take ``carried`` (the rewritten ``scripts/__init__.py``) over into this module.

    The codemod form of :func:`carry_package_init` (which the runner calls on bytes).
    """

    DESCRIPTION = "Carry scripts/__init__.py over into the tasks package's __init__.py."

    def __init__(self, context: CodemodContext, carried: bytes = b"", style: ImportStyle | None = None) -> None:
        super().__init__(context)
        self.carried = carried
        self.style = style or ImportStyle()

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        out = carry_package_init(tree.bytes, self.carried, self.style, self.context.filename or "__init__.py")
        return tree if out is None or out == tree.bytes else cst.parse_module(out)
