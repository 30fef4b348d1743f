"""Metrics from the hooks: names, labels and values, read back through the text format."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from supervisor.api.errors import ApiUnreachable
from supervisor.api.ratelimit import RateGate
from supervisor.domain.models import Event, Phase, Record
from supervisor.domain.policy import StatusClasses
from supervisor.ops.census import Census
from supervisor.ops.metrics import Metrics
from supervisor.runtime.cycle import PollResult
from tests.fakes import FakeClock


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


RECORDS = [
    Record("a", last_status="WORKING"),
    Record("b", phase=Phase.VERIFYING, last_status="STARTING"),
    Record("c", phase=Phase.GAVE_UP, gave_up=True, last_status="FAILED"),
    Record("q", phase=Phase.NEEDS_PERSON, last_status="SCAN_QR_CODE"),
]


def test_registries_are_independent() -> None:
    one, two = Metrics(), Metrics()
    one.observe_event(Event("restart.succeeded"))
    assert value(one, "wasend_supervisor_restarts_total", outcome="succeeded") == 1
    assert value(two, "wasend_supervisor_restarts_total", outcome="succeeded") == 0


def test_restart_outcomes_and_give_ups_are_counted_from_events() -> None:
    m = Metrics()
    for name in ("restart.requested", "restart.failed", "restart.requested",
                 "restart.conflict", "restart.requested", "restart.deferred",
                 "restart.requested", "restart.succeeded", "session.gave_up",
                 "session.needs_person", "session.recovered"):
        m.observe_event(Event(name))
    assert value(m, "wasend_supervisor_restart_requests_total") == 4
    for outcome in ("succeeded", "failed", "conflict", "deferred"):
        assert value(m, "wasend_supervisor_restarts_total", outcome=outcome) == 1
    assert value(m, "wasend_supervisor_gave_up_total") == 1
    assert value(m, "wasend_supervisor_needs_person_total") == 1


def test_sessions_by_class_and_phase_come_from_the_census() -> None:
    m = Metrics()
    census = Census.take(RECORDS, StatusClasses())
    m.after_poll(PollResult(ok=True, duration=0.2), census, last_success=1_700_000_000.0,
                 consecutive_failures=0)
    assert value(m, "wasend_supervisor_sessions", **{"class": "healthy"}) == 1
    assert value(m, "wasend_supervisor_sessions", **{"class": "transitional"}) == 1
    assert value(m, "wasend_supervisor_sessions", **{"class": "restartable"}) == 1
    assert value(m, "wasend_supervisor_sessions", **{"class": "needs_person"}) == 1
    assert value(m, "wasend_supervisor_sessions_in_phase", phase="verifying") == 1
    assert value(m, "wasend_supervisor_sessions_given_up") == 1
    assert value(m, "wasend_supervisor_sessions_needing_person") == 1
    assert value(m, "wasend_supervisor_last_successful_poll_timestamp_seconds") == 1.7e9
    assert value(m, "wasend_supervisor_polls_total", outcome="ok") == 1
    assert value(m, "wasend_supervisor_poll_duration_seconds_count") == 1
    assert value(m, "wasend_supervisor_poll_duration_seconds_sum") == 0.2


def test_failed_and_skipped_polls() -> None:
    m = Metrics()
    census = Census.take([], StatusClasses())
    m.after_poll(PollResult(ok=False, error=ApiUnreachable("x"), duration=1.0), census,
                 last_success=None, consecutive_failures=1)
    m.after_poll(PollResult(ok=False, skipped=True), census, last_success=None,
                 consecutive_failures=2)
    assert value(m, "wasend_supervisor_polls_total", outcome="failed") == 1
    assert value(m, "wasend_supervisor_polls_total", outcome="skipped") == 1
    assert value(m, "wasend_supervisor_poll_duration_seconds_count") == 1  # skipped: no time
    assert value(m, "wasend_supervisor_consecutive_poll_failures") == 2
    assert value(m, "wasend_supervisor_last_successful_poll_timestamp_seconds") == 0


def test_api_request_durations_by_call_and_status() -> None:
    m = Metrics()
    m.observe_request("list", 200, 0.03)
    m.observe_request("restart", 429, 0.01)
    m.observe_request("list", None, 15.0)
    assert value(m, "wasend_supervisor_api_request_duration_seconds_count",
                 call="list", status="200") == 1
    assert value(m, "wasend_supervisor_api_request_duration_seconds_count",
                 call="restart", status="429") == 1
    assert value(m, "wasend_supervisor_api_request_duration_seconds_bucket",
                 call="list", status="none", le="10.0") == 0
    assert value(m, "wasend_supervisor_api_request_duration_seconds_bucket",
                 call="list", status="none", le="15.0") == 1


async def test_429s_and_pause_come_from_the_rate_gate() -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=60)
    m = Metrics()
    m.watch_gate(gate)
    await gate.rate_limited(7.0, call="list")
    assert value(m, "wasend_supervisor_api_rate_limited_total") == 1
    assert value(m, "wasend_supervisor_api_rate_limit_pause_remaining_seconds") == 7
    gate.paused_seconds_total = 7.0
    assert value(m, "wasend_supervisor_api_rate_limit_paused_seconds_total") == 7


def test_no_per_session_series_unless_asked() -> None:
    census = Census.take(RECORDS, StatusClasses())
    off, on = Metrics(), Metrics(per_session=True)
    for m in (off, on):
        m.after_poll(PollResult(ok=True), census, last_success=1.0, consecutive_failures=0)
    assert not any("session" in dict(labels) for _, labels in samples(off))
    assert value(on, "wasend_supervisor_session_healthy", session="a") == 1
    assert value(on, "wasend_supervisor_session_healthy", session="c") == 0
    assert value(on, "wasend_supervisor_session_status", session="c", status="FAILED",
                 phase="gave_up", **{"class": "restartable"}) == 1


def test_among_replicas_the_role_and_the_epoch_are_shown_and_only_then() -> None:
    metrics = Metrics()
    assert not any(name.startswith("wasend_supervisor_ha_") for name, _ in samples(metrics))
    role: dict[str, object] = {"role": "standby", "epoch": None}
    metrics.watch_leadership(lambda: role)
    assert value(metrics, "wasend_supervisor_ha_leader") == 0
    assert value(metrics, "wasend_supervisor_ha_epoch") == 0
    role.update(role="leader", epoch=3)
    assert value(metrics, "wasend_supervisor_ha_leader") == 1
    assert value(metrics, "wasend_supervisor_ha_epoch") == 3
    assert value(metrics, "wasend_supervisor_ha_stopped") == 0
    role.update(role="stopped")
    assert (value(metrics, "wasend_supervisor_ha_leader"),
            value(metrics, "wasend_supervisor_ha_stopped")) == (0, 1)
