"""The rate gate, on a fake clock: exact waits, no sleeping."""

from __future__ import annotations

import math

import pytest
from structlog.testing import capture_logs

from supervisor.ratelimit import RateGate
from tests.fakes import FakeClock


async def test_no_request_before_retry_after_has_passed() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    start = clock.monotonic()
    gate.rate_limited(7.5)
    await gate.acquire()
    assert clock.monotonic() - start == pytest.approx(7.5)
    await gate.acquire()  # the pause is over: no further wait
    assert clock.monotonic() - start == pytest.approx(7.5)


async def test_every_waiting_request_honours_the_same_pause() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    gate.rate_limited(3)
    deadline = gate.paused_until
    for _ in range(5):
        await gate.acquire()
        assert clock.monotonic() >= deadline


async def test_retry_after_over_the_cap_is_capped_and_logged() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=60)
    with capture_logs() as events:
        assert gate.rate_limited(86_400) == 60
    assert [e["event"] for e in events] == ["api.retry_after_capped", "api.rate_limited"]
    assert events[0]["retry_after"] == 86_400 and events[0]["max_retry_after"] == 60


@pytest.mark.parametrize("value", [None, -1.0, math.inf, math.nan])
async def test_missing_or_unusable_retry_after_falls_back_to_growing_backoff(
    value: float | None,
) -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    pauses = [gate.rate_limited(value) for _ in range(4)]
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    gate.succeeded()
    assert gate.rate_limited(value) == 1.0


async def test_zero_retry_after_means_no_wait() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=300)
    gate.rate_limited(0.0)
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
        gate.rate_limited(2.0, call="list")
    assert events == [{"event": "api.rate_limited", "log_level": "warning", "call": "list",
                       "http_status": 429, "retry_after": 2.0, "paused_for": 2.0,
                       "pause_source": "server"}]
