"""MkDocs hook: the pages that must not drift from the code are written from it at build time.

- ``<!-- configuration-reference -->`` (configuration.md): every field of ``config.py``'s dataclasses, with its
  type as written, its default and the comment beside or above it, section by section from ``RunConfig``.
- ``<!-- refusals -->`` (troubleshooting.md): every ``ConfigError`` cifarbench raises (field and what is allowed)
  and every other one-line error, read from the source with ``ast``, grouped by module.

Both read source text only (no torch import), so ``mkdocs build`` stays quick.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cifarbench"
ERRORS = ("CifarbenchError", "DataError", "DiskFullError")  # one-line errors other than ConfigError


def on_page_markdown(markdown: str, page, config, files) -> str:
    return (markdown.replace("<!-- configuration-reference -->", configuration_reference())
            .replace("<!-- refusals -->", refusals()))


def comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (its comment's text, whether the line holds only a comment)."""
    return {t.start[0]: (t.string, t.line.strip().startswith("#"))
            for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}


def continues(raw: str) -> bool:
    """``#      more words``: a comment line indented under the one before it, continuing it."""
    return raw.startswith("#  ")


def escape(text: str) -> str:
    """Plain text safe in a Markdown table cell and list item: no HTML tags made of ``<name>``, no cell breaks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def dataclasses_of(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def field_text(item: ast.AnnAssign, notes: dict[int, tuple[str, bool]]) -> str:
    """The comment beside a field and the indented lines continuing it, else the comment block right above it."""
    lines, row = [], item.end_lineno
    if row in notes:
        lines.append(notes[row][0])
        while notes.get(row + 1, ("", False))[1] and continues(notes[row + 1][0]):
            row += 1
            lines.append(notes[row][0])
    else:
        row = item.lineno - 1
        while notes.get(row, ("", False))[1] and not continues(notes[row][0]):
            lines.insert(0, notes[row][0])
            row -= 1
    return " ".join(line.lstrip("#").strip() for line in lines)


def field_rows(source: str, node: ast.ClassDef, notes: dict[int, tuple[str, bool]]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, what it does) per field of a config dataclass."""
    return [(item.target.id, ast.get_source_segment(source, item.annotation), ast.get_source_segment(source, item.value),
             field_text(item, notes)) for item in node.body if isinstance(item, ast.AnnAssign) and item.value is not None]


def configuration_reference() -> str:
    source = (SRC / "config.py").read_text()
    tree, notes = ast.parse(source), comments(source)
    classes = dataclasses_of(tree)
    out: list[str] = []

    def section(class_name: str, prefix: str) -> None:
        node = classes[class_name]
        rows, nested = [], []
        for name, kind, default, text in field_rows(source, node, notes):
            factory = default.removeprefix("field(default_factory=").rstrip(")")
            if factory in classes:
                nested.append((factory, f"{prefix}{name}."))
            else:
                rows.append(f"| `{prefix}{name}` | `{kind}` | `{default}` | {escape(text)} |")
        if rows:
            doc = ast.get_docstring(node)
            out.extend([f"## `{prefix.rstrip('.') or 'top level'}`", "", *([doc, ""] if doc else []),
                        "| field | type | default | what it does |", "|---|---|---|---|", *rows, ""])
        for factory, deeper in nested:
            section(factory, deeper)

    section("RunConfig", "")
    return "\n".join(out)


def text_of(node: ast.AST) -> str:
    """A message expression as a reader sees it: literal text, with ``<expression>`` for each interpolated part."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(text_of(v) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return f"<{ast.unparse(node.value)}>"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return text_of(node.left) + text_of(node.right)
    return f"<{ast.unparse(node)}>"


def raised(path: Path) -> list[str]:
    """The refusals one module raises, as Markdown list items."""
    items = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
            continue
        if node.func.id == "ConfigError" and len(node.args) == 3:
            field, value, allowed = (text_of(a) for a in node.args)
            items.append(f"- `{field}={value}`: {escape(allowed)}")
        elif node.func.id in ERRORS:
            items.append(f"- {escape(text_of(node.args[0]))}")
    return sorted(set(items))


def refusals() -> str:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        items = raised(path)
        if items:
            out.extend([f"### `{path.relative_to(SRC.parent).as_posix()}`", "", *items, ""])
    return "\n".join(out)
