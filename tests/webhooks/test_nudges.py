"""The re-reads webhooks ask for: one per session however many events, a bounded queue,
a few at a time, and a second read only for a change claimed after the first was sent."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from supervisor.domain import events as ev
from supervisor.webhooks.nudges import Nudges
from tests.fakes import FakeClock
from tests.waiting import until


class Api:
    """A read that waits until released, counting reads and how many at once."""

    def __init__(self, status: str = "FAILED") -> None:
        self.status = status
        self.reads: list[str] = []
        self.now = 0
        self.most = 0
        self.gate = asyncio.Event()

    async def read(self, session: str) -> str | None:
        self.reads.append(session)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.gate.wait()
            return self.status
        finally:
            self.now -= 1


async def running(nudges: Nudges) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(nudges.run(stop))


async def test_many_events_for_one_session_make_one_read() -> None:
    api = Api()
    api.gate.set()
    nudges = Nudges(api.read, FakeClock())
    for _ in range(100):
        assert nudges.offer("s1", "FAILED")
    stop, task = await running(nudges)
    await until(lambda: api.reads and not nudges.waiting)
    for _ in range(50):  # while it is read, or after: the same status claimed
        nudges.offer("s1", "FAILED")
    await until(lambda: len(api.reads) >= 2 or not nudges.waiting)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert api.reads.count("s1") <= 2
    assert nudges.merged >= 99


async def test_a_status_claimed_while_a_read_is_in_flight_is_read_again_only_if_it_differs(
) -> None:
    api = Api(status="FAILED")
    nudges = Nudges(api.read, FakeClock())
    stop, task = await running(nudges)
    nudges.offer("s1", "FAILED")
    await until(lambda: api.reads == ["s1"])
    nudges.offer("s1", "FAILED")  # what the read will say: nothing more to read
    api.gate.set()
    await until(lambda: api.now == 0 and not nudges.waiting)
    assert api.reads == ["s1"]
    api.gate.clear()
    nudges.offer("s1", "FAILED")
    await until(lambda: len(api.reads) == 2)
    nudges.offer("s1", "WORKING")  # a change after this read was sent
    api.gate.set()
    await until(lambda: len(api.reads) == 3)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_reads_are_bounded_in_number_at_once() -> None:
    api = Api()
    nudges = Nudges(api.read, FakeClock(), concurrency=3)
    for i in range(20):
        nudges.offer(f"s{i}", "FAILED")
    stop, task = await running(nudges)
    await until(lambda: api.now == 3)
    assert nudges.waiting == 17
    api.gate.set()
    await until(lambda: len(api.reads) == 20 and api.now == 0)
    assert api.most == 3
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_full_queue_refuses_and_counts() -> None:
    nudges = Nudges(Api().read, FakeClock(), queue_max=2)
    assert nudges.offer("a", "F") and nudges.offer("b", "F")
    assert nudges.offer("a", "F")  # merged: no room needed
    assert not nudges.offer("c", "F")
    assert nudges.refused == 1 and nudges.waiting == 2


async def test_a_read_that_raises_is_logged_and_the_others_go_on() -> None:
    seen: list[str] = []

    async def read(session: str) -> str | None:
        seen.append(session)
        if session == "bad":
            raise RuntimeError("boom")
        return "WORKING"

    nudges = Nudges(read, FakeClock())
    nudges.offer("bad", "F")
    nudges.offer("good", "F")
    with capture_logs() as logs:
        stop, task = await running(nudges)
        await until(lambda: len(seen) == 2 and not nudges.waiting)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert {"event": ev.WEBHOOK_NUDGE_FAILED, "log_level": "warning", "session": "bad",
            "error": "RuntimeError: boom"} in logs


async def test_stop_lets_the_reads_in_flight_finish() -> None:
    api = Api()
    nudges = Nudges(api.read, FakeClock())
    nudges.offer("s1", "F")
    stop, task = await running(nudges)
    await until(lambda: api.now == 1)
    stop.set()
    await asyncio.sleep(0)
    assert not task.done()
    api.gate.set()
    await asyncio.wait_for(task, 5)
    assert api.now == 0


async def test_an_event_that_happened_before_the_last_read_was_sent_is_no_news() -> None:
    api = Api()
    api.gate.set()
    clock = FakeClock(1_000.0)
    nudges = Nudges(api.read, clock)
    stop, task = await running(nudges)
    nudges.offer("s1", "FAILED", at=999.0)
    await until(lambda: api.reads == ["s1"] and not nudges.waiting)
    clock.advance(5.0)
    assert nudges.offer("s1", "FAILED", at=999.5)  # happened before the read: merged
    assert nudges.waiting == 0 and nudges.merged == 1
    assert nudges.offer("s1", "FAILED", at=1_001.0)  # after it: read again
    await until(lambda: api.reads == ["s1", "s1"])
    assert nudges.offer("s1", "FAILED")  # no time said: read again too
    await until(lambda: len(api.reads) == 3)
    stop.set()
    await asyncio.wait_for(task, 5)
