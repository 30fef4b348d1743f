"""``status`` and ``history``: what the state file says, as a table or JSON.

Both read the state file only (opened read-only: nothing is created, migrated or moved),
make no API call and need no API key. ``status`` also says how fresh that is (the last
poll of any process, from their heartbeats; whether a daemon is running on the file; when
each session was last seen) and exits like ``check``: 0 all healthy, 1 something
recovering or waiting, 2 given up, gone or needing a person, 3 stale (no successful poll
for ``--stale-after`` seconds), never polled, or the file cannot be used. Times are shown
in UTC, ISO 8601, with the time from now next to them where that helps (``in 4m10s``,
``2h05m ago``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from supervisor.domain.models import HistoryEntry, Phase, Record
from supervisor.domain.policy import StatusClasses
from supervisor.domain.verdict import LABELS, OK, UNKNOWN, phase_verdict
from supervisor.printable import printable, table
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import Heartbeat, Hold

if TYPE_CHECKING:
    from supervisor.state.postgres import PostgresStore

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


# ------------------------------------------------------------------------- status

# ``status`` exits 3 when the last successful poll of any process is older than this
# (``--stale-after``): at least ten minutes (a ``check`` timer every five, with its random
# delay), or three poll intervals if that is longer.
STALE_AFTER_FLOOR = 600.0
STALE_AFTER_INTERVALS = 3
# A daemon counts as running while its heartbeat is younger than this many of its poll
# intervals plus this slack (a poll busy restarting many sessions beats only when done).
DAEMON_ALIVE_INTERVALS = 3
DAEMON_ALIVE_SLACK = 30.0



def default_stale_after(poll_interval: float) -> float:
    return max(STALE_AFTER_FLOOR, STALE_AFTER_INTERVALS * poll_interval)


def daemon_alive(beat: Heartbeat, now: float, last_write: float | None = None) -> bool:
    """Whether this heartbeat is of a daemon that is still polling: it beat, or wrote a
    record (``last_write``: a long poll restarting many sessions), recently enough, or
    said it waits out a ``Retry-After`` until a time that is not long past."""
    if beat.kind != "run" or beat.poll_interval is None or beat.stopped_at is not None:
        return False
    latest = max(t for t in (beat.seen_at, last_write, beat.waiting_until) if t is not None)
    return now - latest <= DAEMON_ALIVE_INTERVALS * beat.poll_interval + DAEMON_ALIVE_SLACK


def _writer(beat: Heartbeat) -> str:
    """The records' writer a daemon's heartbeat row stands for (see heartbeat_id)."""
    return beat.id.removeprefix(f"{beat.kind}:")


def last_seen(record: Record, beats: Sequence[Heartbeat],
              scopes: Sequence[frozenset[str]]) -> float | None:
    """When the session was last seen: the last successful poll of a process that
    supervises it (every session, or the configured ones including it). A session on
    record that such a poll did not find would have been marked gone; a gone one (or one
    no process has polled for) has None. Derived, so that polls write no row per session."""
    if record.phase is Phase.GONE:
        return None
    best: float | None = None
    for beat, scope in zip(beats, scopes, strict=True):
        if beat.last_ok_at is not None and (not scope or record.session_id in scope):
            best = beat.last_ok_at if best is None else max(best, beat.last_ok_at)
    return best


def session_status(
    record: Record, classes: StatusClasses, now: float, updated_at: float | None,
    seen_at: float | None = None, hold: Hold | None = None,
) -> dict[str, Any]:
    """One session's supervision state, as ``status --json`` shows it (``hold``: the
    session is paused; its outcome is ``paused`` then)."""
    klass = classes.classify(record.last_status).value if record.last_status else "unknown"
    next_at = record.next_attempt_at
    exit_status, outcome = phase_verdict(record.phase, held=hold is not None)
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
        "last_seen": iso(seen_at),
        "last_seen_ago": None if seen_at is None else round(now - seen_at, 3),
        "outcome": outcome,
        "exit_status": exit_status,
        "paused": hold is not None,
        "paused_by": None if hold is None else hold.by,
        "paused_at": None if hold is None else iso(hold.at),
    }


def _process(beat: Heartbeat, now: float, last_write: float | None = None) -> dict[str, Any]:
    return {
        "kind": beat.kind, "host": beat.host, "pid": beat.pid,
        "started_at": iso(beat.started_at),
        "heartbeat_at": iso(beat.seen_at), "heartbeat_ago": round(now - beat.seen_at, 3),
        "last_poll_at": iso(beat.last_poll_at),
        "last_ok_at": iso(beat.last_ok_at),
        "poll_interval": beat.poll_interval,
        "sessions": list(beat.scope) or "all",
        "running": daemon_alive(beat, now, last_write) if beat.kind == "run" else None,
        "stopped_at": iso(beat.stopped_at),
        "waiting_until": iso(beat.waiting_until),
        "last_record_write_at": iso(last_write),
    }


def _poll(beat: Heartbeat, at: float, now: float) -> dict[str, Any]:
    return {"at": iso(at), "ago": round(now - at, 3), "kind": beat.kind, "host": beat.host,
            "pid": beat.pid, "ok": beat.last_ok_at == at}


def status_report(store: SqliteStore | PostgresStore, classes: StatusClasses, now: float,
                  stale_after: float) -> dict[str, Any]:
    """What ``status`` says about the state file: every session, the last poll, whether a
    daemon is running, and an exit status like ``check``'s (3: stale or never polled)."""
    beats = store.heartbeats()
    scopes = [frozenset(beat.scope) for beat in beats]
    holds = store.holds()
    sessions = []
    for record in sorted(store.records(), key=lambda r: r.session_id):
        updated_at = store.updated_at(record.session_id)
        seen_at = last_seen(record, beats, scopes)
        sessions.append(session_status(record, classes, now, updated_at, seen_at,
                                       holds.get(record.session_id)))
    polled = [b for b in beats if b.last_poll_at is not None]
    last_poll = max(polled, key=lambda b: b.last_poll_at or 0.0, default=None)
    good = [b for b in beats if b.last_ok_at is not None]
    last_ok = max(good, key=lambda b: b.last_ok_at or 0.0, default=None)
    writes = store.last_writes()
    wrote = {b.id: writes.get(_writer(b)) for b in beats}
    daemons = [b for b in beats if b.kind == "run"]
    running = [b for b in daemons if daemon_alive(b, now, wrote[b.id])]
    daemon: dict[str, Any] = {"running": bool(running)}
    if running or daemons:
        shown = (running or daemons)[0]
        daemon.update(_process(shown, now, wrote[shown.id]))
    ha = None  # no replicas share an SQLite file
    if not isinstance(store, SqliteStore):
        held = store.lease()
        ha = {"leader": None if held is None or held.expires_in <= 0 else held.replica,
              "epoch": None if held is None else held.epoch,
              "expires_in": None if held is None else round(held.expires_in, 3)}
    paused_until = store.paused_until()
    if paused_until is not None and paused_until <= now:
        paused_until = None
    problem = None
    if last_ok is None or last_ok.last_ok_at is None:
        problem = "no successful poll is recorded in this file"
        exit_status = UNKNOWN
    elif now - last_ok.last_ok_at > stale_after:
        problem = (f"stale: the last successful poll was {span(now - last_ok.last_ok_at)} ago"
                   f" (stale after {span(stale_after)})")
        exit_status = UNKNOWN
    else:
        exit_status = max((s["exit_status"] for s in sessions), default=OK)
    return {
        "exit_status": exit_status,
        "verdict": LABELS[exit_status],
        "problem": problem,
        "now": iso(now),
        "stale_after": stale_after,
        "last_poll": None if last_poll is None or last_poll.last_poll_at is None
        else _poll(last_poll, last_poll.last_poll_at, now),
        "last_successful_poll": None if last_ok is None or last_ok.last_ok_at is None
        else _poll(last_ok, last_ok.last_ok_at, now),
        "daemon": daemon,
        "ha": ha,
        "api_paused_until": iso(paused_until),
        "api_paused_for": None if paused_until is None else round(paused_until - now, 3),
        "processes": [_process(b, now, wrote[b.id]) for b in beats],
        "sessions": sessions,
    }


def _daemon_line(daemon: dict[str, Any]) -> str:
    if "kind" not in daemon:
        return "daemon: none has polled with this file"
    who = f"{daemon['host']} (pid {daemon['pid']})"
    ago = span(daemon["heartbeat_ago"])
    if daemon["running"]:
        every = daemon["poll_interval"]
        every_text = f"{every:g}s" if every < 60 else span(every)
        return f"daemon: running on {who}, heartbeat {ago} ago, polls every {every_text}"
    if daemon["stopped_at"] is not None:
        return f"daemon: none running; the last was {who}, stopped at {daemon['stopped_at']}"
    return (f"daemon: none running; the last was {who}, heartbeat {ago} ago,"
            " no clean stop recorded")


def _leader_line(ha: dict[str, Any]) -> str:
    if ha["leader"] is None:
        if ha["epoch"] is None:
            return "leader: none (no replica holds the lease)"
        return (f"leader: none (the lease of epoch {ha['epoch']} expired "
                f"{span(-ha['expires_in'])} ago; a standby takes it)")
    return (f"leader: {ha['leader']} (epoch {ha['epoch']}, lease expires in "
            f"{span(ha['expires_in'])} unless renewed)")


def _poll_line(label: str, poll: dict[str, Any] | None) -> str:
    if poll is None:
        return f"{label}: none recorded"
    result = "" if label != "last poll" else (": ok" if poll["ok"] else ": failed")
    return (f"{label}: {poll['at']} ({span(poll['ago'])} ago) by {poll['kind']} on"
            f" {poll['host']} (pid {poll['pid']}){result}")


def render_status(report: dict[str, Any], now: float, *, as_json: bool, location: str) -> str:
    if as_json:
        return json.dumps({"state_path": location, **report}, indent=2)
    rows = []
    for s in report["sessions"]:
        next_attempt = None
        if s["next_attempt_at"] is not None:
            when = now + s["next_attempt_in"]
            next_attempt = f"{_relative(when, now)} ({s['next_attempt_at']})"
        seen = None if s["last_seen_ago"] is None else _relative(now - s["last_seen_ago"], now)
        phase = s["phase"] if not s["paused"] else f"{s['phase']}, paused by {s['paused_by']}"
        rows.append((s["id"], s["name"], s["class"], s["status"], phase, s["attempts"],
                     next_attempt, s["last_outcome"], s["updated_at"], seen))
    header = ("SESSION", "NAME", "CLASS", "STATUS", "PHASE", "ATTEMPTS", "NEXT ATTEMPT",
              "LAST OUTCOME", "UPDATED", "LAST SEEN")
    lines = [
        _poll_line("last poll", report["last_poll"]),
        _poll_line("last successful poll", report["last_successful_poll"]),
        _daemon_line(report["daemon"]),
    ]
    if report["ha"] is not None:
        lines.append(_leader_line(report["ha"]))
    if report["api_paused_until"] is not None:
        lines.append(f"api: paused by a Retry-After until {report['api_paused_until']}"
                     f" ({span(report['api_paused_for'])} more); no process sends a request"
                     " before then")
    summary = f"{report['verdict']}: {len(rows)} session(s) in {location}"
    if report["problem"]:
        summary += f"; {report['problem']}"
    # The verdict first, as ``check``'s: what a monitoring system shows of the output.
    shown = [table(header, rows)] if rows else []
    return "\n".join([printable(summary), *shown, *(printable(line) for line in lines)])


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
    summary = printable(f"{len(entries)} row(s) from {location}")
    return f"{table(header, rows)}\n{summary}" if rows else summary
