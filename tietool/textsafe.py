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
