"""Admission on a manual clock: auth, rate limit, Retry-After, early requests, faults."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime

import pytest

from supervisor.simulator import Admission, ManualClock, Simulator
from supervisor.simulator.gate import bearer_token, classify, http_date

from .conftest import API_KEY

Make = Callable[..., Simulator]
AUTH = f"Bearer {API_KEY}"


def call(
    sim: Simulator, path: str = "/sessions", method: str = "GET", auth: str | None = AUTH
) -> Admission:
    """Admit a request and log it with the status the gate decided (200 if let through)."""
    admission = sim.admit(method, path, auth)
    sim.finish(admission, admission.status or 200)
    return admission


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/sessions", ("list", None)),
        ("POST", "/sessions", ("create", None)),
        ("GET", "/sessions/s1", ("get", "s1")),
        ("DELETE", "/sessions/s1", ("delete", "s1")),
        ("POST", "/sessions/s1/restart", ("restart", "s1")),
        ("POST", "/sessions/s1/start", ("start", "s1")),
        ("POST", "/sessions/s1/stop", ("stop", "s1")),
        ("GET", "/sessions/s1/auth/qr", ("qr", "s1")),
        ("GET", "/sessions/s1/restart", ("other", "s1")),
        ("GET", "/health", ("other", None)),
    ],
)
def test_classify(method: str, path: str, expected: tuple[str, str | None]) -> None:
    assert classify(method, path) == expected


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Basic {API_KEY}", API_KEY])
def test_wrong_or_missing_key_is_401(make_sim: Make, auth: str | None) -> None:
    admission = call(make_sim(), auth=auth)
    assert admission.status == 401
    assert ("www-authenticate", 'Bearer realm="wasend"') in admission.headers
    assert admission.fault == "auth"


def test_right_key_is_let_through(make_sim: Make) -> None:
    admission = call(make_sim())
    assert admission.status is None
    assert (admission.kind, admission.early, admission.fault) == ("list", False, None)


def test_rate_limit_counts_accepted_requests_in_a_sliding_window(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(rate_limit={"requests": 2, "window": 10, "retry_after": 0})
    assert [call(sim).status for _ in range(3)] == [None, None, 429]
    clock.advance(5)
    assert call(sim).status == 429  # the two accepted ones are still in the window
    clock.advance(5)  # the first two leave the window at t=10
    assert [call(sim).status for _ in range(3)] == [None, None, 429]
    assert sim.stats()["rate_limited"] == 3


def test_rejected_requests_do_not_count_against_the_window(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(rate_limit={"requests": 1, "window": 1, "retry_after": 0})
    assert call(sim).status is None
    for _ in range(5):
        clock.advance(0.1)
        assert call(sim).status == 429
    clock.advance(0.5)  # t = 1.0: the accepted one leaves; the 429s never counted
    assert call(sim).status is None


def test_retry_after_seconds_is_an_integer_rounded_up(make_sim: Make) -> None:
    sim = make_sim(rate_limit={"burst": 1, "retry_after": 1.2})
    admission = call(sim)
    assert admission.status == 429
    assert dict(admission.headers)["retry-after"] == "2"
    assert admission.fault == "burst"


def test_retry_after_http_date_rounds_the_instant_up(make_sim: Make, clock: ManualClock) -> None:
    clock.advance(0.3)  # wall 1_700_000_000.3
    sim = make_sim(rate_limit={"burst": 1, "retry_after": 2, "retry_after_form": "http-date"})
    admission = call(sim)
    value = dict(admission.headers)["retry-after"]
    assert value == http_date(1_700_000_003) == "Tue, 14 Nov 2023 22:13:23 GMT"
    assert parsedate_to_datetime(value).timestamp() == 1_700_000_003
    clock.advance(2.69)  # wall ...002.99: before the rounded-up instant, so early
    early = call(sim)
    assert (early.early, early.status) == (True, 429)
    # the early 429 names a new date: ceil(002.99 + 2) = 005
    assert dict(early.headers)["retry-after"] == http_date(1_700_000_005)
    clock.advance(2.02)  # wall ...005.01
    follow = call(sim)
    assert (follow.early, follow.status) == (False, None)


def test_retry_after_absent_sets_no_deadline(make_sim: Make) -> None:
    sim = make_sim(rate_limit={"burst": 1, "retry_after_form": "absent"})
    first = call(sim)
    assert first.status == 429
    assert "retry-after" not in dict(first.headers)
    second = call(sim)
    assert (second.status, second.early) == (None, False)


def test_retry_after_raw_is_sent_verbatim(make_sim: Make) -> None:
    sim = make_sim(rate_limit={"burst": 1, "retry_after_form": "raw", "retry_after_raw": "-5"})
    assert dict(call(sim).headers)["retry-after"] == "-5"
    assert call(sim).early is False


def test_early_requests_are_answered_429_again_and_counted(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(rate_limit={"burst": 1, "retry_after": 2})
    assert call(sim).status == 429
    clock.advance(1.0)
    early = call(sim)
    assert (early.status, early.early, early.fault) == (429, True, "early")
    assert dict(early.headers)["retry-after"] == "2"
    clock.advance(2.0)  # the early request set a new deadline at t = 3
    late = call(sim)
    assert (late.status, late.early) == (None, False)
    stats = sim.stats()
    assert (stats["early"], stats["rate_limited"]) == (1, 2)
    assert [r.early for r in sim.requests()] == [False, True, False]


def test_request_exactly_at_the_deadline_is_not_early(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim(rate_limit={"burst": 1, "retry_after": 1})
    call(sim)
    clock.advance(1.0)
    assert call(sim).early is False


def test_burst_answers_the_next_k_requests_429_then_stops(make_sim: Make) -> None:
    sim = make_sim(rate_limit={"retry_after": 0})
    sim.update_faults(rate_limit={"burst": 3})
    assert [call(sim).status for _ in range(4)] == [429, 429, 429, None]
    assert sim.faults.rate_limit.burst == 0


def test_server_errors_at_rate_one_and_zero(make_sim: Make) -> None:
    sim = make_sim(server_errors={"rate": 1.0, "status": 503})
    admission = call(sim)
    assert (admission.status, admission.fault) == (503, "server_error")
    sim.update_faults(server_errors={"rate": 0.0})
    assert call(sim).status is None


def test_server_errors_rate_is_per_request(make_sim: Make) -> None:
    sim = make_sim(seed=5, server_errors={"rate": 0.25})
    hits = sum(call(sim).status == 500 for _ in range(4000))
    assert 900 < hits < 1100


def test_fault_filters_by_kind_and_session(make_sim: Make) -> None:
    sim = make_sim(server_errors={"rate": 1.0, "kinds": ["restart"], "sessions": ["sess-0002"]})
    assert call(sim, "/sessions/sess-0002/restart", "POST").status == 500
    assert call(sim, "/sessions/sess-0001/restart", "POST").status is None
    assert call(sim, "/sessions/sess-0002").status is None
    assert call(sim).status is None


def test_latency_and_jitter(make_sim: Make) -> None:
    sim = make_sim(seed=1, latency={"seconds": 0.2, "jitter": 0.1})
    delays = [call(sim).latency for _ in range(50)]
    assert all(0.2 <= d <= 0.3 for d in delays)
    assert len(set(delays)) > 1


def test_hang_always_or_with_probability(make_sim: Make) -> None:
    sim = make_sim(hang={"always": True, "seconds": 7})
    admission = call(sim)
    assert (admission.hang, admission.fault, admission.status) == (7.0, "hang", None)
    sim.update_faults(hang={"always": False, "rate": 0.0})
    assert call(sim).hang == 0.0
    assert sim.faults.hang.seconds == 7.0


def test_default_hang_is_far_longer_than_any_client_timeout(make_sim: Make) -> None:
    sim = make_sim(hang={"always": True})
    assert call(sim).hang >= 3600


def test_malformed_json_flag(make_sim: Make) -> None:
    sim = make_sim(malformed_json={"rate": 1.0})
    admission = call(sim)
    assert (admission.malformed, admission.fault, admission.status) == (
        True,
        "malformed_json",
        None,
    )


def test_outage_503_window(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim(outage={"at": 5, "duration": 2})
    assert call(sim).status is None
    clock.advance(5)
    assert sim.outage_active()
    outage = call(sim)
    assert (outage.status, outage.fault) == (503, "outage")
    assert call(sim, auth=None).status == 503  # before authentication
    assert not sim.refusing()
    clock.advance(2)
    assert not sim.outage_active()
    assert call(sim).status is None


def test_outage_without_at_starts_now(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim()
    clock.advance(100)
    sim.start_outage(1.0, "refuse")
    assert sim.refusing()
    assert sim.faults.outage is not None
    assert sim.faults.outage.at == 100.0
    clock.advance(1.0)
    assert not sim.refusing()


def test_log_records_every_api_request_with_its_times(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim()
    call(sim)
    clock.advance(1)
    call(sim, "/sessions/sess-0001/restart", "POST", auth=None)
    records = sim.requests()
    assert [(r.method, r.path, r.kind, r.session, r.status) for r in records] == [
        ("GET", "/sessions", "list", None, 200),
        ("POST", "/sessions/sess-0001/restart", "restart", "sess-0001", 401),
    ]
    assert [r.monotonic for r in records] == [1000.0, 1001.0]
    assert [r.wall for r in records] == [1_700_000_000.0, 1_700_000_001.0]
    assert [r.seq for r in sim.requests(since=1000.5)] == [2]
    assert [r.seq for r in sim.requests(after=1)] == [2]
    stats = sim.stats()
    assert stats["requests"] == 2
    assert stats["by_kind"] == {"list": 1, "restart": 1}
    assert stats["by_status"] == {"200": 1, "401": 1}


def test_log_is_bounded_but_counters_are_not(clock: ManualClock) -> None:
    sim = Simulator(sessions=1, api_key=API_KEY, clock=clock, log_size=10)
    for _ in range(25):
        call(sim)
    assert len(sim.requests()) == 10
    assert sim.requests()[0].seq == 16
    assert sim.stats()["requests"] == 25


def test_reset_log_clears_records_and_counters(make_sim: Make) -> None:
    sim = make_sim()
    call(sim)
    sim.reset_log()
    assert sim.requests() == []
    assert sim.stats()["requests"] == 0


def test_latency_applies_to_refusals_too(make_sim: Make) -> None:
    sim = make_sim(latency={"seconds": 0.5}, rate_limit={"burst": 1})
    limited = call(sim)
    assert (limited.status, limited.latency) == (429, 0.5)
    assert call(sim, auth=None).latency == 0.5
