"""What an API key may look like: it goes into an ``Authorization`` header, so it is
printable ASCII without spaces. The settings (a key from any source) and the client (a key
handed to it) both ask ``key_problem``."""

from __future__ import annotations

import re

_KEY_CHARS = re.compile(r"[\x21-\x7e]+")  # what can go in an Authorization header


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an API key, or None when it can."""
    if not key:
        return "must not be empty"
    if not _KEY_CHARS.fullmatch(key):
        return "must be printable ASCII without spaces"
    return None
