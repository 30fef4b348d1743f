"""Sessions and their life cycle.

Transitions are computed lazily: a session stores its status and the times of the
events ahead of it (the end of a start, the next scheduled failure that concerns it,
its next random failure), and :meth:`SessionTable.advance` applies every event that is
due, in time order, when the session is read. Nothing runs in the background, so a
test with a :class:`~.clock.ManualClock` sees exactly the transitions it asked for.

Random failures follow a per-second probability ``p``: the time to the next failure of
a healthy session is drawn, when it becomes healthy, from an exponential distribution
with rate ``-ln(1 - p)`` (so the chance to survive ``t`` seconds is ``(1 - p) ** t``).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from . import render, statuses
from .faults import Faults, ScheduledFailure
from .scenario import SessionSpec

INF: Final = math.inf
USER_ID: Final = "65f1c0de5e55104400000001"
USER_EMAIL: Final = "owner@simulator.invalid"


class UnknownSession(KeyError):
    """No session has this id."""

    def __str__(self) -> str:
        return f"no session {self.args[0]!r}"


@dataclass(slots=True, eq=False)
class SessionState:
    """One session: its fixed fields, its status and its pending events."""

    uid: str
    db_id: str
    session_name: str
    name: str
    phone_number: str
    created_at: str
    status: str
    updated_json: str
    user_id: str = USER_ID
    enable_account_protection: bool = False
    enable_message_logging: bool = False
    enable_webhook: bool = False
    webhook_url: str = ""
    outcome: tuple[str, ...] | None = None
    zombie: bool = False  # the engine says not connected, whatever the status; any
    # change of status (a stop, a start, a restart, the admin API) ends it
    starts: int = 0
    restarts: int = 0
    stops: int = 0
    pending_at: float = INF
    pending_status: str = ""
    fail_at: float = INF
    sched_idx: int = 0
    sched_at: float = INF
    next_at: float = INF
    entered_at: float = 0.0  # monotonic: when it entered its status (the QR codes count from it)
    changed_ms: int = 0  # wall time of the last status change, in milliseconds
    history: tuple[tuple[str, int], ...] = ()  # the last statuses, kept while webhooks are on
    prefix: str = field(default="", repr=False)
    name_json: str = field(default="", repr=False)
    config_json: str = field(default="", repr=False)

    def prepare(self) -> None:
        """(Re)build the static JSON fragments after a fixed field changed."""
        self.prefix = render.details_prefix(self)
        self.name_json = render.dumps(self.name)
        self.config_json = render.config_json(
            self.user_id, USER_EMAIL, self.webhook_url if self.enable_webhook else None
        )


class Verdict(NamedTuple):
    """The result of start, stop or restart: ``code`` 200 on success, else the error."""

    code: int
    message: str = ""


OK: Final = Verdict(200)


ChangeHook = Callable[[SessionState], None]
HISTORY: Final = 5


def generated_id(number: int) -> str:
    return f"sess-{number:04d}"


class SessionTable:
    """All sessions and the life-cycle rules. Not thread-safe: the Simulator locks."""

    def __init__(self, faults: Faults, rng: random.Random, t0: float) -> None:
        self.sessions: dict[str, SessionState] = {}
        self.faults = faults
        self.rng = rng
        self.t0 = t0
        self._serial = 0
        self._db_serial = 0
        self._sched: tuple[ScheduledFailure, ...] = ()
        self._sched_times: list[float] = []
        self._lam = 0.0
        self._set_schedule(faults)
        # Set while webhooks are on: called after each change of a session's status.
        self.on_change: ChangeHook | None = None
        # The background timer's view: a heap of (next_at, n, session), kept only while
        # ``track_due``; ``on_sooner`` is called when a session falls due before
        # ``planned``, the time the timer plans to wake.
        self._due: list[tuple[float, int, SessionState]] = []
        self._tie = itertools.count()
        self.track_due = False
        self.planned = INF
        self.on_sooner: Callable[[], None] | None = None

    # -- creation -----------------------------------------------------------------

    def next_generated_id(self) -> str:
        while True:
            self._serial += 1
            uid = generated_id(self._serial)
            if uid not in self.sessions:
                return uid

    def add(self, spec: SessionSpec, now: float, offset: float) -> SessionState:
        """Create a session from ``spec``; its id must be new."""
        if spec.id in self.sessions:
            raise ValueError(f"session {spec.id!r} already exists")
        self._db_serial += 1
        serial = self._db_serial
        stamp = render.iso(now + offset)
        s = SessionState(
            uid=spec.id,
            db_id=f"65f1c0de{serial:016x}",
            session_name=spec.session_name or f"Session {spec.id}",
            name=spec.name or spec.id,
            phone_number=spec.phone_number or f"+1555{serial % 10_000_000:07d}",
            created_at=stamp,
            status=spec.status,
            updated_json=f'"{stamp}"',
            enable_account_protection=spec.enable_account_protection,
            enable_message_logging=spec.enable_message_logging,
            enable_webhook=spec.enable_webhook,
            webhook_url=spec.webhook_url or f"https://hooks.simulator.invalid/wasend/{spec.id}",
            outcome=spec.outcome,
            zombie=spec.zombie,
            entered_at=now,
            changed_ms=round((now + offset) * 1000),
        )
        s.prepare()
        self.sessions[spec.id] = s
        self._draw_failure(s, now)
        self._seek_schedule(s, bisect.bisect_left(self._sched_times, now))
        return s

    def remove(self, uid: str) -> None:
        if self.sessions.pop(uid, None) is None:
            raise UnknownSession(uid)

    def get(self, uid: str) -> SessionState:
        s = self.sessions.get(uid)
        if s is None:
            raise UnknownSession(uid)
        return s

    # -- lazy evaluation ----------------------------------------------------------

    def advance(self, s: SessionState, now: float, offset: float) -> SessionState:
        """Apply every event due for ``s`` up to ``now``, in time order."""
        while s.next_at <= now:
            t = s.next_at
            if s.sched_at == t:
                event = self._sched[s.sched_idx]
                self._enter(s, event.status, t, offset)
                self._seek_schedule(s, s.sched_idx + 1)
            elif s.pending_at == t:
                self._enter(s, s.pending_status, t, offset)
            else:
                self._enter(s, self.faults.random_failures.status, t, offset)
        return s

    def advance_all(self, now: float, offset: float) -> Iterator[SessionState]:
        for s in self.sessions.values():
            if s.next_at <= now:
                self.advance(s, now, offset)
            yield s

    def _enter(self, s: SessionState, status: str, t: float, offset: float) -> None:
        old = s.status
        s.status = status
        s.zombie = False
        s.entered_at = t
        s.updated_json = f'"{render.iso(t + offset)}"'
        s.pending_at = INF
        ms = round((t + offset) * 1000)
        hook = self.on_change
        if hook is not None and status != old:
            earlier = s.history or ((old, s.changed_ms),)
            s.history = (*earlier, (status, ms))[-HISTORY:]
        s.changed_ms = ms
        self._draw_failure(s, t)
        if hook is not None and status != old:
            hook(s)

    def _refresh(self, s: SessionState) -> None:
        s.next_at = at = min(s.pending_at, s.sched_at, s.fail_at)
        if self.track_due and at < INF:
            heapq.heappush(self._due, (at, next(self._tie), s))
            if at < self.planned and self.on_sooner is not None:
                self.planned = at
                self.on_sooner()

    # -- the background timer -------------------------------------------------------

    def set_tracking(self, on: bool) -> None:
        """Keep (or stop keeping) the heap of due times the background timer reads."""
        self.track_due = on
        self._due = []
        if on:
            self._due = [(s.next_at, next(self._tie), s)
                         for s in self.sessions.values() if s.next_at < INF]
            heapq.heapify(self._due)

    def advance_due(self, now: float, offset: float) -> float:
        """Apply every event due up to ``now``; return when the next one is due (or INF)."""
        heap = self._due
        self.planned = -INF  # no wake-ups for what this very call plans
        while heap and heap[0][0] <= now:
            at, _, s = heapq.heappop(heap)
            if s.next_at == at and self.sessions.get(s.uid) is s:
                self.advance(s, now, offset)
        while heap and (heap[0][2].next_at != heap[0][0]
                        or self.sessions.get(heap[0][2].uid) is not heap[0][2]):
            heapq.heappop(heap)  # stale: that session was re-planned or removed
        if len(heap) > 2 * len(self.sessions) + 1024:
            self.set_tracking(True)  # drop the stale entries
        self.planned = heap[0][0] if heap else INF
        return self.planned

    def _draw_failure(self, s: SessionState, t: float) -> None:
        rf = self.faults.random_failures
        if (
            rf.rate > 0
            and s.status.upper() in statuses.HEALTHY
            and (rf.sessions is None or s.uid in rf.sessions)
        ):
            s.fail_at = t if self._lam == INF else t + self.rng.expovariate(self._lam)
        else:
            s.fail_at = INF
        self._refresh(s)

    def _seek_schedule(self, s: SessionState, index: int) -> None:
        sched = self._sched
        while index < len(sched) and not _concerns(sched[index], s.uid):
            index += 1
        s.sched_idx = index
        s.sched_at = self._sched_times[index] if index < len(sched) else INF
        self._refresh(s)

    def _set_schedule(self, faults: Faults) -> None:
        self._sched = faults.scheduled_failures
        self._sched_times = [self.t0 + f.at for f in self._sched]
        rate = faults.random_failures.rate
        self._lam = INF if rate >= 1 else -math.log1p(-rate)

    def configure(self, faults: Faults, now: float, offset: float, *, redraw: bool) -> None:
        """Switch to new faults at ``now``: settle every session first, then re-plan.

        Random failures are drawn again when their settings changed (or ``redraw``),
        the schedule is re-read when it changed; events before ``now`` do not fire.
        """
        for _ in self.advance_all(now, offset):
            pass
        old = self.faults
        self.faults = faults
        self._set_schedule(faults)
        new_draws = redraw or faults.random_failures != old.random_failures
        new_schedule = faults.scheduled_failures != old.scheduled_failures
        if not (new_draws or new_schedule):
            return
        first = bisect.bisect_left(self._sched_times, now)
        for s in self.sessions.values():
            if new_draws:
                self._draw_failure(s, now)
            if new_schedule:
                self._seek_schedule(s, first)

    # -- operations ---------------------------------------------------------------

    def set_status(self, s: SessionState, status: str, now: float, offset: float) -> None:
        """Put ``s`` in ``status`` at once (no pending transition follows)."""
        self.advance(s, now, offset)
        self._enter(s, status, now, offset)

    def set_zombie(self, s: SessionState, zombie: bool, now: float, offset: float) -> None:
        """Have the engine report ``s`` not connected (or connected again), its status kept;
        a change of status ends it."""
        self.advance(s, now, offset)
        s.zombie = zombie

    def set_outcome(self, s: SessionState, outcome: tuple[str, ...] | None) -> None:
        """Give ``s`` its own outcome sequence (None: the global one), from its next start."""
        s.outcome = outcome
        s.starts = 0

    def restart(self, s: SessionState, now: float, offset: float) -> Verdict:
        self.advance(s, now, offset)
        current = s.status.upper()
        if current in statuses.RUNNING:
            return Verdict(409, f"Session {s.uid} is already running ({s.status})")
        if current in statuses.BROKEN and self.faults.conflict_on_failed_restart:
            return Verdict(
                409,
                f"Session {s.uid} is in {s.status} state; "
                "the session must be in a STOPPED state to be restarted",
            )
        s.restarts += 1
        self._begin_start(s, now, offset)
        return OK

    def start(self, s: SessionState, now: float, offset: float) -> Verdict:
        self.advance(s, now, offset)
        allowed = (
            {statuses.STOPPED, statuses.CREATED}
            if self.faults.start_only_from_stopped
            else statuses.STARTABLE
        )
        if s.status.upper() not in allowed:
            return Verdict(422, f"Session {s.uid} is already started (status {s.status})")
        self._begin_start(s, now, offset)
        return OK

    def stop(self, s: SessionState, now: float, offset: float) -> Verdict:
        self.advance(s, now, offset)
        s.stops += 1
        self._enter(s, statuses.STOPPED, now, offset)
        return OK

    def next_outcome(self, s: SessionState) -> str:
        sequence = s.outcome or self.faults.outcome
        return sequence[min(s.starts, len(sequence) - 1)]

    def _begin_start(self, s: SessionState, now: float, offset: float) -> None:
        outcome = self.next_outcome(s)
        s.starts += 1
        self._enter(s, statuses.STARTING, now, offset)
        if outcome != statuses.STARTING:  # STARTING as an outcome: stuck there
            s.pending_at = now + self.faults.start_delay
            s.pending_status = outcome
            self._refresh(s)

    # -- views --------------------------------------------------------------------

    def raw(self, s: SessionState, now: float) -> dict[str, Any]:
        """The admin view of one session (call :meth:`advance` first)."""

        def due(at: float) -> float | None:
            return None if at == INF else round(at - now, 6)

        pending = (
            None if s.pending_at == INF else {"status": s.pending_status, "in": due(s.pending_at)}
        )
        scheduled = (
            None
            if s.sched_at == INF
            else {"status": self._sched[s.sched_idx].status, "in": due(s.sched_at)}
        )
        return {
            "id": s.uid,
            "status": s.status,
            "zombie": s.zombie,
            "pending": pending,
            "next_scheduled_failure": scheduled,
            "next_random_failure_in": due(s.fail_at),
            "outcome": list(s.outcome or self.faults.outcome),
            "outcome_is_own": s.outcome is not None,
            "next_outcome": self.next_outcome(s),
            "starts": s.starts,
            "restarts": s.restarts,
            "stops": s.stops,
        }


def _concerns(event: ScheduledFailure, uid: str) -> bool:
    return event.sessions is None or uid in event.sessions


def specs_for(
    count: int, initial_status: str, explicit: Iterable[SessionSpec]
) -> list[SessionSpec]:
    """Generated sessions ``sess-0001``… followed by (or redefined by) explicit ones."""
    specs = {
        generated_id(i): SessionSpec(id=generated_id(i), status=initial_status)
        for i in range(1, count + 1)
    }
    for spec in explicit:
        specs[spec.id] = spec
    return list(specs.values())
