"""The rate gate, on a fake clock: exact waits, no sleeping."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.api.errors import RateLimited
from supervisor.api.ratelimit import RateGate, admit, key_fingerprint
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import Fenced, GateRow, MemoryStore, StateError, Store
from tests.conftest import Opener
from tests.fakes import FakeClock


async def test_no_request_before_retry_after_has_passed() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    start = clock.monotonic()
    await gate.rate_limited(7.5)
    await gate.acquire()
    assert clock.monotonic() - start == pytest.approx(7.5)
    await gate.acquire()  # the pause is over: no further wait
    assert clock.monotonic() - start == pytest.approx(7.5)


async def test_every_waiting_request_honours_the_same_pause() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    await gate.rate_limited(3)
    deadline = gate.paused_until
    for _ in range(5):
        await gate.acquire()
        assert clock.monotonic() >= deadline


async def test_retry_after_over_the_cap_is_capped_and_logged() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=60)
    with capture_logs() as events:
        assert await gate.rate_limited(86_400) == 60
    assert [e["event"] for e in events] == ["api.retry_after_capped", "api.rate_limited"]
    assert events[0]["retry_after"] == 86_400 and events[0]["max_retry_after"] == 60


@pytest.mark.parametrize("value", [None, -1.0, math.inf, math.nan])
async def test_missing_or_unusable_retry_after_falls_back_to_growing_backoff(
    value: float | None,
) -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    pauses = [await gate.rate_limited(value) for _ in range(4)]
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    gate.succeeded()
    assert await gate.rate_limited(value) == 1.0


async def test_zero_retry_after_means_no_wait() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    await gate.rate_limited(0.0)
    await gate.acquire()
    assert clock.sleeps == []


async def test_budget_allows_at_most_n_requests_in_any_one_second_window() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=3, max_retry_after=300)
    sent = []
    for _ in range(10):
        await gate.acquire()
        sent.append(clock.monotonic())
    for i in range(len(sent) - 3):
        assert sent[i + 3] - sent[i] >= 1.0
    assert sent[3] - sent[0] == pytest.approx(1.0)  # no slower than it must be


async def test_fractional_budget_spaces_requests() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=0.5, max_retry_after=300)
    await gate.acquire()
    first = clock.monotonic()
    await gate.acquire()
    assert clock.monotonic() - first == pytest.approx(2.0)


async def test_rate_limited_event_fields() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    with capture_logs() as events:
        await gate.rate_limited(2.0, call="list")
    assert events == [{"event": "api.rate_limited", "log_level": "warning", "call": "list",
                       "http_status": 429, "retry_after": 2.0, "paused_for": 2.0,
                       "pause_source": "server"}]


# ------------------------------------------- shared by processes on one state file


KEY = "sk-GATE-TEST-KEY-0123456789"


def file_store(path: Path, clock: FakeClock) -> SqliteStore:
    with capture_logs():
        return SqliteStore.open(path, clock=clock)


def shared_gate(clock: FakeClock, store: Store, **kw: Any) -> RateGate:
    kw.setdefault("rate_limit", None)
    kw.setdefault("max_retry_after", 300)
    return RateGate(clock, store=store, key=key_fingerprint(KEY), **kw)


async def test_a_pause_one_process_received_holds_every_process_on_the_file(
    shared_state: Opener,
) -> None:
    """Two gates on two connections to one file (two processes): the 429 one of them got
    holds the other's next request until the Retry-After has passed, not a moment less.
    (On PostgreSQL too: two connections to one database.)"""
    clock = FakeClock()
    with capture_logs():
        first = shared_gate(clock, shared_state(clock))
        second = shared_gate(clock, shared_state(clock))
    start = clock.monotonic()
    await first.rate_limited(30)
    clock.advance(1.0)  # the second process comes a second later
    with capture_logs() as events:
        await second.acquire()
    assert clock.monotonic() - start == pytest.approx(30.0)
    assert clock.sleeps == [pytest.approx(29.0)]
    assert [e["event"] for e in events] == ["api.pause_adopted"]
    assert events[0]["paused_for"] == pytest.approx(29.0)


async def test_a_gate_started_later_honours_the_stored_pause(shared_state: Opener) -> None:
    """A daemon started again (a new store, a new gate) waits out the pause its
    predecessor wrote before sending anything."""
    clock = FakeClock()
    with capture_logs():
        before = shared_state(clock)
    await shared_gate(clock, before).rate_limited(12)
    before.close()
    clock.advance(2.0)
    with capture_logs():
        restarted = shared_gate(clock, shared_state(clock))
    assert restarted.paused_for() == 0.0  # nothing read yet ...
    await restarted.acquire()  # ... the first request reads it
    assert clock.sleeps == [pytest.approx(10.0)]


async def test_a_pause_longer_than_max_wait_is_refused_not_waited(tmp_path: Path) -> None:
    """``check`` (``max_wait`` = its ``--wait``) reports a pause it would not see the end
    of: RateLimited without an HTTP status, the time left in it, and no sleep."""
    clock = FakeClock()
    store = MemoryStore()
    await shared_gate(clock, store).rate_limited(30)
    clock.advance(1.0)
    check = shared_gate(clock, store, max_wait=0.0)
    with pytest.raises(RateLimited) as caught:
        await check.acquire()
    assert caught.value.http_status is None
    assert caught.value.retry_after == pytest.approx(29.0)
    assert "paused by a Retry-After for 29 s more" in str(caught.value)
    assert clock.sleeps == []
    waiting = shared_gate(clock, store, max_wait=40.0)  # --wait covers it: it waits
    await waiting.acquire()
    assert clock.sleeps == [pytest.approx(29.0)]


async def test_a_stored_pause_is_honoured_for_at_most_max_retry_after(tmp_path: Path) -> None:
    """A stored pause far ahead (a clock set wrong, a neighbour with a higher cap) holds
    this process no longer than its own ``max_retry_after``."""
    clock = FakeClock()
    store = MemoryStore()
    store.update_gate_row(key_fingerprint(KEY), lambda row: GateRow(clock.now() + 86_400))
    gate = shared_gate(clock, store, max_retry_after=60)
    await gate.acquire()
    assert clock.sleeps == [pytest.approx(60.0)]


async def test_the_budget_is_shared_by_the_processes_on_the_file(shared_state: Opener) -> None:
    """Two processes each sending as fast as their gate lets them: together, never more
    than ``rate_limit`` requests in any one-second window."""
    clock = FakeClock()
    with capture_logs():
        gates = [shared_gate(clock, shared_state(clock), rate_limit=3) for _ in range(2)]
    sent: list[float] = []
    for i in range(12):
        await gates[i % 2].acquire()
        sent.append(clock.now())
    for i in range(len(sent) - 3):
        assert sent[i + 3] - sent[i] >= 1.0 - 1e-9
    assert sent[3] - sent[0] == pytest.approx(1.0)  # no slower than it must be


class StaleReads(MemoryStore):
    """A store whose cheap read has not yet seen what another process wrote."""

    def gate_row(self, key: str) -> GateRow | None:
        return None


async def test_a_pause_that_arrives_while_counting_is_honoured() -> None:
    """The budget's write reads the row again: a pause stored since the gate last
    looked holds the request (and counts as time paused)."""
    clock = FakeClock()
    store = StaleReads()
    gate = shared_gate(clock, store, rate_limit=5)
    store.update_gate_row(key_fingerprint(KEY), lambda row: GateRow(clock.now() + 5))
    await gate.acquire()
    assert clock.sleeps == [pytest.approx(5.0)]
    assert gate.paused_seconds_total == pytest.approx(5.0)
    store.update_gate_row(key_fingerprint(KEY), lambda row: GateRow(clock.now() + 5))
    check = shared_gate(clock, store, rate_limit=5, max_wait=1.0)
    with pytest.raises(RateLimited):  # and a check would not wait for it
        await check.acquire()


def test_admit_counts_a_request_only_when_it_fits() -> None:
    assert admit((), 10.0, 2, 1.0) == (0.0, (10.0,))
    assert admit((9.0, 9.5), 10.0, 2, 1.0) == (0.0, (9.5, 10.0))  # 9.0 left the window
    wait, kept = admit((9.5, 9.8), 10.0, 2, 1.0)
    assert wait == pytest.approx(0.5)
    assert kept == (9.5, 9.8)
    assert admit((50.0, 60.0), 10.0, 2, 1.0) == (1.0, (50.0, 60.0))  # ahead: at most a window


async def test_the_state_file_holds_a_fingerprint_of_the_key_never_the_key(tmp_path: Path) -> None:
    clock = FakeClock()
    store = file_store(tmp_path / "state.db", clock)
    await shared_gate(clock, store).rate_limited(5)
    store.close()
    fingerprint = key_fingerprint(KEY)
    assert len(fingerprint) == 16 and KEY not in fingerprint
    for path in tmp_path.iterdir():
        assert KEY.encode() not in path.read_bytes()
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("SELECT key FROM gate").fetchall() == [(fingerprint,)]


class BrokenGateStore(MemoryStore):
    def gate_row(self, key: str) -> GateRow | None:
        raise StateError("state.db is read-only")

    def update_gate_row(self, key: str, change: Any) -> GateRow | None:
        raise StateError("state.db is read-only")


async def test_an_unusable_state_file_sends_nothing_but_keeps_the_pause() -> None:
    clock = FakeClock()
    gate = shared_gate(clock, BrokenGateStore())
    with capture_logs() as events:
        assert await gate.rate_limited(4) == 4  # the 429 stands, and this process pauses
    assert [e["event"] for e in events] == ["api.rate_limited", "state.unavailable"]
    assert gate.paused_for() == 4
    with pytest.raises(StateError):
        await gate.acquire()
    assert clock.sleeps == []


async def test_the_gate_shares_under_the_key_in_use_after_a_reload() -> None:
    """Built from settings, the gate shares through the runtime's store under the key's
    fingerprint; a new key (SIGHUP) is shared under its own from then on."""
    from pydantic import SecretStr

    from supervisor.config.model import Settings
    from supervisor.runtime.wiring import build, rebuild

    clock = FakeClock()
    def settings(key: str) -> Settings:
        return Settings(api_key=SecretStr(key), base_url="https://api.example",
                        state_path=Path(":memory:"))

    runtime = build(settings(KEY), clock=clock)
    reloaded = None
    try:
        await runtime.gate.rate_limited(10)
        assert runtime.store.gate_row(key_fingerprint(KEY)) == GateRow(clock.now() + 10)
        reloaded = rebuild(runtime, settings(KEY + "-new"))
        await reloaded.gate.rate_limited(20)
        assert reloaded.store.gate_row(key_fingerprint(KEY + "-new")) == GateRow(
            clock.now() + 20)
    finally:
        if reloaded is not None:
            await reloaded.client.aclose()
        await runtime.aclose()


async def test_a_spare_request_waits_for_every_other_request_waiting() -> None:
    """A webhook's read never holds up a poll's list or a restart: while one waits at the
    gate, a spare request does not take the next slot."""
    import asyncio

    from tests.fakes import ManualClock
    from tests.waiting import until

    clock = ManualClock()
    gate = RateGate(clock, rate_limit=1.0, max_retry_after=300)
    order: list[str] = []

    async def ask(name: str, spare: bool) -> None:
        await gate.acquire(spare=spare)
        order.append(name)

    await ask("first", False)  # the budget's one slot of this second
    spare = asyncio.create_task(ask("spare", True))
    await until(lambda: clock.sleeping == 1)  # the spare one waits for the budget
    urgent = asyncio.create_task(ask("poll", False))
    await until(lambda: clock.sleeping == 2)
    clock.advance(1.0)
    await until(lambda: len(order) == 2)
    assert order == ["first", "poll"]
    await until(lambda: clock.sleeping == 1)
    clock.advance(1.0)
    await asyncio.wait_for(asyncio.gather(spare, urgent), 5)
    assert order == ["first", "poll", "spare"]


async def test_spare_requests_alone_go_as_any_other() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    start = clock.monotonic()
    for _ in range(3):
        await gate.acquire(spare=True)
    assert clock.monotonic() == start


async def test_a_request_leaves_only_if_permit_lets_it_after_any_wait() -> None:
    clock = FakeClock()
    leading = {"now": True}
    asked: list[float] = []

    def permit() -> None:
        asked.append(clock.monotonic())
        if not leading["now"]:
            raise Fenced("replica b does not lead (leader: a)")

    gate = RateGate(clock, rate_limit=None, max_retry_after=60, permit=permit)
    await gate.acquire()
    await gate.rate_limited(5.0)
    started = clock.monotonic()
    leading["now"] = False  # it lost the lease while waiting out the pause
    with pytest.raises(Fenced):
        await gate.acquire()
    assert asked[-1] == started + 5.0  # asked as it would have left, not before
    await gate.acquire(fenced=False)  # a person's read (the page's QR code) may go
    assert len(asked) == 2
