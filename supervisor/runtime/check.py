"""``check``: one pass for cron, timers and monitoring systems.

Polls once, restarts what needs it (``--dry-run``: decides the same on the API's answer,
and sends and records nothing), waits up to ``--wait`` seconds for restarted sessions to
come back, then reports and exits like a monitoring plugin (Nagios, Icinga and kin):

    0  OK        every session is healthy
    1  WARNING   something was restarted, or is recovering (or, in a dry run, would be
                 restarted), or has an unknown status
    2  CRITICAL  a session failed, was given up on, is gone or needs a person
    3  UNKNOWN   the API could not be asked (unreachable, key refused, unreadable answer),
                 or the state file could not be used (the CLI: also a usage or
                 configuration error)

The report's first line is the verdict: the status word, what is wrong, worst first,
with how many of how many sessions and their names, then performance data after `` | ``
(``CRITICAL: 1 of 100 sessions needs a person (marketing) | sessions=100 healthy=99 ...``);
then the table. Text from the API is shown with its control characters escaped.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TextIO

import msgspec

from supervisor.api.errors import ApiError
from supervisor.domain.models import Phase, Record, SessionInfo
from supervisor.domain.verdict import CRITICAL, LABELS, OK, UNKNOWN, WARNING, phase_verdict
from supervisor.printable import printable, table
from supervisor.runtime.cycle import PollResult, Supervisor

WAIT_STEP = 1.0  # seconds between polls while waiting for restarted sessions


class Row(msgspec.Struct):
    id: str
    name: str | None
    status: str | None
    klass: str
    action: str
    outcome: str
    exit_status: int


# How the verdict names each outcome that is not ``ok`` (one session, several), worst first.
_PROBLEMS: dict[str, tuple[str, str]] = {
    "failed": ("failed to restart", "failed to restart"),
    "gave_up": ("was given up on", "were given up on"),
    "gone": ("is gone", "are gone"),
    "needs_person": ("needs a person", "need a person"),
    "unknown_status": ("has an unknown status", "have an unknown status"),
    "unknown": ("is in an unknown state", "are in an unknown state"),
    "waiting": ("is waiting for its next restart", "are waiting for their next restart"),
    "paused": ("is paused", "are paused"),
    "would_restart": ("would be restarted", "would be restarted"),
    "recovering": ("is recovering", "are recovering"),
    "starting": ("is starting", "are starting"),
    "restarted": ("was restarted", "were restarted"),
}
# The performance data after the verdict's `` | ``: every label on every run, so graphs
# keep their series. Each session is counted in exactly one of the groups after
# ``sessions``, except ``restarted`` (restart requests sent, whatever came of them);
# sessions on hold (a person paused them) are counted in ``paused``, a label shown only
# when there is one, so that a file without holds reports as it always has.
_PERFDATA: dict[str, tuple[str, ...]] = {
    "healthy": ("ok", "restarted"),
    "recovering": ("recovering", "starting", "waiting"),
    "needs_person": ("needs_person",),
    "gave_up": ("gave_up",),
    "gone": ("gone",),
    "restarted": (),  # counted from the actions
    "failed": ("failed",),
    "unknown": ("unknown_status", "unknown"),
    "would_restart": ("would_restart",),
}
VERDICT_NAMES = 3  # sessions named per kind of problem in the verdict; then "+N more"
NAME_WIDTH = 32  # characters of a session name shown in the verdict


def api_problem(error: ApiError | None) -> str:
    """What the verdict says when the API could not be asked: ``API unreachable: ...``."""
    if error is None:
        return "API not asked (poll failed)"
    what = {
        "unreachable": "API unreachable",
        "timeout": "API timed out",
        "auth_failed": "API key refused",
        "rate_limited": "API rate limited",
        "server_error": "API server error",
        "unexpected_response": "API answer unreadable",
    }.get(error.kind, f"API error ({error.kind})")
    return f"{what}: {error}"


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

    def verdict(self) -> str:
        """The first line, as a monitoring plugin's: the status word, what is wrong (the
        worst first, with the sessions' names), and performance data after `` | ``."""
        label = LABELS[self.exit_status]
        if self.error is not None:
            return f"{label}: {_in_verdict(self.error)}"
        total = len(self.rows)
        noun = "session" if total == 1 else "sessions"
        groups: dict[str, list[Row]] = {}
        for row in self.rows:
            if row.outcome != "ok":
                groups.setdefault(row.outcome, []).append(row)
        order = list(_PROBLEMS)
        kinds = sorted(groups, key=lambda k: (-groups[k][0].exit_status,
                                              order.index(k) if k in order else len(order)))
        parts: list[str] = []
        for kind in kinds:
            rows = groups[kind]
            one, many = _PROBLEMS.get(kind, (kind, kind))
            count = str(len(rows)) if parts else f"{len(rows)} of {total} {noun}"
            parts.append(f"{count} {one if len(rows) == 1 else many} ({_names(rows)})")
        if not parts:
            parts = [f"all {total} sessions healthy" if total > 1 else
                     "1 session healthy" if total else "no sessions to supervise"]
        return f"{label}: {'; '.join(parts)} | {self.perfdata()}"

    def perfdata(self) -> str:
        counts = {"sessions": len(self.rows)}
        for label, outcomes in _PERFDATA.items():
            counts[label] = sum(row.outcome in outcomes for row in self.rows)
        counts["restarted"] = sum(row.action == "restart" for row in self.rows)
        paused = sum(row.outcome == "paused" for row in self.rows)
        if paused:
            counts["paused"] = paused
        return " ".join(f"{label}={value}" for label, value in counts.items())

    def to_table(self, *, problems_only: bool = False) -> str:
        """The verdict, then one row per session (``problems_only``: those not ``ok``)."""
        rows = [r for r in self.rows if r.exit_status != OK] if problems_only else self.rows
        if not rows:
            return self.verdict()
        header = ("SESSION", "NAME", "STATUS", "CLASS", "ACTION", "OUTCOME")
        text = table(header, [(r.id, r.name, r.status, r.klass, r.action, r.outcome)
                              for r in rows])
        return f"{self.verdict()}\n{text}"

    def write(self, out: TextIO, *, as_json: bool, quiet: bool = False) -> None:
        """The report on ``out``. ``quiet``: nothing at all when every session is OK;
        otherwise the verdict and, in the table, only the sessions that are not OK."""
        if quiet and self.exit_status == OK:
            return
        text = self.to_json() if as_json else self.to_table(problems_only=quiet)
        out.write(text + "\n")


def _in_verdict(text: str) -> str:
    """Text from outside, fit for the verdict: controls escaped, and ``|`` too, which
    would start the performance data early."""
    return printable(text).replace("|", "\\x7c")


def _names(rows: list[Row]) -> str:
    names = []
    for row in rows[:VERDICT_NAMES]:
        name = _in_verdict(row.name or row.id)
        names.append(name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 3] + "...")
    if len(rows) > VERDICT_NAMES:
        names.append(f"+{len(rows) - VERDICT_NAMES} more")
    return ", ".join(names)


AfterPoll = Callable[[Supervisor, PollResult], Awaitable[object]]


async def run_check(
    supervisor: Supervisor,
    *,
    dry_run: bool = False,
    wait: float = 0.0,
    after_poll: AfterPoll | None = None,
) -> Report:
    """One pass; ``after_poll`` (the alert episodes' ``Alerting.after_poll``) is awaited
    after each poll of it, except in a dry run, which writes nothing."""
    hook = None if dry_run else after_poll
    result = await supervisor.poll(dry_run=dry_run)
    if hook is not None:
        await hook(supervisor, result)
    if not result.ok and result.state_error is not None:
        return Report(UNKNOWN, error=f"state file unusable: {result.state_error}")
    if not result.ok:
        return Report(UNKNOWN, error=api_problem(result.error))
    touched, failed = set(result.touched), set(result.failed)
    seen = {info.session_id: info for info in result.seen}
    if wait > 0 and not dry_run:
        deadline = supervisor.clock.monotonic() + wait
        while _recovering(supervisor, touched) and supervisor.clock.monotonic() < deadline:
            await supervisor.clock.sleep(min(WAIT_STEP, deadline - supervisor.clock.monotonic()))
            again = await supervisor.poll()
            if hook is not None:
                await hook(supervisor, again)
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
        # A dry run reports what it decided on the API's answer, as a real check would
        # after recording it; only the requests (and the writes) are left out.
        if dry_run and session_id in result.decided:
            record = result.decided[session_id]
        else:
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
        return Row(session_id, name, status, klass, action, "unknown", WARNING)
    held = session_id in result.held  # left alone by every cycle: "paused", whatever its phase
    severity, outcome = phase_verdict(record.phase, held=held)
    if held:
        return Row(session_id, name, status, klass, action, outcome, severity)
    if record.phase is Phase.HEALTHY and session_id in touched:
        severity, outcome = WARNING, "restarted"
    elif record.phase is Phase.UNHEALTHY and session_id in failed:
        severity, outcome = CRITICAL, "failed"
    return Row(session_id, name, status, klass, action, outcome, severity)
