"""The secrets the process knows, and the one way text is cleaned of them before it
leaves the process (a log line, an exception's message, an excerpt of a body, a URL).

``Secrets`` holds the values never to print: the API key the client uses, every key
it is handed after a re-read or a reload, and the QR payloads it fetched (the last few
of each session). One instance per process, made where the
process is put together (the CLI) and handed to the log configuration
(``supervisor.logs.configure``) and to the client; nothing is kept at module level.

What it does with them:

* ``redact``: every known value in a text becomes ``[REDACTED]``; ``holds`` says
  whether a text holds one (the settings' problem lines show a mask instead).
* ``redact_fields``: a structured record (a log event) with its fields of secret-looking
  names (``SECRET_FIELDS``) blanked and every string in it redacted, however nested.
* ``excerpt``: a short, single-line piece of a body or a message, for an exception or a
  list problem: known values redacted, and anything that looks like a credential too
  (``Bearer ...``, ``Basic ...``, the value of an ``api_key``, ``token``, ``secret``,
  ``password`` or ``authorization`` field); never ending in the start of a known value.

Pure: no I/O. The values are kept out of ``repr``, so an instance in a traceback's
frame shows only how many it holds. Values may be added from any thread (a hashed login
token is verified in a worker thread, a QR payload arrives on the event loop): each
``add`` and ``discard`` is one store into a dict, which no other thread's can undo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

__all__ = ["EXCERPT_LIMIT", "MIN_LENGTH", "REDACTED", "SECRET_FIELDS", "Secrets"]

REDACTED: Final = "[REDACTED]"
"""What a secret is replaced by."""

MIN_LENGTH: Final = 4
"""Shorter values are not secrets to match: they would match everywhere."""

EXCERPT_LIMIT: Final = 200
"""The longest excerpt of a body that goes into an exception."""

SECRET_FIELDS: Final = frozenset({"api_key", "authorization", "headers", "password", "token"})
"""Names of the fields of a structured record (a log event) whose values are never shown."""

EXCERPT_WINDOW: Final = 4096
"""Characters (or bytes) of a body looked at to build an excerpt."""

_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"'<>,;]+")
_SECRET_FIELD = re.compile(
    r"(?i)\b((?:api[_-]?key|access[_-]?token|token|secret|password|authorization)"
    r"[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])[^\s\"'<>,;&}]+"
)


class Secrets:
    """The values this process must never print, and the rules that keep them out."""

    __slots__ = ("_known",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._known: dict[str, None] = {}
        for value in values:
            self.add(value)

    @property
    def _values(self) -> tuple[str, ...]:
        """The values, longest first: a value inside another is not replaced before the one
        that holds it (``list`` of a dict is taken in one step, whatever other threads do)."""
        return tuple(sorted(list(self._known), key=len, reverse=True))

    def add(self, value: str) -> None:
        """Never print ``value`` (an API key) from now on. Values shorter than
        ``MIN_LENGTH`` are ignored."""
        if len(value) >= MIN_LENGTH:
            self._known[value] = None

    def discard(self, value: str) -> None:
        """Stop matching ``value``: a QR payload that has expired (``WasendClient.qr``
        keeps the last few of each session, so that the values stay few)."""
        self._known.pop(value, None)

    def __contains__(self, value: object) -> bool:
        return value in self._known

    def __len__(self) -> int:
        return len(self._known)

    def __repr__(self) -> str:
        return f"<Secrets: {len(self._known)} known>"

    def holds(self, text: str) -> bool:
        """Whether ``text`` holds a known value."""
        return any(value in text for value in self._values)

    def redact(self, text: str) -> str:
        """``text`` with every known value replaced by ``[REDACTED]``."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def redact_fields(self, record: MutableMapping[str, Any]) -> None:
        """Blank, in place, the fields of secret-looking names (``SECRET_FIELDS``) and
        redact every known value in the others, in strings at any depth of dicts,
        lists and tuples."""
        for key in [k for k in record if k.lower() in SECRET_FIELDS]:
            record[key] = REDACTED
        if self._known:
            values = self._values
            for key, value in record.items():
                record[key] = self._scrub(value, values)

    def _scrub(self, value: Any, values: tuple[str, ...] | None = None) -> Any:
        values = self._values if values is None else values
        if isinstance(value, str):
            for known in values:
                if known in value:
                    value = value.replace(known, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v, values) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v, values) for v in value)
        return value

    def excerpt(self, body: bytes | bytearray | str, *, limit: int = EXCERPT_LIMIT) -> str:
        """A short, single-line piece of ``body`` with secrets removed.

        Looks only at the start of the body (``EXCERPT_WINDOW``). Every known value is
        replaced, as is anything that looks like ``Bearer ...``/``Basic ...`` or the value
        of an ``api_key``/``token``/``secret``/``password``/``authorization`` field. The
        result is at most ``limit`` characters and never ends in the first characters of
        a known value.
        """
        if isinstance(body, bytes | bytearray):
            text = body[:EXCERPT_WINDOW].decode("utf-8", errors="replace")
        else:
            text = body[:EXCERPT_WINDOW]
        if not text.isprintable():
            text = "".join(ch if ch.isprintable() else " " for ch in text)
        text = self.redact(" ".join(text.split()))
        text = _AUTH_SCHEME.sub(rf"\1 {REDACTED}", text)
        text = _SECRET_FIELD.sub(rf"\1{REDACTED}", text)
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        # Values were replaced before the cut above, so it cannot split one; but the
        # window may have, and if the text ends there, drop the trailing prefix of a value.
        for value in self._values:
            for length in range(min(len(value) - 1, len(text)), 2, -1):
                if text.endswith(value[:length]):
                    text = text[:-length] + "…"
                    break
        return text
