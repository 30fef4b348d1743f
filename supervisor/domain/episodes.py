"""Alert episodes: what opens and resolves (the contract's types, as helper "episodes"
writes them; its own module replaces this copy at the merge)."""

from __future__ import annotations

from enum import StrEnum

import msgspec

__all__ = ["Change", "Episode", "Kind", "Transition"]


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
    detail: str = ""  # one line for people: what the supervisor did/saw


class Transition(msgspec.Struct, frozen=True):
    change: Change
    episode: Episode
    at: float  # when it opened (== episode.opened_at) or resolved
