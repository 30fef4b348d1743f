"""The sender, on a fake clock and an in-memory outbox: grouping, the window, order, retries
with backoff per channel, a hanging channel bounded, drops by age and size, routing."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog

from supervisor.alerts.channels import AlertmanagerChannel, AppriseChannel, DeliveryFailed, routed
from supervisor.alerts.outbox import Outbox, Pending
from supervisor.alerts.sender import Sender, groups
from supervisor.alerts.text import Message
from supervisor.domain import events as ev
from supervisor.domain.episodes import Change, Episode, Kind, Transition
from supervisor.domain.policy import Backoff
from tests.fakes import FakeClock, ManualClock, MaxRandom, MemoryOutbox, RecordingChannel
from tests.waiting import until

WINDOW = 10.0


def opened(subject: str, at: float, kind: Kind = Kind.NEEDS_PERSON) -> Transition:
    return Transition(Change.OPENED, Episode(kind, subject, at, f"name-{subject}",
                                             "SCAN_QR_CODE"), at)


def resolved(transition: Transition, at: float) -> Transition:
    return Transition(Change.RESOLVED, transition.episode, at)


def sender(outbox: MemoryOutbox, *channels: RecordingChannel, clock: FakeClock | None = None,
           queue_max: int = 10_000) -> Sender:
    return Sender(outbox, channels, clock or FakeClock(), group_window=WINDOW, max_age=3600.0,
                  queue_max=queue_max, send_timeout=5.0, rng=MaxRandom(),
                  backoff=Backoff(initial=5.0, max=300.0), host="box")


def subjects(channel: RecordingChannel) -> list[list[str]]:
    return [[t.episode.subject for t in m.transitions] for m in channel.messages]


def test_the_memory_outbox_is_an_outbox() -> None:
    outbox: Outbox = MemoryOutbox()
    assert outbox.pending_count() == 0


async def test_transitions_within_the_window_go_out_as_one_message_once_it_has_passed() -> None:
    clock, outbox, channel = FakeClock(), MemoryOutbox(), RecordingChannel("c")
    now = clock.now()
    outbox.enqueue(["c"], [opened("a", now), opened("b", now + 3), opened("c", now + 9)], now)
    send = sender(outbox, channel, clock=clock)
    report = await send.run_once(now + 9.5)
    assert channel.messages == [] and report.next_at == now + WINDOW
    report = await send.run_once(now + WINDOW)
    assert subjects(channel) == [["a", "b", "c"]]
    assert report.sent == 1 and outbox.pending_count() == 0
    assert channel.messages[0].title == "3 WhatsApp sessions need a person"


async def test_a_storm_of_a_thousand_is_one_message_naming_every_session() -> None:
    clock, outbox, channel = FakeClock(), MemoryOutbox(), RecordingChannel("c")
    now = clock.now()
    outbox.enqueue(["c"], [opened(f"s{i}", now) for i in range(1000)], now)
    await sender(outbox, channel, clock=clock).run_once(now + WINDOW)
    assert len(channel.messages) == 1
    assert all(f"(s{i})" in channel.messages[0].body for i in range(1000))


async def test_transitions_further_apart_than_the_window_are_separate_messages() -> None:
    clock, outbox, channel = FakeClock(), MemoryOutbox(), RecordingChannel("c")
    now = clock.now()
    outbox.enqueue(["c"], [opened("a", now), opened("b", now + 11)], now + 11)
    send = sender(outbox, channel, clock=clock)
    await send.run_once(now + 15)
    assert subjects(channel) == [["a"]]
    await send.run_once(now + 21)
    assert subjects(channel) == [["a"], ["b"]]


async def test_kinds_and_changes_are_never_mixed_in_one_message() -> None:
    clock, outbox, channel = FakeClock(), MemoryOutbox(), RecordingChannel("c")
    now = clock.now()
    first = opened("a", now)
    outbox.enqueue(["c"], [first, opened("g", now + 1, Kind.GONE), resolved(first, now + 2)],
                   now + 2)
    await sender(outbox, channel, clock=clock).run_once(now + 20)
    assert [(m.kind, m.change) for m in channel.messages] == [
        (Kind.NEEDS_PERSON, Change.OPENED), (Kind.GONE, Change.OPENED),
        (Kind.NEEDS_PERSON, Change.RESOLVED)]


async def test_an_episode_is_never_resolved_before_it_is_opened() -> None:
    """A resolves, then B opens and resolves within A's window: B's resolution may not
    join A's group, which would go out before B's opening."""
    now = 1_700_000_000.0
    a, b = opened("a", now - 100), opened("b", now + 1)
    rows = [Pending(1, "c", resolved(a, now), now), Pending(2, "c", b, now + 1),
            Pending(3, "c", resolved(b, now + 2), now + 2)]
    built = groups(rows, WINDOW)
    assert [[r.id for r in g.rows] for g in built] == [[1], [2], [3]]
    clock, outbox, channel = FakeClock(now), MemoryOutbox(), RecordingChannel("c")
    outbox.enqueue(["c"], [r.transition for r in rows], now + 2)
    await sender(outbox, channel, clock=clock).run_once(now + 30)
    assert [(m.change, [t.episode.subject for t in m.transitions]) for m in channel.messages] == [
        (Change.RESOLVED, ["a"]), (Change.OPENED, ["b"]), (Change.RESOLVED, ["b"])]


async def test_a_failed_send_is_retried_with_backoff_and_holds_only_its_own_channel() -> None:
    clock, outbox = FakeClock(), MemoryOutbox()
    down, up = RecordingChannel("down"), RecordingChannel("up")
    down.failures = 2
    now = clock.now()
    outbox.enqueue(["down", "up"], [opened("a", now)], now)
    send = sender(outbox, down, up, clock=clock)
    clock.advance(WINDOW)
    with structlog.testing.capture_logs() as logs:
        report = await send.run_once(clock.now())
    assert subjects(up) == [["a"]] and down.messages == []
    assert report.sent == 1 and report.failed == 1
    assert report.next_at == clock.now() + 5.0  # Backoff.cap(0), no jitter (MaxRandom)
    failed = [e for e in logs if e["event"] == ev.ALERT_FAILED]
    assert failed == [{"event": ev.ALERT_FAILED, "log_level": "warning", "channel": "down",
                       "kind": "needs_person", "change": "opened", "sessions": 1,
                       "attempt": 1, "error": "down: refused by the test", "retry_in": 5.0}]
    assert [e["channel"] for e in logs if e["event"] == ev.ALERT_SENT] == ["up"]

    # A new row for the waiting channel waits with it (order is kept); being within the
    # window of the first, it goes out in the same message.
    outbox.enqueue(["down"], [opened("b", clock.now())], clock.now())
    clock.advance(4.9)
    assert (await send.run_once(clock.now())).sent == 0
    clock.advance(0.1)
    report = await send.run_once(clock.now())  # second failure: attempt 2, cap(1) = 10 s
    assert report.failed == 1 and report.next_at == pytest.approx(clock.now() + 10.0)
    clock.advance(10.0)
    await send.run_once(clock.now())
    assert subjects(down) == [["a", "b"]]
    assert outbox.pending_count() == 0


async def test_a_hanging_channel_is_cut_off_by_the_send_timeout_and_holds_no_other() -> None:
    clock, outbox = FakeClock(), MemoryOutbox()
    hanging, fine = RecordingChannel("hangs"), RecordingChannel("fine")
    hanging.hang = True
    now = clock.now()
    outbox.enqueue(["hangs", "fine"], [opened("a", now)], now)
    send = sender(outbox, hanging, fine, clock=clock)
    send.send_timeout = 0.05
    loop = asyncio.get_running_loop()
    started = loop.time()
    with structlog.testing.capture_logs() as logs:
        report = await asyncio.wait_for(send.run_once(now + WINDOW), 5.0)
    assert loop.time() - started < 2.0
    assert subjects(fine) == [["a"]] and report.failed == 1
    (failed,) = [e for e in logs if e["event"] == ev.ALERT_FAILED]
    assert failed["error"] == "hangs: no answer within 0.05 s"
    assert outbox.rows[1].attempts == 1  # the hanging channel's row waits for its retry


async def test_a_channel_that_crashes_is_a_failure_whose_text_is_not_shown() -> None:
    class Crashing(RecordingChannel):
        async def send(self, message: object) -> None:
            raise RuntimeError("http://user:hunter2@example.com/secret-path")

    clock, outbox = FakeClock(), MemoryOutbox()
    now = clock.now()
    outbox.enqueue(["x"], [opened("a", now)], now)
    with structlog.testing.capture_logs() as logs:
        await sender(outbox, Crashing("x"), clock=clock).run_once(now + WINDOW)
    (failed,) = [e for e in logs if e["event"] == ev.ALERT_FAILED]
    assert failed["error"] == "x: the channel raised RuntimeError"
    assert "hunter2" not in json.dumps(logs)


async def test_rows_older_than_max_age_are_dropped_and_counted() -> None:
    clock, outbox, channel = FakeClock(), MemoryOutbox(), RecordingChannel("c")
    now = clock.now()
    outbox.enqueue(["c"], [opened("old", now - 4000)], now - 4000)
    outbox.enqueue(["c"], [opened("new", now)], now)
    with structlog.testing.capture_logs() as logs:
        report = await sender(outbox, channel, clock=clock).run_once(now + WINDOW)
    assert report.expired == 1 and subjects(channel) == [["new"]]
    assert {"event": ev.ALERT_DROPPED, "log_level": "warning", "reason": "max_age",
            "count": 1, "pending": 1} in logs


async def test_beyond_queue_max_the_oldest_are_dropped_and_counted() -> None:
    clock, outbox, channel = FakeClock(), MemoryOutbox(), RecordingChannel("c")
    now = clock.now()
    outbox.enqueue(["c"], [opened(f"s{i}", now) for i in range(8)], now)
    with structlog.testing.capture_logs() as logs:
        report = await sender(outbox, channel, clock=clock, queue_max=5).run_once(now + WINDOW)
    assert report.trimmed == 3
    assert subjects(channel) == [[f"s{i}" for i in range(3, 8)]]
    assert {"event": ev.ALERT_DROPPED, "log_level": "warning", "reason": "queue_full",
            "count": 3, "pending": 5} in logs


async def test_a_sent_message_is_logged_with_its_channel_and_never_its_url() -> None:
    clock, outbox, channel = FakeClock(), MemoryOutbox(), RecordingChannel("apprise-1")
    now = clock.now()
    outbox.enqueue(["apprise-1"], [opened("a", now)], now)
    with structlog.testing.capture_logs() as logs:
        await sender(outbox, channel, clock=clock).run_once(now + WINDOW)
    (sent,) = [e for e in logs if e["event"] == ev.ALERT_SENT]
    assert sent["channel"] == "apprise-1" and sent["sessions"] == 1 and sent["attempt"] == 1
    assert {"kind", "change", "duration_ms"} <= set(sent)


def test_routes_send_a_routed_kind_only_to_the_apprise_channels_with_its_tags() -> None:
    from pydantic import SecretStr

    ops = AppriseChannel("apprise-1", SecretStr("json://127.0.0.1/x"), tags=["ops"])
    plain = AppriseChannel("apprise-2", SecretStr("json://127.0.0.1/y"))
    manager = AlertmanagerChannel("alertmanager", "http://127.0.0.1:9")
    routes = {Kind.NEEDS_PERSON: ["ops"]}
    assert routed(ops, Kind.NEEDS_PERSON, routes) and not routed(plain, Kind.NEEDS_PERSON, routes)
    assert routed(plain, Kind.GONE, routes) and routed(ops, Kind.GONE, routes)
    assert routed(manager, Kind.NEEDS_PERSON, routes)


async def test_rows_routed_elsewhere_are_done_with_unsent() -> None:
    from pydantic import SecretStr

    class Tagged(AppriseChannel):
        def __init__(self) -> None:
            super().__init__("apprise-2", SecretStr("json://127.0.0.1/y"))
            self.got: list[object] = []

        async def send(self, message: object) -> None:
            self.got.append(message)

    clock, outbox, channel = FakeClock(), MemoryOutbox(), Tagged()
    now = clock.now()
    outbox.enqueue(["apprise-2"], [opened("a", now), opened("g", now, Kind.GONE)], now)
    send = Sender(outbox, [channel], clock, group_window=WINDOW, max_age=3600.0,
                  queue_max=100, host="h",
                  routes={Kind.NEEDS_PERSON: ["ops"]})
    await send.run_once(now + WINDOW)
    assert len(channel.got) == 1 and outbox.pending_count() == 0


async def test_the_background_loop_sends_what_is_enqueued_and_stops_when_told() -> None:
    clock, outbox, channel = ManualClock(), MemoryOutbox(), RecordingChannel("c")
    send = Sender(outbox, [channel], clock, group_window=WINDOW, max_age=3600.0,
                  queue_max=100, host="h", idle=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(send.run(stop))
    await until(lambda: clock.sleeping == 1)
    outbox.enqueue(["c"], [opened("a", clock.now())], clock.now())
    send.wake()
    await until(lambda: clock.sleeping == 1 and clock.deadlines()[0] == clock.monotonic() + 1.0)
    for _ in range(10):
        clock.advance(1.0)
        await until(lambda: clock.sleeping == 1 or channel.messages)
    await until(lambda: channel.messages)
    assert subjects(channel) == [["a"]]
    stop.set()
    await asyncio.wait_for(task, 5.0)


async def test_the_background_loop_refreshes_open_episodes_on_channels_that_want_it() -> None:
    class Refreshed(RecordingChannel):
        def __init__(self) -> None:
            super().__init__("alertmanager")
            self.refreshed: list[tuple[list[Episode], float]] = []

        async def refresh(self, open: list[Episode], now: float) -> None:
            self.refreshed.append((list(open), now))

    clock, outbox, channel = ManualClock(), MemoryOutbox(), Refreshed()
    episode = opened("a", clock.now()).episode
    send = Sender(outbox, [channel], clock, group_window=WINDOW, max_age=3600.0,
                  queue_max=100, host="h", idle=1.0, refresh_every=60.0,
                  open_episodes=lambda: [episode])
    stop = asyncio.Event()
    task = asyncio.create_task(send.run(stop))
    await until(lambda: channel.refreshed)
    assert channel.refreshed == [([episode], clock.now())]
    for _ in range(60):
        await until(lambda: clock.sleeping == 1)
        clock.advance(1.0)
    await until(lambda: len(channel.refreshed) == 2)
    stop.set()
    await asyncio.wait_for(task, 5.0)


async def test_the_background_loop_outlives_a_store_that_fails_a_round() -> None:
    class Flaky(MemoryOutbox):
        failures = 1

        def due(self, channel: str, now: float, limit: int) -> list[Pending]:
            if self.failures:
                self.failures -= 1
                raise OSError("disk I/O error")
            return super().due(channel, now, limit)

    clock, outbox, channel = ManualClock(), Flaky(), RecordingChannel("c")
    outbox.enqueue(["c"], [opened("a", clock.now() - WINDOW)], clock.now())
    send = Sender(outbox, [channel], clock, group_window=WINDOW, max_age=3600.0,
                  queue_max=100, host="h", idle=1.0)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(send.run(stop))
        await until(lambda: clock.sleeping == 1)
        clock.advance(1.0)
        await until(lambda: channel.messages)
        stop.set()
        await asyncio.wait_for(task, 5.0)
    assert {"event": ev.ALERT_FAILED, "log_level": "warning", "stage": "outbox",
            "error": "OSError: disk I/O error"} in logs


async def test_a_channel_waiting_out_a_retry_is_not_read_again_until_then() -> None:
    class Counting(MemoryOutbox):
        reads = 0

        def due(self, channel: str, now: float, limit: int) -> list[Pending]:
            self.reads += 1
            return super().due(channel, now, limit)

    clock, outbox, channel = FakeClock(), Counting(), RecordingChannel("c")
    channel.failures = 1
    now = clock.now()
    outbox.enqueue(["c"], [opened("a", now)], now)
    send = sender(outbox, channel, clock=clock)
    clock.advance(WINDOW)
    await send.run_once(clock.now())
    assert outbox.reads == 1
    for _ in range(4):
        clock.advance(1.0)
        await send.run_once(clock.now())
    assert outbox.reads == 1 and channel.messages == []
    clock.advance(1.0)
    await send.run_once(clock.now())
    assert outbox.reads == 2 and subjects(channel) == [["a"]]


async def test_observers_see_every_message_sent_or_failed_and_every_drop() -> None:
    from supervisor.alerts.sender import Delivery

    seen: list[Delivery] = []

    def broken(delivery: Delivery) -> None:
        raise KeyError("metrics")

    clock, outbox = FakeClock(), MemoryOutbox()
    good, bad = RecordingChannel("good"), RecordingChannel("bad")
    bad.failures = 1
    now = clock.now()
    outbox.enqueue(["good", "bad"], [opened("a", now), opened("b", now)], now)
    outbox.enqueue(["good"], [opened("old", now - 7200)], now - 7200)
    send = sender(outbox, good, bad, clock=clock)
    send.observers += [seen.append, broken]
    with structlog.testing.capture_logs() as logs:
        await send.run_once(now + WINDOW)
    assert sorted(seen, key=lambda d: (d.outcome, d.channel)) == [
        Delivery("dropped", 1, reason="max_age"),
        Delivery("failed", 2, "bad", Kind.NEEDS_PERSON, Change.OPENED),
        Delivery("sent", 2, "good", Kind.NEEDS_PERSON, Change.OPENED)]
    assert {"event": ev.ALERT_FAILED, "log_level": "warning", "stage": "observer",
            "error": "KeyError"} in logs


async def test_a_store_failing_one_channel_s_round_lets_the_others_finish() -> None:
    class FailsFor(MemoryOutbox):
        def due(self, channel: str, now: float, limit: int) -> list[Pending]:
            if channel == "a":
                raise OSError("disk I/O error")
            return super().due(channel, now, limit)

    class Slow(RecordingChannel):
        async def send(self, message: Message) -> None:
            await asyncio.sleep(0.01)
            await super().send(message)

    clock, outbox = FakeClock(), FailsFor()
    a, b = RecordingChannel("a"), Slow("b")
    now = clock.now()
    outbox.enqueue(["a", "b"], [opened("x", now)], now)
    with pytest.raises(OSError, match="disk I/O error"):
        await sender(outbox, a, b, clock=clock).run_once(now + WINDOW)
    assert subjects(b) == [["x"]] and a.messages == []


async def test_a_refresh_that_raises_is_logged_without_its_text() -> None:
    class Broken(RecordingChannel):
        async def refresh(self, open: list[Episode], now: float) -> None:
            raise RuntimeError("http://ops:pw@127.0.0.1:9093 refused")

    clock, outbox, channel = FakeClock(), MemoryOutbox(), Broken("alertmanager")
    episode = opened("a", clock.now()).episode
    send = Sender(outbox, [channel], clock, group_window=WINDOW, max_age=3600.0,
                  queue_max=100, host="h", open_episodes=lambda: [episode])
    with structlog.testing.capture_logs() as logs:
        await send.refresh(clock.now())
    assert logs == [{"event": ev.ALERT_FAILED, "log_level": "warning",
                     "channel": "alertmanager", "refresh": True, "sessions": 1,
                     "error": "alertmanager: the channel raised RuntimeError"}]


async def test_one_attempt_says_in_safe_words_what_became_of_a_send() -> None:
    from supervisor.alerts.sender import attempt

    async def fine() -> None:
        pass

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def crashes() -> None:
        raise ValueError("token=abc123")

    async def refused() -> None:
        raise DeliveryFailed("apprise-1", "not delivered (Apprise: failure)")

    assert await attempt("apprise-1", fine()) is None
    assert await attempt("apprise-1", hangs(), 0.01) == "apprise-1: no answer within 0.01 s"
    assert await attempt("apprise-1", crashes()) == "apprise-1: the channel raised ValueError"
    assert await attempt("apprise-1", refused()) == (
        "apprise-1: not delivered (Apprise: failure)")


async def test_two_senders_on_one_state_file_send_a_group_once(tmp_path) -> None:
    from supervisor.state.sqlite import SqliteStore

    clock = FakeClock()
    with structlog.testing.capture_logs():
        stores = [SqliteStore.open(tmp_path / "state.db", clock=clock) for _ in range(2)]
    try:
        now = clock.now()
        stores[0].enqueue(["c"], [opened("a", now), opened("b", now)], now)
        channels = [RecordingChannel("c"), RecordingChannel("c")]
        senders = [Sender(store, [channel], clock, group_window=WINDOW, max_age=3600.0,
                          queue_max=100, host="h", send_timeout=10.0)
                   for store, channel in zip(stores, channels, strict=True)]
        clock.advance(WINDOW)
        with structlog.testing.capture_logs() as logs:
            reports = await asyncio.gather(*(s.run_once(clock.now()) for s in senders))
        assert sorted(r.sent for r in reports) == [0, 1]
        assert sum(len(c.messages) for c in channels) == 1
        assert [r.failed for r in reports] == [0, 0]
        waiting = next(r for r in reports if r.sent == 0)
        assert waiting.next_at is None or waiting.next_at <= clock.now() + 2 * 10.0
        assert stores[1].pending_count() == 0
        assert [e["event"] for e in logs].count(ev.ALERT_SENT) == 1
    finally:
        for store in stores:
            store.close()
