"""A griffe extension for the API reference: the reST markup of noisynn's docstrings, as Markdown.

noisynn's docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``), read mostly in
a terminal and an editor, with a few pieces of reST that Markdown would garble. Before
griffe parses a docstring, this rewrites:

* roles: ``:func:`~noisynn.noise.clean``` -> ```clean```, ``:mod:`noisynn.layers``` ->
  ```noisynn.layers``` (inline code; ``~`` keeps the last component, as in Sphinx);
* literal blocks: a paragraph ending in ``::`` and the indented block after it -> the
  paragraph ending in ``:`` and a fenced code block (``pycon`` when it starts with ``>>>``);
* doctest lines outside a literal block or an ``Examples:`` section -> a ``pycon`` block;
* ``.. math::`` blocks -> a fenced ``latex`` block;
* simple tables (``====  ====`` borders) -> Markdown tables.

The source stays as it is; only the site's rendering changes. Loaded by mkdocs.yml
(``extensions:`` of the python handler).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|data|attr|exc|obj|math):`(~?)([^`]+)`")
_BORDER = re.compile(r"^(\s*)(=+)((?: +=+)+)\s*$")
_DOCTEST = re.compile(r"^\s*>>> ")
_SECTION = re.compile(r"^\s*(Examples?|Args|Arguments|Parameters|Returns|Raises|Yields|Attributes)\s*:\s*$")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    if tilde:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence(block: list[str], base: int, lang: str) -> list[str]:
    """A fenced code block at indentation ``base`` holding ``block`` (dedented, trailing blanks dropped)."""
    while block and not block[-1].strip():
        block.pop()
    inner = min((_indent(b) for b in block if b.strip()), default=0)
    pad = " " * base
    return [f"{pad}```{lang}", *[pad + b[inner:] if b.strip() else "" for b in block], f"{pad}```"]


def _literal_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        math = stripped == ".. math::"
        if math or (stripped.endswith("::") and not stripped.startswith("..")):
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            k = j
            while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > base):
                k += 1
            if k > j:  # an indented block follows
                block = lines[j:k]
                if math:
                    out.extend(_fence(block, base, "latex"))
                else:
                    head = line[: len(line.rstrip()) - 1]  # "text::" -> "text:"
                    if head.strip() != ":":
                        out.append(head)
                    out.append("")
                    lang = "pycon" if _DOCTEST.match(block[0]) else "python"
                    out.extend(_fence(block, base, lang))
                out.append("")
                i = k
                continue
        out.append(line)
        i += 1
    return out


def _doctests(lines: list[str]) -> list[str]:
    """Doctest paragraphs outside ``Examples:`` sections and fences become ``pycon`` blocks."""
    out: list[str] = []
    in_fence = False
    section_indent = -1  # indentation of the Examples: title we are under, -1 when none
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            title = _SECTION.match(line)
            if title:
                section_indent = _indent(line) if title.group(1).startswith("Example") else -1
            elif line.strip() and section_indent >= 0 and _indent(line) <= section_indent:
                section_indent = -1
            if _DOCTEST.match(line) and section_indent < 0:
                j = i
                while j < len(lines) and lines[j].strip():
                    j += 1
                out.extend(_fence(lines[i:j], _indent(line), "pycon"))
                i = j
                continue
        out.append(line)
        i += 1
    return out


def _split_row(line: str, starts: list[int]) -> list[str]:
    """Cut a table row at the column starts; a cell that runs past its column ends at the next double space."""
    cells, pos = [], starts[0]
    for start in starts[1:]:
        cut = start
        if cut < len(line) and line[cut - 1] != " ":
            gap = line.find("  ", cut)
            cut = len(line) if gap < 0 else gap
        cells.append(line[pos:cut].strip())
        pos = max(cut, start)
    cells.append(line[pos:].strip())
    return cells


def _tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = _BORDER.match(lines[i])
        ends = [j for j in range(i + 1, min(len(lines), i + 200)) if lines[j].strip() == lines[i].strip()][:2]
        if not border or len(ends) < 2:
            out.append(lines[i])
            i += 1
            continue
        pad = border.group(1)
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        rows: list[list[str]] = []
        for j in range(i + 1, ends[1]):
            if j == ends[0] or not lines[j].strip():
                continue
            cells = _split_row(lines[j], starts)
            continued = rows and j > ends[0] and (not cells[0] or any(c.count("(") > c.count(")") for c in rows[-1]))
            if continued:  # the row above goes on: an empty first cell, or a parenthesis left open
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
            else:
                rows.append(cells)
        header, body = rows[0], rows[1:]

        def row(cells: list[str], pad: str = pad) -> str:
            return pad + "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        out.extend(["", row(header), pad + "|" + " --- |" * len(header), *[row(r) for r in body], ""])
        i = ends[1] + 1
    return out


def to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST markup turned into Markdown."""
    lines = _tables(text.splitlines())
    lines = _doctests(_literal_blocks(lines))
    return _ROLE.sub(_role, "\n".join(lines))


class RstMarkup(griffe.Extension):
    """Rewrites every docstring with :func:`to_markdown` as griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
