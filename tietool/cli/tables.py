"""Plain-text tables: columns padded to their widest cell, two spaces apart.

The layout is tabulate's ``simple`` (with headers) and ``plain`` (without)
formats as tietool used them (``disable_numparse``: every cell left-aligned
text), kept here instead of the dependency: tabulate 0.10 looks its own
version up in the installed packages' metadata at import, which cost every
command that draws a table about 40 ms of start-up (issue 28).

Cells are ``str()`` of the value (``None`` is empty), stripped of surrounding
spaces; a cell may hold several lines. A column is as wide as its widest line,
and at least its header and two spaces; East Asian wide characters count two
columns. Trailing spaces are cut from every line.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

#: Columns a header is wider than its text, at least (tabulate's MIN_PADDING).
HEADER_PADDING = 2
SEPARATOR = "  "


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A table with a header line and a dashed rule under it."""
    return "\n".join(_lines([list(r) for r in rows], [str(h) for h in headers]))


def key_values(pairs: Sequence[tuple[str, object]]) -> str:
    """Two columns, no header: ``key  value`` per line."""
    return "\n".join(_lines([[k, v] for k, v in pairs], None))


def _lines(rows: list[list[object]], headers: list[str] | None) -> list[str]:
    ncols = max([len(headers or [])] + [len(r) for r in rows])
    cells = [[_cell(r[i]) if i < len(r) else [""] for i in range(ncols)] for r in rows]
    widths = [max([_width(line) for row in cells for line in row[i]]
                  + ([_width(headers[i]) + HEADER_PADDING] if headers and i < len(headers) else [0]))
              for i in range(ncols)]
    out = []
    if headers is not None:
        out.append(_row([[h] for h in headers] + [[""]] * (ncols - len(headers)), widths)[0])
        out.append(SEPARATOR.join("-" * w for w in widths))
    for row in cells:
        out += _row(row, widths)
    return out


def _cell(value: object) -> list[str]:
    text = "" if value is None else str(value).strip()
    return text.splitlines() if ("\n" in text or "\r" in text) else [text]


def _row(cells: list[list[str]], widths: list[int]) -> list[str]:
    """The lines of one row: each cell's lines padded to its column, missing lines blank."""
    height = max(len(c) for c in cells)
    return [SEPARATOR.join(_pad(c[k] if k < len(c) else "", w) for c, w in zip(cells, widths, strict=True)).rstrip()
            for k in range(height)]


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _width(text: str) -> int:
    """Terminal columns of ``text`` (wide characters two, combining marks none)."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)
