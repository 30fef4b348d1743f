"""Alert episodes: a problem that opens once and resolves once (the contract's types; the
pure rule that finds them, ``reconcile``, comes with the episodes' own module)."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Kind(StrEnum):
    NEEDS_PERSON = "needs_person"
    GAVE_UP = "gave_up"
    AUTH_FAILED = "auth_failed"
    API_UNREACHABLE = "api_unreachable"
    GONE = "gone"


class Change(StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"


class Episode(msgspec.Struct, frozen=True):
    kind: Kind
    subject: str  # the session id; "" for the key-wide kinds (auth_failed, api_unreachable)
    opened_at: float
    session_name: str = ""
    status: str = ""  # the session's status when it opened ("" for key-wide kinds)
    # one line for people: what the supervisor did/saw (never a secret, never a QR payload)
    detail: str = ""


class Transition(msgspec.Struct, frozen=True):
    change: Change
    episode: Episode
    at: float  # when it opened (== episode.opened_at) or resolved
