"""The daemon shell: scheduling, signal flags, and the graceful stop.

Most of these run the daemon on a ``ManualClock`` with the ``VirtualScheduler``
(tests/fakes.py): time passes only when the test moves it, so polls, jitter, reschedules
and the shutdown grace are exact and nothing waits for real. One test runs APScheduler
itself, on the real clock, end to end (short intervals, conditions with deadlines).
"""

from __future__ import annotations

import asyncio
import random
import signal

from structlog.testing import capture_logs

from supervisor.clock import SystemClock
from supervisor.domain.models import SessionList
from supervisor.domain.policy import Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.runtime.daemon import Daemon, Schedule
from supervisor.state.store import MemoryStore
from tests.fakes import FakeApi, ManualClock, MaxRandom, VirtualScheduler
from tests.waiting import until


class Virtual:
    """A daemon on virtual time: its clock, its scheduler, and the task running it."""

    def __init__(self, api: FakeApi, *, interval: float = 10.0, grace: float = 2.0,
                 jitter: float = 0.0) -> None:
        self.clock = ManualClock()
        self.scheduler = VirtualScheduler(self.clock, random.Random(7))
        sup = Supervisor(api, MemoryStore(), Policy(), self.clock, MaxRandom())
        self.daemon = Daemon(sup, poll_interval=interval, shutdown_grace=grace,
                             poll_jitter=jitter, scheduler=self.scheduler, clock=self.clock)
        self.task: asyncio.Task[int] | None = None

    async def start(self, polls: int = 1) -> None:
        self.task = asyncio.create_task(self.daemon.run())
        await self.polled(polls)

    async def polled(self, polls: int) -> None:
        await until(lambda: self.daemon.polls >= polls,
                    describe=lambda: f"{self.daemon.polls} polls, fired {self.scheduler.fired}")

    async def advance(self, seconds: float) -> None:
        """Move time on once the daemon is waiting (its scheduler, at least, sleeps)."""
        await until(lambda: self.clock.sleeping >= 1, describe="nothing waits on the clock")
        self.clock.advance(seconds)

    async def grace_begun(self) -> None:
        """Wait until the stop waits out its grace on the clock."""
        end = self.clock.monotonic() + self.daemon.shutdown_grace
        await until(lambda: end in self.clock.deadlines(),
                    describe=lambda: f"sleeps end at {self.clock.deadlines()}, not {end}")

    async def stopped(self) -> int:
        assert self.task is not None
        return await asyncio.wait_for(self.task, 5)


async def test_polls_on_schedule_and_stops_cleanly_on_sigterm() -> None:
    """APScheduler itself, on the real clock: the one end-to-end run of the scheduler."""
    sup = Supervisor(FakeApi({"a": "WORKING"}), MemoryStore(), Policy(), SystemClock(),
                     MaxRandom())
    daemon = Daemon(sup, poll_interval=0.05, shutdown_grace=2.0)
    with capture_logs() as events:
        task = asyncio.create_task(daemon.run())
        await until(lambda: daemon.polls >= 3)
        daemon.handle_signal(signal.SIGTERM)
        assert await asyncio.wait_for(task, 5) == 0
    names = [e["event"] for e in events]
    assert names[0] == "daemon.started" and names[-1] == "daemon.stopped"
    assert next(e for e in events if e["event"] == "daemon.stopping")["signal"] == "SIGTERM"
    # Nothing is scheduled after the stop: the scheduler itself is shut down, and the
    # polls counted are the ones the last event reported.
    assert daemon.alive() == (False, "scheduler stopped")
    assert events[-1]["polls"] == daemon.polls


async def test_the_first_poll_is_at_once_and_the_next_ones_every_interval() -> None:
    run = Virtual(FakeApi({"a": "WORKING"}), interval=10.0)
    await run.start()
    start = run.clock.monotonic()
    assert run.scheduler.schedules == [Schedule(10.0, 2.0, 0.0)]
    await run.advance(9.9)
    assert run.daemon.polls == 1  # not yet: nothing fires early
    await run.advance(0.1)
    await run.polled(2)
    await run.advance(25.0)  # two runs missed while time jumped: coalesced into one
    await run.polled(3)
    assert run.scheduler.fired == [start, start + 10.0, start + 35.0]
    run.daemon.request_stop()
    assert await run.stopped() == 0
    assert run.daemon.alive() == (False, "scheduler stopped")


async def test_jitter_delays_each_poll_by_up_to_poll_jitter() -> None:
    run = Virtual(FakeApi({"a": "WORKING"}), interval=10.0, jitter=3.0)
    await run.start()
    start = run.clock.monotonic()
    while run.clock.monotonic() < start + 45.0:  # in steps of 0.25 s
        await run.advance(0.25)
    await run.polled(len(run.scheduler.fired))
    run.daemon.request_stop()
    assert await run.stopped() == 0
    offsets = [t - start - 10.0 * k for k, t in enumerate(run.scheduler.fired)]
    assert len(offsets) == 5 and offsets[0] == 0.0
    assert all(0.0 <= offset <= 3.0 + 0.25 for offset in offsets[1:]), offsets
    assert len({round(offset, 2) for offset in offsets[1:]}) > 1  # not one fixed delay


async def test_a_new_schedule_reschedules_the_poll_job_from_now() -> None:
    run = Virtual(FakeApi({"a": "WORKING"}), interval=3600.0)
    await run.start()
    await run.advance(100.0)
    switched = run.clock.monotonic()
    run.daemon.switch(run.daemon.supervisor, Schedule(5.0, 7.0, 0.0))
    assert run.daemon.shutdown_grace == 7.0
    await run.advance(5.0)
    await run.polled(2)
    assert run.scheduler.fired[1] == switched + 5.0
    # The same interval and jitter (only the grace changed): the job is left as it is.
    run.daemon.switch(run.daemon.supervisor, Schedule(5.0, 1.0, 0.0))
    assert len(run.scheduler.schedules) == 2
    run.daemon.request_stop()
    assert await run.stopped() == 0


class SlowApi(FakeApi):
    """A list that takes ``delay`` seconds of the test's clock."""

    def __init__(self, clock: ManualClock, delay: float) -> None:
        super().__init__({"a": "WORKING"})
        self.clock = clock
        self.delay = delay
        self.started = asyncio.Event()
        self.finished = 0

    async def list_sessions(self) -> SessionList:
        self.started.set()
        await self.clock.sleep(self.delay)
        result = await super().list_sessions()
        self.finished += 1
        return result


def slow(delay: float, grace: float) -> tuple[Virtual, SlowApi]:
    run = Virtual(FakeApi(), grace=grace)
    api = SlowApi(run.clock, delay)
    run.daemon.supervisor.client = api
    return run, api


async def test_inflight_poll_finishes_within_the_grace_period() -> None:
    run, api = slow(delay=0.3, grace=5)
    await run.start(polls=0)
    await asyncio.wait_for(api.started.wait(), 5)
    run.daemon.handle_signal(signal.SIGINT)
    await run.grace_begun()
    run.clock.advance(0.3)
    assert await run.stopped() == 0
    assert api.finished == 1  # it was allowed to complete, not cancelled


async def test_inflight_poll_is_cancelled_when_the_grace_period_ends() -> None:
    run, api = slow(delay=30, grace=0.2)
    with capture_logs() as events:
        await run.start(polls=0)
        await asyncio.wait_for(api.started.wait(), 5)
        run.daemon.handle_signal(signal.SIGTERM)
        await run.grace_begun()
        run.clock.advance(0.2)
        assert await run.stopped() == 0
    assert api.finished == 0
    assert "daemon.grace_expired" in [e["event"] for e in events]


async def test_a_crashing_poll_does_not_kill_the_daemon() -> None:
    class Broken(FakeApi):
        async def list_sessions(self) -> SessionList:
            raise RuntimeError("bug")

    run = Virtual(Broken(), interval=10.0)
    with capture_logs() as events:
        await run.start(polls=0)
        await until(lambda: len(run.scheduler.fired) == 1)
        await run.advance(10.0)
        await until(lambda: sum(e["event"] == "poll.crashed" for e in events) >= 2)
        run.daemon.request_stop()
        assert await run.stopped() == 0
    assert run.daemon.polls == 0
