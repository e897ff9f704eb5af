"""Text from files made safe to print: a hostile tensor name cannot drive a terminal."""

from __future__ import annotations

import unicodedata


def printable(text: str, backslash: bool = True) -> str:
    """Escape control and format characters so a hostile tensor name cannot
    move the cursor, clear the screen or fake lines in a terminal.
    ``backslash=False`` for text whose names are already ``repr``-quoted."""
    out = []
    for ch in str(text):
        if ch == "\\" and backslash:
            out.append("\\\\")
        elif unicodedata.category(ch)[0] in ("C", "Z") and ch != " ":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


#: Items a message or note lists before "... and N more".
LIST_ITEMS = 8
#: Characters of one item (a name read from a file) kept in a message.
ITEM_CHARS = 200


def clipped(text: str, limit: int = ITEM_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def bounded(items, limit: int = LIST_ITEMS, sep: str = ", ") -> str:
    """The first ``limit`` of ``items`` joined by ``sep`` (each clipped), then
    "... and 99,990 more": a list from a file cannot make a line of any length.
    The text is not escaped (it may go to JSON): print it through
    :func:`printable`."""
    items = list(items)
    shown = sep.join(clipped(i) for i in items[:limit])
    more = len(items) - limit
    return shown if more <= 0 else f"{shown}{sep}... and {more:,} more"
