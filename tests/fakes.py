"""Test doubles shared by the tests, the one home of each: the clocks (virtual time, time
that passes only when a test moves it, and the system clock shifted on demand), the
daemon's scheduler on such a clock, a random without jitter, an in-memory API, an
in-memory alert outbox and a recording alert channel."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import msgspec
from pydantic import SecretStr

from supervisor.alerts.channels import DeliveryFailed
from supervisor.alerts.outbox import Pending
from supervisor.alerts.text import Message
from supervisor.api.errors import ApiError, SessionGone
from supervisor.domain.episodes import Transition
from supervisor.domain.models import SessionInfo, SessionList

if TYPE_CHECKING:
    from supervisor.runtime.daemon import Schedule

_T = TypeVar("_T")


class FakeClock:
    """Virtual time: ``sleep`` advances it instantly and records how long was asked."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.wall = start
        self.mono = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self.advance(seconds)


class ManualClock:
    """Time that passes only when the test says so: ``sleep`` waits until ``advance`` has
    moved the clock past its end. ``sleeping`` counts the sleeps not yet over and
    ``deadlines`` says when they end, so that a test can wait for the code under test to
    be waiting before it moves time on."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.wall = start
        self.mono = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> float:
        return self.wall

    @property
    def sleeping(self) -> int:
        return len(self.deadlines())

    def deadlines(self) -> list[float]:
        """When the sleeps not yet over end (monotonic), soonest first."""
        return sorted(end for end, future in self._sleepers if not future.done())

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds
        for end, future in self._sleepers:
            if end <= self.mono and not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        entry = (self.mono + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)


class VirtualScheduler:
    """The daemon's scheduler (``supervisor.runtime.daemon.PollScheduler``) on a
    ``ManualClock``, as APScheduler's interval trigger behaves: the first run at start,
    then at ``start + k * poll_interval`` plus ``rng.uniform(0, poll_jitter)``; a run that
    comes while the last one still runs is skipped (one instance), missed ones coalesce;
    a reschedule counts from now; ``shutdown`` cancels a run in progress. ``fired`` holds
    the monotonic time of each run."""

    def __init__(self, clock: ManualClock, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random(0)
        self.fired: list[float] = []
        self.skipped = 0
        self.schedules: list[Schedule] = []
        self._job: Callable[[], Awaitable[None]] | None = None
        self._loop: asyncio.Task[None] | None = None
        self._run: asyncio.Future[None] | None = None
        self._running = False

    def start(self, job: Callable[[], Awaitable[None]], schedule: Schedule) -> None:
        self._job, self._running = job, True
        self._begin(schedule, first=self.clock.monotonic())

    def reschedule(self, schedule: Schedule) -> None:
        self._begin(schedule, first=self.clock.monotonic() + schedule.poll_interval)

    def wake(self) -> None:
        if self._running and self.schedules:
            self._begin(self.schedules[-1], first=self.clock.monotonic())

    def pause(self) -> None:
        self._halt()

    def shutdown(self) -> None:
        self._halt()
        self._running = False
        if self._run is not None:
            self._run.cancel()

    def alive(self) -> tuple[bool, str]:
        if self._job is None:
            return False, "scheduler not started"
        if not self._running:
            return False, "scheduler stopped"
        return True, "event loop and scheduler running"

    def _halt(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None

    def _begin(self, schedule: Schedule, first: float) -> None:
        self._halt()
        self.schedules.append(schedule)
        self._loop = asyncio.get_running_loop().create_task(self._fire(schedule, first))

    async def _fire(self, schedule: Schedule, base: float) -> None:
        interval = schedule.poll_interval
        at = base
        while True:
            await self.clock.sleep(at - self.clock.monotonic())
            if self._run is not None and not self._run.done():
                self.skipped += 1
            else:
                assert self._job is not None
                job = self._job
                self.fired.append(self.clock.monotonic())
                self._run = asyncio.ensure_future(job())
            while base <= self.clock.monotonic():  # coalesce the runs missed
                base += interval
            at = base + (self.rng.uniform(0, schedule.poll_jitter)
                         if schedule.poll_jitter else 0.0)


class ShiftableClock:
    """The system clock plus an offset that tests can move forward (no sleeping): for a
    server on threads of its own, whose time must also pass by itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def monotonic(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


class MaxRandom(random.Random):
    """``uniform(a, b)`` always returns ``b``: backoff without jitter, for exact sequences."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeApi:
    """An in-memory stand-in for ``WasendClient`` that records every call.

    ``statuses`` is what the list shows; ``errors`` maps a call name (``list``,
    ``restart``, ``stop``, ``get``) to an exception raised by the next such calls;
    ``after_restart`` is the status a restart leaves behind.
    """

    def __init__(self, statuses: dict[str, str] | None = None) -> None:
        self.statuses: dict[str, str] = dict(statuses or {})
        self.errors: dict[str, list[ApiError]] = {}
        self.after_restart = "STARTING"
        self.calls: list[tuple[str, str]] = []
        self.keys: list[str] = []
        self.hidden: set[str] = set()  # ids the list omits (GET still finds them)
        self.names: dict[str, str] = {}  # a session's name, if not name-<id>

    def fail(self, call: str, *errors: ApiError) -> None:
        self.errors.setdefault(call, []).extend(errors)

    def _maybe_raise(self, call: str) -> None:
        queue = self.errors.get(call)
        if queue:
            raise queue.pop(0)

    async def list_sessions(self) -> SessionList:

        self.calls.append(("list", ""))
        self._maybe_raise("list")
        return SessionList(tuple(
            SessionInfo(sid, self.names.get(sid, f"name-{sid}"), status)
            for sid, status in self.statuses.items() if sid not in self.hidden
        ))

    async def get_session(self, session_id: str, *, spare: bool = False) -> SessionInfo:
        from supervisor.domain.models import SessionInfo

        self.calls.append(("get", session_id))
        self._maybe_raise("get")
        if session_id not in self.statuses:
            raise SessionGone("not found", call="get", http_status=404)
        name = self.names.get(session_id, f"name-{session_id}")
        return SessionInfo(session_id, name, self.statuses[session_id])

    async def restart(self, session_id: str) -> SessionInfo:

        self.calls.append(("restart", session_id))
        self._maybe_raise("restart")
        self.statuses[session_id] = self.after_restart
        return SessionInfo(session_id, None, self.after_restart)

    async def stop(self, session_id: str) -> SessionInfo:

        self.calls.append(("stop", session_id))
        self._maybe_raise("stop")
        self.statuses[session_id] = "STOPPED"
        return SessionInfo(session_id, None, "STOPPED")

    def set_api_key(self, api_key: SecretStr) -> None:
        self.keys.append(api_key.get_secret_value())


class MemoryOutbox:
    """The alert outbox (``supervisor.alerts.outbox.Outbox``) in memory, as the store keeps
    it: one row per channel and transition, ids in the order enqueued. ``rows`` holds the
    rows waiting; ``sent`` the ids marked delivered."""

    def __init__(self) -> None:
        self.rows: dict[int, Pending] = {}
        self.sent: list[int] = []
        self._next = 1

    async def run(self, work: Callable[[], _T]) -> _T:
        return work()

    def enqueue(self, channels: Sequence[str], transitions: Sequence[Transition],
                now: float) -> None:
        for transition in transitions:
            for channel in channels:
                self.rows[self._next] = Pending(self._next, channel, transition, now)
                self._next += 1

    def due(self, channel: str, now: float, limit: int) -> list[Pending]:
        return [row for row in self.rows.values()
                if row.channel == channel and row.next_try_at <= now][:limit]

    def claim(self, ids: Sequence[int], now: float, until: float) -> bool:
        if any(i not in self.rows or self.rows[i].next_try_at > now for i in ids):
            return False
        for row_id in ids:
            self.rows[row_id] = msgspec.structs.replace(self.rows[row_id], next_try_at=until)
        return True

    def delivered(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            if self.rows.pop(row_id, None) is not None:
                self.sent.append(row_id)

    def retry(self, ids: Sequence[int], next_try_at: float) -> None:
        for row_id in ids:
            row = self.rows[row_id]
            self.rows[row_id] = msgspec.structs.replace(
                row, attempts=row.attempts + 1, next_try_at=next_try_at)

    def expire(self, created_before: float) -> int:
        old = [i for i, row in self.rows.items() if row.created_at < created_before]
        for row_id in old:
            del self.rows[row_id]
        return len(old)

    def trim(self, keep: int) -> int:
        extra = sorted(self.rows)[: max(0, len(self.rows) - keep)]
        for row_id in extra:
            del self.rows[row_id]
        return len(extra)

    def pending_count(self) -> int:
        return len(self.rows)


class RecordingChannel:
    """An alert channel that keeps what it is sent; ``failures`` makes the next sends raise
    ``DeliveryFailed``; ``hang`` makes them wait until released."""

    def __init__(self, id: str = "test") -> None:
        self.id = id
        self.messages: list[Message] = []
        self.failures = 0
        self.hang = False
        self._release = asyncio.Event()

    def release(self) -> None:
        self.hang = False
        self._release.set()

    async def send(self, message: Message) -> None:
        if self.hang:
            await self._release.wait()
        if self.failures:
            self.failures -= 1
            raise DeliveryFailed(self.id, "refused by the test")
        self.messages.append(message)
