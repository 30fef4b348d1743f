"""What a webhook request says: which session, and the status it claims.

Forms read (``read``):

* WAHA's envelope: ``{"id": "evt_…", "timestamp": ms, "event": "session.status",
  "session": NAME, "me": …, "payload": {"status": S, "statuses": [{status, timestamp},
  …]}, "engine": …, "environment": …}``;
* its older form, ``{"event": "session.status", "payload": {"name": NAME, "status": S}}``
  (the session's name in the payload when the envelope has none);
* a flat form, ``{"session" | "sessionId" | "session_id": NAME, "status": S}``, for
  providers that flatten it (an ``event`` other than ``session.status`` is honoured).

Any other ``event`` (messages, presence…) is ``Ignored``: acknowledged, nothing done. A
body that is not a JSON object, or a status event without a session name or a status, is
``Malformed`` with a reason of ours (never the body). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["MAX_NAME", "STATUS_EVENT", "Hint", "Ignored", "Malformed", "read"]

STATUS_EVENT: Final = "session.status"
MAX_NAME: Final = 200  # a session name or a status longer than this is no session's


class Malformed(ValueError):
    """The body cannot be a session event; the message says why in words of ours."""


class Ignored(msgspec.Struct, frozen=True):
    """An event of another kind (``event`` says which): acknowledged, nothing done."""

    event: str


class Hint(msgspec.Struct, frozen=True):
    """A session event: ``session`` (the name the provider gives it), the ``status`` it
    claims, the event's ``id`` when it has one (for replays), and its ``timestamp`` (ms)."""

    session: str
    status: str
    id: str | None = None
    timestamp: int | None = None


class _Payload(msgspec.Struct, gc=False):
    status: Any = None
    name: Any = None


class _Envelope(msgspec.Struct, gc=False):
    id: Any = None
    timestamp: Any = None
    event: Any = None
    session: Any = None
    sessionId: Any = None
    session_id: Any = None
    status: Any = None
    payload: _Payload | list[Any] | str | int | float | bool | None = None


_DECODER: Final = msgspec.json.Decoder(_Envelope)


def _text(value: object) -> str | None:
    if isinstance(value, str) and value and len(value) <= MAX_NAME and value.isprintable():
        return value
    return None


def read(body: bytes) -> Hint | Ignored:
    """What the body says. Raises ``Malformed``."""
    try:
        doc = _DECODER.decode(body)
    except msgspec.ValidationError:
        raise Malformed("not a JSON object of the expected shape") from None
    except msgspec.DecodeError:
        raise Malformed("not JSON") from None
    event = doc.event
    if event is not None and event != STATUS_EVENT:
        if not isinstance(event, str) or not event.isprintable() or len(event) > MAX_NAME:
            raise Malformed("event is not a name")
        return Ignored(event)
    payload = doc.payload if isinstance(doc.payload, _Payload) else None
    name = _text(doc.session) or _text(doc.sessionId) or _text(doc.session_id) or (
        _text(payload.name) if payload is not None else None)
    status = _text(payload.status) if payload is not None else None
    status = status or _text(doc.status)
    if name is None:
        raise Malformed("no session name")
    if status is None:
        raise Malformed("no status")
    stamp = doc.timestamp if isinstance(doc.timestamp, int) and not isinstance(
        doc.timestamp, bool) else None
    return Hint(name, status, _text(doc.id), stamp)
