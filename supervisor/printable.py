"""Text from outside (session names and statuses from the API, error messages) made safe
for a terminal and for line-oriented readers such as monitoring systems.

``printable`` replaces every character that could move the cursor, end a line, clear the
screen or reorder what follows with a visible escape, so that a session named
``"x\\nOK: all fine\\x1b[2J"`` is printed on one line as ``x\\nOK: all fine\\x1b[2J``:

* C0 controls (U+0000-U+001F), DEL (U+007F) and C1 controls (U+0080-U+009F): ``\\n``,
  ``\\r``, ``\\t`` by name, the others as ``\\xNN`` (ESC is ``\\x1b``);
* the Unicode line and paragraph separators (U+2028, U+2029) and the bidirectional
  marks, embeddings, overrides and isolates (U+061C, U+200E, U+200F, U+202A-U+202E,
  U+2066-U+2069), which can make a line read differently from what it holds: ``\\uNNNN``.

Everything else, other scripts and emoji included, is left as it is; so is a backslash,
which cannot break a line (so ``\\n`` in the output may also be a backslash and an ``n``
in the input: the JSON outputs are exact).

``table`` lays rows out in columns for people (``check``, ``status``, ``history``): every
cell made printable, an empty one shown as ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control, separator and bidirectional control character escaped."""
    return _UNSAFE.sub(_escape, text)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``header`` and ``rows`` in left-aligned columns two spaces apart; a cell that is
    None or empty is shown as ``-``, every other one made ``printable``."""
    lines = [list(header)] + [
        ["-" if cell is None or cell == "" else printable(str(cell)) for cell in row]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
