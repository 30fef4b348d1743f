"""The restart history: which events become rows, and how.

The history is an append-only record of what the supervisor did to each session and what
came of it: every restart requested (written in the same transaction as the in-flight
record, so before the request is sent), every answer and verdict, every give-up. It is
built from the events the decision core returns, so it says exactly what the log says.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from supervisor.domain import events as ev
from supervisor.domain.models import Action, Event, HistoryEntry

HISTORY_EVENTS = frozenset(
    {
        ev.RESTART_REQUESTED,
        ev.RESTART_ACCEPTED,
        ev.RESTART_SUCCEEDED,
        ev.RESTART_FAILED,
        ev.RESTART_CONFLICT,
        ev.RESTART_DEFERRED,
        ev.SESSION_UNHEALTHY,
        ev.SESSION_RECOVERED,
        ev.SESSION_GAVE_UP,
        ev.SESSION_NEEDS_PERSON,
        ev.SESSION_GONE,
        ev.SESSION_RETRY_REQUESTED,
        ev.SESSION_ZOMBIE,
    }
)

# The outcome of events that carry none of their own.
_OUTCOMES = {
    ev.RESTART_REQUESTED: "requested",
    ev.RESTART_ACCEPTED: "accepted",
    ev.SESSION_UNHEALTHY: "unhealthy",
    ev.SESSION_RECOVERED: "recovered",
    ev.SESSION_GAVE_UP: "gave_up",
    ev.SESSION_NEEDS_PERSON: "needs_person",
    ev.SESSION_GONE: "gone",
    ev.SESSION_RETRY_REQUESTED: "retry_requested",
    ev.SESSION_ZOMBIE: "zombie",
}


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def entry(event: Event, at: float, action: Action | None = None) -> HistoryEntry | None:
    """The history row for ``event`` at ``at`` (None: not a history event).

    ``action`` is the call that was carried out when the event came from its answer.
    A ``session.recovered`` by our own restart is already ``restart.succeeded``: no row.
    """
    if event.name not in HISTORY_EVENTS:
        return None
    fields = event.fields
    if event.name == ev.SESSION_RECOVERED and fields.get("by") == "restart":
        return None
    session_id = fields.get("session_id")
    if not isinstance(session_id, str):
        return None
    if event.name == ev.RESTART_REQUESTED:
        call = _str(fields.get("via"))
    else:
        call = action.kind.value if action is not None else None
    reason = _str(fields.get("reason")) or _str(fields.get("resolution")) or _str(fields.get("by"))
    wait = fields.get("next_attempt_in")
    next_at = at + float(wait) if isinstance(wait, int | float) and not isinstance(
        wait, bool) else None
    return HistoryEntry(
        at=at,
        session_id=session_id,
        event=event.name,
        action=call,
        attempt=_int(fields.get("attempt")),
        outcome=_str(fields.get("outcome")) or _OUTCOMES.get(event.name),
        reason=reason,
        status=_str(fields.get("status")),
        http_status=_int(fields.get("http_status")),
        duration_ms=_int(fields.get("duration_ms")),
        next_attempt_at=next_at,
    )


def entries(
    events: Iterable[Event], at: float, action: Action | None = None
) -> list[HistoryEntry]:
    """The history rows for a step's events."""
    found = (entry(event, at, action) for event in events)
    return [row for row in found if row is not None]
