"""``check``: one pass for cron, timers and monitoring systems.

Polls once, restarts what needs it (``--dry-run``: says what it would do), waits up to
``--wait`` seconds for restarted sessions to come back, then reports a table (or JSON)
and exits like a monitoring plugin:

    0  every session is healthy
    1  something was restarted, or is recovering (or, in a dry run, would be restarted)
    2  a session failed, was given up on, is gone or needs a person
    3  the API could not be asked (unreachable, key refused, unreadable answer), or the
       state file could not be used
"""

from __future__ import annotations

import json
from typing import TextIO

import msgspec

from supervisor.cycle import PollResult, Supervisor
from supervisor.models import Phase, Record, SessionInfo, StatusClass

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
WAIT_STEP = 1.0  # seconds between polls while waiting for restarted sessions

_PHASE_SEVERITY = {
    Phase.HEALTHY: (OK, "ok"),
    Phase.VERIFYING: (WARNING, "recovering"),
    Phase.STARTING: (WARNING, "starting"),
    Phase.UNHEALTHY: (WARNING, "waiting"),
    Phase.UNKNOWN: (WARNING, "unknown_status"),
    Phase.GAVE_UP: (CRITICAL, "gave_up"),
    Phase.GONE: (CRITICAL, "gone"),
    Phase.NEEDS_PERSON: (CRITICAL, "needs_person"),
}


def phase_verdict(phase: Phase) -> tuple[int, str]:
    """The exit status and outcome a record's phase stands for (``status`` uses it too)."""
    return _PHASE_SEVERITY[phase]


class Row(msgspec.Struct):
    id: str
    name: str | None
    status: str | None
    klass: str
    action: str
    outcome: str
    exit_status: int


class Report(msgspec.Struct):
    exit_status: int
    rows: list[Row] = msgspec.field(default_factory=list)
    error: str | None = None

    def to_json(self) -> str:
        sessions = []
        for row in self.rows:
            item = msgspec.structs.asdict(row)
            item["class"] = item.pop("klass")
            sessions.append(item)
        return json.dumps(
            {"exit_status": self.exit_status, "error": self.error, "sessions": sessions},
            indent=2,
        )

    def to_table(self) -> str:
        header = ("SESSION", "NAME", "STATUS", "CLASS", "ACTION", "OUTCOME")
        lines = [header] + [
            (r.id, r.name or "-", r.status or "-", r.klass, r.action, r.outcome)
            for r in self.rows
        ]
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        text = [
            "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        ]
        verdict = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
        summary = f"{verdict[self.exit_status]}: {len(self.rows)} session(s)"
        if self.error:
            summary += f"; {self.error}"
        return "\n".join([*text, summary]) if self.rows else summary

    def write(self, out: TextIO, *, as_json: bool) -> None:
        out.write((self.to_json() if as_json else self.to_table()) + "\n")


async def run_check(supervisor: Supervisor, *, dry_run: bool = False, wait: float = 0.0) -> Report:
    result = await supervisor.poll(dry_run=dry_run)
    if not result.ok and result.state_error is not None:
        return Report(UNKNOWN, error=f"the state file could not be used ({result.state_error})")
    if not result.ok:
        error = result.error
        detail = f"{error.kind}: {error}" if error is not None else "poll failed"
        return Report(UNKNOWN, error=f"the API could not be asked ({detail})")
    touched, failed = set(result.touched), set(result.failed)
    seen = {info.session_id: info for info in result.seen}
    if wait > 0 and not dry_run:
        deadline = supervisor.clock.monotonic() + wait
        while _recovering(supervisor, touched) and supervisor.clock.monotonic() < deadline:
            await supervisor.clock.sleep(min(WAIT_STEP, deadline - supervisor.clock.monotonic()))
            again = await supervisor.poll()
            if again.ok:
                touched |= again.touched
                failed |= again.failed
                seen.update((info.session_id, info) for info in again.seen)
    return _report(supervisor, result, seen, touched, failed, dry_run)


def _recovering(supervisor: Supervisor, touched: set[str]) -> bool:
    for session_id in touched:
        record = supervisor.store.get(session_id)
        if record is not None and record.phase in (Phase.VERIFYING, Phase.STARTING):
            return True
    return False


def _report(
    supervisor: Supervisor,
    result: PollResult,
    seen: dict[str, SessionInfo],
    touched: set[str],
    failed: set[str],
    dry_run: bool,
) -> Report:
    rows: list[Row] = []
    ids = list(seen)
    ids += [s for s in supervisor.configured if s not in seen]
    for session_id in ids:
        record = supervisor.store.get(session_id)
        info = seen.get(session_id)
        rows.append(_row(supervisor, session_id, info, record, result, touched, failed, dry_run))
    worst = max((row.exit_status for row in rows), default=OK)
    return Report(worst, rows)


def _row(
    supervisor: Supervisor,
    session_id: str,
    info: SessionInfo | None,
    record: Record | None,
    result: PollResult,
    touched: set[str],
    failed: set[str],
    dry_run: bool,
) -> Row:
    status = info.status if info is not None else (record.last_status if record else None)
    name = info.name if info is not None else (record.name if record else None)
    klass = supervisor.policy.classes.classify(status).value if status else "unknown"
    planned = result.planned.get(session_id)
    if dry_run and planned is not None:
        return Row(session_id, name, status, klass, f"would_{planned.kind.value}", "would_restart",
                   WARNING)
    action = "restart" if session_id in touched else "none"
    if record is None:
        if dry_run and klass == StatusClass.HEALTHY.value:
            return Row(session_id, name, status, klass, action, "ok", OK)
        if dry_run and klass == StatusClass.NEEDS_PERSON.value:
            return Row(session_id, name, status, klass, action, "needs_person", CRITICAL)
        return Row(session_id, name, status, klass, action, "unknown", WARNING)
    severity, outcome = _PHASE_SEVERITY[record.phase]
    if record.phase is Phase.HEALTHY and session_id in touched:
        severity, outcome = WARNING, "restarted"
    elif record.phase is Phase.UNHEALTHY and session_id in failed:
        severity, outcome = CRITICAL, "failed"
    return Row(session_id, name, status, klass, action, outcome, severity)
