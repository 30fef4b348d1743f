"""Plain data that flows through one poll cycle.

Observations come from the client, records are what the supervisor remembers about a
session, actions are what the decision core asks the shell to do, outcomes are what
came of them and events are what is logged. Nothing here does I/O.
"""

from __future__ import annotations

import hmac
from enum import StrEnum
from typing import Any, NoReturn

import msgspec


class StatusClass(StrEnum):
    """What a session's status means for supervision."""

    HEALTHY = "healthy"
    TRANSITIONAL = "transitional"
    RESTARTABLE = "restartable"
    NEEDS_PERSON = "needs_person"
    UNKNOWN = "unknown"


class SessionInfo(msgspec.Struct, frozen=True):
    """One session as the API reported it. ``engine_connected``: the engine's own view
    (``engine.gows.connected``), None when the answer did not carry it."""

    session_id: str
    name: str | None
    status: str
    engine_connected: bool | None = None


class SessionList(msgspec.Struct, frozen=True):
    """The answer to one list call: the sessions read, and items that could not be read."""

    sessions: tuple[SessionInfo, ...]
    problems: tuple[str, ...] = ()


class QrCode:
    """A session's QR code, as the API handed it out (``WasendClient.qr``).

    Whoever scans it with WhatsApp takes over the session's number, so the payload is a
    secret: ``reveal()`` gives it, to draw the code; ``repr``, ``str`` and formatting show
    only the session, and a QR code cannot be pickled. Immutable; equal to another of the
    same session and payload.
    """

    __slots__ = ("_payload", "session_id")

    session_id: str
    _payload: str

    def __init__(self, session_id: str, payload: str) -> None:
        object.__setattr__(self, "session_id", session_id)
        object.__setattr__(self, "_payload", payload)

    def reveal(self) -> str:
        """The payload: what the QR code encodes."""
        return self._payload

    def __repr__(self) -> str:
        return f"<QrCode {self.session_id!r}: [REDACTED]>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QrCode):
            return NotImplemented
        return self.session_id == other.session_id and hmac.compare_digest(
            self._payload.encode(), other._payload.encode())

    def __hash__(self) -> int:
        return hash((self.session_id, self._payload))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a QrCode is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("a QrCode is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a QrCode is not pickled: its payload is a secret")


class Phase(StrEnum):
    """Where a session stands in supervision."""

    HEALTHY = "healthy"  # running; nothing to do
    STARTING = "starting"  # transitional, not started by us (or re-read after a conflict)
    UNHEALTHY = "unhealthy"  # restartable; restart now or when its backoff ends
    VERIFYING = "verifying"  # we restarted it; waiting for it to come up
    GAVE_UP = "gave_up"  # too many failed attempts; only an occasional retry
    NEEDS_PERSON = "needs_person"  # e.g. SCAN_QR_CODE: restarting cannot help
    GONE = "gone"  # 404 / vanished from the account
    UNKNOWN = "unknown"  # a status we do not know; no action


class LastOutcome(StrEnum):
    """What came last of a session's supervision, for people: ``status`` shows it as
    ``last_outcome`` (``failed`` and ``deferred`` with ``:{reason}``, see ``because``).
    Data only: no decision reads it (the phase and the record's typed fields steer)."""

    REQUESTED = "requested"
    ACCEPTED = "accepted"
    SUCCEEDED = "succeeded"
    RECOVERED = "recovered"
    RECOVERED_ELSEWHERE = "recovered_elsewhere"
    STARTING_ELSEWHERE = "starting_elsewhere"
    CONFLICT = "conflict"
    FAILED = "failed"
    DEFERRED = "deferred"
    GAVE_UP = "gave_up"
    NEEDS_PERSON = "needs_person"
    GONE = "gone"
    RETRY_REQUESTED = "retry_requested"

    def because(self, reason: str) -> str:
        """``failed:relapsed``, ``deferred:rate_limited``..."""
        return f"{self.value}:{reason}"


class Record(msgspec.Struct, frozen=True):
    """What is remembered about one session. Times are wall-clock epoch seconds.

    The phase says where the session stands; the typed fields beside it say what the
    phase cannot, and decisions read only those. ``gave_up`` is set by entering
    ``GAVE_UP`` (which implies it, whatever was passed) and kept while a given-up
    session is retried, or is otherwise away from ``GAVE_UP``, until the core sees it
    recover or a person retries it. ``starting_elsewhere``: a restart of ours conflicted
    and the re-read found the session starting, so its coming up is a recovery (by
    someone else); it lasts until anything else comes of the session. ``last_outcome``
    is words for people (``LastOutcome``), never a reason to act.
    """

    session_id: str
    name: str | None = None
    phase: Phase = Phase.HEALTHY
    last_status: str | None = None
    attempt: int = 0  # number of the last restart attempt since the session was last stable
    failures: tuple[float, ...] = ()  # times of failed attempts inside restart_window
    next_attempt_at: float | None = None
    requested_at: float | None = None  # when the attempt being verified was requested
    verify_deadline: float | None = None
    since: float | None = None  # when the session entered its current phase
    stop_first: bool = False  # the next attempt stops the session before restarting it
    gave_up: bool = False  # given up on; stays set until the session is seen healthy
    warned_statuses: frozenset[str] = frozenset()
    last_outcome: str | None = None  # a LastOutcome (or another version's word), for people
    starting_elsewhere: bool = False
    # Since when its status says healthy while its engine says not connected (a zombie
    # once that lasts ``zombie_after``); None while the two agree.
    disconnected_since: float | None = None
    zombie: bool = False  # failed as a zombie; until it is seen healthy (and connected)

    def __post_init__(self) -> None:
        if self.phase is Phase.GAVE_UP and not self.gave_up:
            msgspec.structs.force_setattr(self, "gave_up", True)


class ActionKind(StrEnum):
    RESTART = "restart"
    STOP = "stop"
    GET = "get"


class Action(msgspec.Struct, frozen=True):
    kind: ActionKind
    session_id: str
    attempt: int = 0
    http_status: int | None = None  # for a GET after a conflict: the conflict's status


class OutcomeKind(StrEnum):
    OK = "ok"
    CONFLICT = "conflict"
    GONE = "gone"
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    FAILED = "failed"  # transient or unreadable; ``reason`` says which


class Outcome(msgspec.Struct, frozen=True):
    kind: OutcomeKind
    status: str | None = None  # the session's status in the answer, when there was one
    http_status: int | None = None
    reason: str | None = None
    duration_ms: float | None = None


class Event(msgspec.Struct, frozen=True):
    """A log event as data: the core returns these, the shell logs them."""

    name: str
    level: str = "info"
    fields: dict[str, Any] = msgspec.field(default_factory=dict)


class Step(msgspec.Struct, frozen=True):
    """What the core decided: the new record (None: forget it), an action, events, and
    whether the restart attempt in flight failed (its ``restart.failed`` event says how)."""

    record: Record | None
    action: Action | None = None
    events: tuple[Event, ...] = ()
    failed: bool = False


class HistoryEntry(msgspec.Struct, frozen=True):
    """One row of the restart history: what happened to a session, and when (epoch s).

    ``event`` is the log event it comes from (``restart.requested``, ``restart.failed``...);
    ``action`` the call made (``restart``, ``stop_then_restart``, ``stop``, ``get``) when
    there was one; ``next_attempt_at`` when the next attempt is due, after a failure.
    """

    at: float
    session_id: str
    event: str
    action: str | None = None
    attempt: int | None = None
    outcome: str | None = None
    reason: str | None = None
    status: str | None = None
    http_status: int | None = None
    duration_ms: int | None = None
    next_attempt_at: float | None = None
