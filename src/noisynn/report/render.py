"""HTML rendering helpers: escaped tables, figures and the page skeleton (no I/O)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

__all__ = ["esc", "table", "figure", "page", "fmt_pct", "fmt_pp"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
tr.uncovered td { color: #999; }
.banner { padding: 0.7em 1em; border-radius: 6px; margin: 1em 0; }
.banner.quick { background: #fff4d6; border: 1px solid #e6b400; }
.banner.paper { background: #e3f4e1; border: 1px solid #3c9a32; }
.banner.cpu { background: #e6eefb; border: 1px solid #3a6fc4; }
.banner.other { background: #eef; border: 1px solid #88a; }
.pass { color: #137a13; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; } .na { color: #888; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; max-width: 900px; }
nav ul { columns: 2; font-size: 0.92em; } .note { color: #555; font-size: 0.92em; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt_pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string (``0.98765 -> "98.77"``); "–" for None."""
    return "–" if x is None else f"{100 * x:.{digits}f}"


def fmt_pp(x: float | None, digits: int = 2, sign: bool = True) -> str:
    """A fraction difference as percentage points (``-0.012 -> "-1.20"``)."""
    if x is None:
        return "–"
    return f"{100 * x:+.{digits}f}" if sign else f"{100 * x:.{digits}f}"


Cell = str | tuple[str, dict]


def _cell(tag: str, cell: Cell) -> str:
    if isinstance(cell, tuple):
        text, attrs = cell
        attr = "".join(f' {k}="{esc(v)}"' for k, v in attrs.items())
        return f"<{tag}{attr}>{text}</{tag}>"
    return f"<{tag}>{cell}</{tag}>"


def table(headers: Sequence[Cell], rows: Iterable[Sequence[Cell]], *, id: str | None = None,
          caption: str | None = None, row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cell texts must already be escaped (use :func:`esc`)."""
    out = [f'<table{f" id={chr(34)}{esc(id)}{chr(34)}" if id else ""}>']
    if caption:
        out.append(f"<caption>{caption}</caption>")
    out.append("<thead><tr>" + "".join(_cell("th", h) for h in headers) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes and i < len(row_classes) and row_classes[i] else ""
        out.append(f'<tr{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>' + "".join(_cell("td", c) for c in row)
                   + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def figure(stem: str, alt: str, caption: str) -> str:
    """A figure referencing ``stem.png`` (and linking ``stem.svg``) beside the page."""
    return (f'<figure id="fig-{esc(stem)}"><img src="{esc(stem)}.png" alt="{esc(alt)}">'
            f'<figcaption>{caption} <a href="{esc(stem)}.svg">SVG</a> · <a href="{esc(stem)}.png">PNG</a>'
            f"</figcaption></figure>")


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
