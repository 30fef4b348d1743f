"""The daemon shell: scheduling, signal flags, and the graceful stop.

APScheduler runs on the real clock, so these use short intervals and wait on
conditions with a deadline, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import signal

from structlog.testing import capture_logs

from supervisor.clock import SystemClock
from supervisor.domain.models import SessionList
from supervisor.domain.policy import Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.runtime.daemon import Daemon
from supervisor.state.store import MemoryStore
from tests.fakes import FakeApi, MaxRandom
from tests.waiting import until


def make_daemon(api: FakeApi, grace: float = 2.0) -> Daemon:
    sup = Supervisor(api, MemoryStore(), Policy(), SystemClock(), MaxRandom())
    return Daemon(sup, poll_interval=0.05, shutdown_grace=grace)


async def test_polls_on_schedule_and_stops_cleanly_on_sigterm() -> None:
    api = FakeApi({"a": "WORKING"})
    daemon = make_daemon(api)
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


class SlowApi(FakeApi):
    def __init__(self, delay: float) -> None:
        super().__init__({"a": "WORKING"})
        self.delay = delay
        self.started = asyncio.Event()
        self.finished = 0

    async def list_sessions(self) -> SessionList:
        self.started.set()
        await asyncio.sleep(self.delay)
        result = await super().list_sessions()
        self.finished += 1
        return result


async def test_inflight_poll_finishes_within_the_grace_period() -> None:
    api = SlowApi(delay=0.3)
    daemon = make_daemon(api, grace=5)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(api.started.wait(), 5)
    daemon.handle_signal(signal.SIGINT)
    assert await asyncio.wait_for(task, 5) == 0
    assert api.finished == 1  # it was allowed to complete, not cancelled


async def test_inflight_poll_is_cancelled_when_the_grace_period_ends() -> None:
    api = SlowApi(delay=30)
    daemon = make_daemon(api, grace=0.2)
    with capture_logs() as events:
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(api.started.wait(), 5)
        daemon.handle_signal(signal.SIGTERM)
        assert await asyncio.wait_for(task, 5) == 0
    assert api.finished == 0
    assert "daemon.grace_expired" in [e["event"] for e in events]


async def test_a_crashing_poll_does_not_kill_the_daemon() -> None:
    class Broken(FakeApi):
        async def list_sessions(self) -> SessionList:
            raise RuntimeError("bug")

    daemon = make_daemon(Broken())
    with capture_logs() as events:
        task = asyncio.create_task(daemon.run())
        await until(lambda: sum(e["event"] == "poll.crashed" for e in events) >= 2)
        daemon.request_stop()
        assert await asyncio.wait_for(task, 5) == 0
