"""``status`` and ``history``: what the state file says, as a table or JSON.

Both read the state file only (opened read-only: nothing is created, migrated or moved),
make no API call and need no API key. Times are shown in UTC, ISO 8601, with the time
from now next to them where that helps (``in 4m10s``, ``2h05m ago``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from supervisor.models import HistoryEntry, Record
from supervisor.policy import StatusClasses
from supervisor.sqlite_store import SqliteStore

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[smhdw])", re.IGNORECASE)


def parse_since(text: str, now: float) -> float:
    """Epoch seconds for ``--since``: an ISO 8601 time (UTC unless it says otherwise)
    or a duration back from ``now`` (``90s``, ``30m``, ``2h``, ``7d``, ``1w``, ``1h30m``).
    Raises ValueError with a one-line message."""
    value = text.strip()
    parts = list(_DURATION.finditer(value))
    if parts and "".join(p.group(0) for p in parts).replace(" ", "") == value.replace(" ", ""):
        seconds = sum(float(p["n"]) * _UNITS[p["unit"].lower()] for p in parts)
        return now - seconds
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--since: {text!r} is neither an ISO time (2025-01-31T08:00:00Z) nor a duration "
            "(30m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso(epoch: float | None) -> str | None:
    """``2025-01-31T08:00:00Z`` (whole seconds), or None."""
    if epoch is None or not math.isfinite(epoch):
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(seconds: float) -> str:
    """A short duration: ``42s``, ``4m10s``, ``3h05m``, ``2d03h``."""
    s = round(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _relative(epoch: float, now: float) -> str:
    delta = epoch - now
    if abs(delta) < 0.5:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [list(header)] + [["-" if c is None or c == "" else str(c) for c in r] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


# ------------------------------------------------------------------------- status


def session_status(
    record: Record, classes: StatusClasses, now: float, updated_at: float | None
) -> dict[str, Any]:
    """One session's supervision state, as ``status --json`` shows it."""
    klass = classes.classify(record.last_status).value if record.last_status else "unknown"
    next_at = record.next_attempt_at
    return {
        "id": record.session_id,
        "name": record.name,
        "class": klass,
        "status": record.last_status,
        "phase": record.phase.value,
        "attempts": record.attempt,
        "failures_in_window": len(record.failures),
        "next_attempt_at": iso(next_at),
        "next_attempt_in": None if next_at is None else round(next_at - now, 3),
        "last_outcome": record.last_outcome,
        "gave_up": record.gave_up,
        "requested_at": iso(record.requested_at),
        "since": iso(record.since),
        "updated_at": iso(updated_at),
    }


def status_report(store: SqliteStore, classes: StatusClasses, now: float) -> list[dict[str, Any]]:
    records = sorted(store.records(), key=lambda r: r.session_id)
    return [session_status(r, classes, now, store.updated_at(r.session_id)) for r in records]


def render_status(sessions: list[dict[str, Any]], now: float, *, as_json: bool,
                  location: str) -> str:
    if as_json:
        return json.dumps(
            {"state_path": location, "now": iso(now), "sessions": sessions}, indent=2
        )
    rows = []
    for s in sessions:
        next_attempt = None
        if s["next_attempt_at"] is not None:
            when = now + s["next_attempt_in"]
            next_attempt = f"{_relative(when, now)} ({s['next_attempt_at']})"
        rows.append((s["id"], s["name"], s["class"], s["status"], s["phase"], s["attempts"],
                     next_attempt, s["last_outcome"], s["updated_at"]))
    header = ("SESSION", "NAME", "CLASS", "STATUS", "PHASE", "ATTEMPTS", "NEXT ATTEMPT",
              "LAST OUTCOME", "UPDATED")
    summary = f"{len(sessions)} session(s) in {location}"
    return f"{_table(header, rows)}\n{summary}" if rows else summary


# ------------------------------------------------------------------------ history


def history_item(entry: HistoryEntry) -> dict[str, Any]:
    """One history row, as ``history --json`` shows it."""
    item = msgspec.structs.asdict(entry)
    item["time"] = iso(entry.at)
    item["next_attempt_at"] = iso(entry.next_attempt_at)
    return item


def render_history(entries: list[HistoryEntry], *, as_json: bool, location: str) -> str:
    if as_json:
        return json.dumps(
            {"state_path": location, "history": [history_item(e) for e in entries]}, indent=2
        )
    rows = [
        (iso(e.at), e.session_id, e.event, e.action, e.attempt, e.outcome, e.reason,
         e.http_status, None if e.duration_ms is None else f"{e.duration_ms}ms")
        for e in entries
    ]
    header = ("TIME", "SESSION", "EVENT", "ACTION", "ATTEMPT", "OUTCOME", "REASON", "HTTP",
              "DURATION")
    summary = f"{len(entries)} row(s) from {location}"
    return f"{_table(header, rows)}\n{summary}" if rows else summary
