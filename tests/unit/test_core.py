"""The decision core, driven step by step with explicit times and a seeded random source."""

from __future__ import annotations

import random

import pytest

from supervisor.domain import core
from supervisor.domain.models import (
    Action,
    ActionKind,
    Outcome,
    OutcomeKind,
    Phase,
    Record,
    SessionInfo,
    Step,
)
from supervisor.domain.policy import Backoff, Policy, StatusClasses
from tests.fakes import MaxRandom

T0 = 1_700_000_000.0
POLICY = Policy(
    backoff=Backoff(initial=10.0, max=80.0, multiplier=2.0),
    max_restarts=3,
    restart_window=1000.0,
    stable_after=60.0,
    starting_timeout=30.0,
    gave_up_retry_interval=600.0,
)


def seen(status: str, sid: str = "s1", name: str | None = "Shop") -> SessionInfo:
    return SessionInfo(sid, name, status)


def names(step: Step) -> list[str]:
    # Every step the tests see says as a fact whether the attempt in flight failed, and
    # says it exactly when it logs ``restart.failed``.
    assert step.failed == ("restart.failed" in [e.name for e in step.events]), step
    return [e.name for e in step.events]


def ok(status: str = "STARTING") -> Outcome:
    return Outcome(OutcomeKind.OK, status=status)


class Driver:
    """Feeds polls and outcomes to the core, keeping the record like the cycle does."""

    def __init__(self, policy: Policy = POLICY, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or MaxRandom()
        self.record: Record | None = None
        self.events: list[str] = []

    def phase(self) -> Phase | None:
        return self.record.phase if self.record is not None else None

    def poll(self, status: str, at: float) -> Step:
        step = core.decide(seen(status), self.record, at, self.policy, self.rng)
        self.record = step.record
        self.events += names(step)
        return step

    def outcome(self, step: Step, outcome: Outcome, at: float) -> Step:
        assert step.action is not None and self.record is not None
        nxt = core.apply(self.record, step.action, outcome, at, self.policy, self.rng)
        self.record = nxt.record
        self.events += names(nxt)
        return nxt


def test_healthy_session_needs_nothing_and_keeps_its_record_object() -> None:
    d = Driver()
    first = d.poll("WORKING", T0)
    assert first.action is None and first.events == ()
    again = d.poll("WORKING", T0 + 30)
    assert again.record is first.record  # unchanged: the store is not written


def test_status_is_compared_case_insensitively() -> None:
    d = Driver()
    step = d.poll("stopped", T0)
    assert step.action == Action(ActionKind.RESTART, "s1", 1)


def test_stopped_session_is_restarted_then_verified() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    assert names(step) == ["session.unhealthy", "restart.requested"]
    assert step.action == Action(ActionKind.RESTART, "s1", 1)
    assert d.phase() is Phase.VERIFYING
    d.outcome(step, ok("STARTING"), T0 + 0.2)
    assert d.record is not None and d.record.verify_deadline == T0 + 0.2 + 30
    assert d.poll("STARTING", T0 + 10).action is None
    done = d.poll("WORKING", T0 + 20)
    assert names(done) == ["restart.succeeded", "session.recovered"]
    succeeded = done.events[0].fields
    assert succeeded["attempt"] == 1 and succeeded["duration_ms"] == 20_000
    assert d.phase() is Phase.HEALTHY


def test_no_second_restart_while_the_first_is_being_verified() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    d.outcome(step, ok("STARTING"), T0)
    # The list may still say STOPPED right after the restart was accepted... no: it is
    # in flight; a STOPPED sighting now is a relapse counted as a failed attempt, which
    # backs off instead of restarting again at once.
    again = d.poll("STOPPED", T0 + 1)
    assert again.action is None
    assert names(again) == ["restart.failed"]
    assert again.events[0].fields["reason"] == "relapsed"


def test_a_restart_in_flight_is_remembered_before_it_is_sent() -> None:
    d = Driver()
    d.poll("STOPPED", T0)
    # The process dies here, before the outcome: the record says VERIFYING.
    assert d.record is not None and d.record.phase is Phase.VERIFYING
    assert d.poll("STARTING", T0 + 5).action is None


def test_stuck_in_starting_counts_as_failed_and_the_next_attempt_stops_first() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    d.outcome(step, ok("STARTING"), T0)
    assert d.poll("STARTING", T0 + 29).events == ()
    failed = d.poll("STARTING", T0 + 30)
    assert names(failed) == ["restart.failed"]
    assert failed.events[0].fields["reason"] == "starting_timeout"
    assert failed.events[0].fields["next_attempt_in"] == 10.0  # cap(0) with no jitter
    retry = d.poll("STARTING", T0 + 40)
    assert retry.action == Action(ActionKind.STOP, "s1", 2)
    assert retry.events[0].fields["via"] == "stop_then_restart"
    after_stop = d.outcome(retry, ok("STOPPED"), T0 + 40)
    assert after_stop.action == Action(ActionKind.RESTART, "s1", 2)


def test_backoff_grows_then_gives_up_once_and_retries_rarely() -> None:
    d = Driver()
    waits = []
    t = T0
    step = d.poll("FAILED", t)
    for _ in range(3):
        assert step.action is not None
        d.outcome(step, ok("STARTING"), t)
        t += 1
        failed = d.poll("FAILED", t)
        waits.append(failed.events[0].fields["next_attempt_in"])
        assert d.record is not None
        if d.record.phase is Phase.GAVE_UP:
            break
        t = d.record.next_attempt_at or t
        step = d.poll("FAILED", t)
    assert waits[:2] == [10.0, 20.0]
    assert d.events.count("session.gave_up") == 1
    assert d.record is not None and d.record.phase is Phase.GAVE_UP
    # Nothing until the give-up retry interval has passed.
    assert d.poll("FAILED", t + 599).action is None
    probe = d.poll("FAILED", t + 600)
    assert probe.action is not None and probe.action.kind is ActionKind.RESTART
    d.outcome(probe, ok("STARTING"), t + 600)
    d.poll("FAILED", t + 601)
    assert d.events.count("session.gave_up") == 1  # loud once, not at every probe
    assert d.record is not None and d.record.phase is Phase.GAVE_UP


def test_given_up_session_resumes_when_it_comes_back() -> None:
    d = Driver()
    d.record = Record("s1", "Shop", Phase.GAVE_UP, "FAILED", attempt=3, gave_up=True,
                      failures=(T0, T0, T0), next_attempt_at=T0 + 600)
    back = d.poll("WORKING", T0 + 5)
    assert names(back) == ["session.recovered"]
    assert d.record is not None and d.record.phase is Phase.HEALTHY and not d.record.gave_up


@pytest.mark.parametrize("between", ["STARTING", "REBOOTING"], ids=["starting", "unknown"])
def test_given_up_session_that_comes_back_by_another_way_resumes_too(between: str) -> None:
    d = Driver()
    d.record = Record("s1", "Shop", Phase.GAVE_UP, "FAILED", attempt=3, gave_up=True,
                      failures=(T0, T0, T0), next_attempt_at=T0 + 600)
    d.poll(between, T0 + 5)  # started by someone else, or a status no class names
    back = d.poll("WORKING", T0 + 10)
    assert names(back) == ["session.recovered"]
    assert d.record is not None and d.record.phase is Phase.HEALTHY
    assert not d.record.gave_up and d.record.next_attempt_at is None
    # Supervised as usual again: a new failure is decided afresh, and a give-up says so.
    d.events.clear()
    for t in range(20, 2000, 10):
        step = d.poll("FAILED", T0 + t)
        if step.action is not None:
            d.outcome(step, ok("STARTING"), T0 + t)
        if d.phase() is Phase.GAVE_UP:
            break
    assert d.events.count("session.gave_up") == 1


def test_failures_outside_the_window_do_not_count_toward_giving_up() -> None:
    d = Driver()
    old = T0 - 2000  # outside restart_window = 1000
    d.record = Record("s1", "Shop", Phase.VERIFYING, "STARTING", attempt=3,
                      failures=(old, old), requested_at=T0 - 1)
    step = d.poll("FAILED", T0)
    assert "session.gave_up" not in names(step)
    assert d.record is not None and d.record.failures == (T0,)


def test_backoff_resets_after_stable_after() -> None:
    d = Driver()
    d.record = Record("s1", "Shop", Phase.HEALTHY, "WORKING", attempt=2, failures=(T0,),
                      since=T0)
    assert d.poll("WORKING", T0 + 59).record.attempt == 2  # type: ignore[union-attr]
    reset = d.poll("WORKING", T0 + 60)
    assert reset.record is not None and reset.record.attempt == 0
    assert reset.record.failures == ()
    assert names(reset) == ["session.stable"]


def test_relapse_before_stable_backs_off_instead_of_restarting_at_once() -> None:
    d = Driver()
    d.record = Record("s1", "Shop", Phase.HEALTHY, "WORKING", attempt=2, since=T0)
    step = d.poll("FAILED", T0 + 5)
    assert step.action is None
    assert step.events[0].name == "session.unhealthy"
    assert step.events[0].fields["relapsed"] is True
    assert d.record is not None and d.record.next_attempt_at == T0 + 5 + 40.0  # cap(2)


def test_jitter_stays_within_bounds() -> None:
    backoff = Backoff(initial=1.0, max=30.0, multiplier=3.0)
    rng = random.Random(7)
    for n in range(0, 50):
        for _ in range(20):
            assert 0.0 <= backoff.delay(n, rng) <= min(30.0, 3.0**n)


@pytest.mark.parametrize("n", [0, 1, 64, 1024, 10**6, 10**18])
def test_backoff_cap_never_overflows(n: int) -> None:
    assert Backoff(initial=5, max=300, multiplier=2).cap(n) == min(300.0, 5.0 * 2.0 ** min(n, 10))


def test_seeded_jitter_is_reproducible() -> None:
    b = Backoff()
    assert [b.delay(3, random.Random(1)) for _ in range(2)] == [b.delay(3, random.Random(1))] * 2


def test_conflict_rereads_and_logs_recovered_elsewhere() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    get = d.outcome(step, Outcome(OutcomeKind.CONFLICT, http_status=409), T0)
    assert get.action == Action(ActionKind.GET, "s1", 1, http_status=409)
    done = d.outcome(get, ok("WORKING"), T0)
    assert names(done) == ["restart.conflict", "session.recovered"]
    assert done.events[0].fields["resolution"] == "recovered_elsewhere"
    assert d.record is not None and d.record.phase is Phase.HEALTHY and d.record.attempt == 0


def test_conflict_on_failed_session_stops_then_restarts() -> None:
    d = Driver()
    step = d.poll("ERROR", T0)
    get = d.outcome(step, Outcome(OutcomeKind.CONFLICT, http_status=422), T0)
    stop = d.outcome(get, ok("ERROR"), T0)
    assert names(stop) == ["restart.conflict", "restart.requested"]
    assert stop.action == Action(ActionKind.STOP, "s1", 1)
    restart = d.outcome(stop, ok("STOPPED"), T0)
    assert restart.action == Action(ActionKind.RESTART, "s1", 1)
    d.outcome(restart, ok("STARTING"), T0)
    assert d.poll("WORKING", T0 + 3).events[0].name == "restart.succeeded"
    # every request has exactly one outcome event
    assert d.events.count("restart.requested") == 2
    assert d.events.count("restart.conflict") + d.events.count("restart.succeeded") == 2


def test_conflict_again_after_stopping_is_a_failed_attempt_not_a_loop() -> None:
    d = Driver()
    step = d.poll("ERROR", T0)
    get = d.outcome(step, Outcome(OutcomeKind.CONFLICT, http_status=409), T0)
    stop = d.outcome(get, ok("ERROR"), T0)
    restart = d.outcome(stop, ok("STOPPED"), T0)
    final = d.outcome(restart, Outcome(OutcomeKind.CONFLICT, http_status=409), T0)
    assert final.action is None
    assert names(final) == ["restart.failed"]
    assert final.events[0].fields["reason"] == "conflict_after_stop"


def test_needs_person_is_never_restarted_and_logged_on_entry_and_exit() -> None:
    d = Driver()
    entered = d.poll("SCAN_QR_CODE", T0)
    assert entered.action is None and names(entered) == ["session.needs_person"]
    for t in range(1, 50):
        assert d.poll("SCAN_QR_CODE", T0 + t * 100).action is None
    left = d.poll("WORKING", T0 + 6000)
    assert names(left) == ["session.needs_person_cleared", "session.recovered"]
    assert d.events.count("session.needs_person") == 1


def test_needs_person_after_restart_ends_the_attempt_without_counting_it() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    d.outcome(step, ok("STARTING"), T0)
    qr = d.poll("SCAN_QR_CODE", T0 + 3)
    assert names(qr) == ["restart.failed", "session.needs_person"]
    assert qr.events[0].fields["outcome"] == "needs_person"
    assert d.record is not None and d.record.failures == ()


def test_needs_person_then_stopped_is_restarted() -> None:
    d = Driver()
    d.poll("SCAN_QR_CODE", T0)
    step = d.poll("STOPPED", T0 + 10)
    assert names(step) == ["session.needs_person_cleared", "session.unhealthy",
                           "restart.requested"]


def test_unknown_status_warns_once_per_status_and_does_nothing() -> None:
    d = Driver()
    assert names(d.poll("WEIRD", T0)) == ["session.unknown_status"]
    assert d.poll("WEIRD", T0 + 1).events == ()
    assert names(d.poll("ODD", T0 + 2)) == ["session.unknown_status"]
    assert d.poll("weird", T0 + 3).action is None and d.poll("weird", T0 + 3).events == ()


def test_rate_limited_restart_is_deferred_and_not_counted() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    deferred = d.outcome(step, Outcome(OutcomeKind.RATE_LIMITED, http_status=429), T0)
    assert names(deferred) == ["restart.deferred"]
    assert d.record is not None and d.record.attempt == 0 and d.record.failures == ()
    again = d.poll("STOPPED", T0 + 1)
    assert again.action == Action(ActionKind.RESTART, "s1", 1)


def test_auth_failure_on_restart_is_deferred() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    deferred = d.outcome(step, Outcome(OutcomeKind.AUTH_FAILED, http_status=401), T0)
    assert deferred.events[0].fields["reason"] == "auth_failed"
    assert d.record is not None and d.record.phase is Phase.UNHEALTHY


def test_transient_failure_of_restart_backs_off() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    failed = d.outcome(step, Outcome(OutcomeKind.FAILED, http_status=503, reason="server_error"),
                       T0)
    assert names(failed) == ["restart.failed"]
    assert failed.events[0].fields["http_status"] == 503
    assert d.poll("STOPPED", T0 + 9.9).action is None
    assert d.poll("STOPPED", T0 + 10).action is not None


def test_404_on_restart_marks_the_session_gone_once() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    gone = d.outcome(step, Outcome(OutcomeKind.GONE, http_status=404), T0)
    assert names(gone) == ["restart.failed", "session.gone"]
    assert d.record is not None and d.record.phase is Phase.GONE
    again = core.vanished(d.record, T0 + 1, POLICY, configured=True)
    assert again.events == ()


def test_vanished_from_account_listing_is_forgotten() -> None:
    record = Record("s1", "Shop", Phase.HEALTHY, "WORKING")
    step = core.vanished(record, T0, POLICY, configured=False)
    assert step.record is None and names(step) == ["session.gone"]


def test_gone_session_that_reappears_is_supervised_again() -> None:
    d = Driver()
    d.record = Record("s1", "Shop", Phase.GONE, "WORKING")
    step = d.poll("STOPPED", T0)
    assert names(step) == ["session.reappeared", "session.unhealthy", "restart.requested"]


def test_session_starting_by_itself_is_left_alone_until_stuck() -> None:
    d = Driver()
    d.poll("WORKING", T0)
    assert d.poll("STARTING", T0 + 1).action is None
    assert d.poll("STARTING", T0 + 30).action is None
    stuck = d.poll("STARTING", T0 + 31)
    assert stuck.events[0].fields["reason"] == "stuck_starting"
    assert stuck.action == Action(ActionKind.STOP, "s1", 1)


def test_configurable_status_classes() -> None:
    policy = Policy(classes=StatusClasses.of(restartable=["STOPPED", "BROKEN"],
                                            healthy=["WORKING"]))
    step = core.decide(seen("broken"), None, T0, policy, MaxRandom())
    assert step.action is not None
    assert core.decide(seen("CONNECTED"), None, T0, policy, MaxRandom()).events[0].name == (
        "session.unknown_status"
    )


def test_overlapping_status_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="STOPPED"):
        StatusClasses.of(healthy=["STOPPED"])


def test_events_carry_the_documented_fields() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    fields = step.events[1].fields
    assert fields == {"session_id": "s1", "session_name": "Shop", "status": "STOPPED",
                      "attempt": 1, "via": "restart"}


def test_after_a_stop_was_needed_later_attempts_stop_first_too() -> None:
    d = Driver()
    step = d.poll("ERROR", T0)
    get = d.outcome(step, Outcome(OutcomeKind.CONFLICT, http_status=409), T0)
    stop = d.outcome(get, ok("ERROR"), T0)
    restart = d.outcome(stop, ok("STOPPED"), T0)
    d.outcome(restart, ok("STARTING"), T0)
    d.poll("ERROR", T0 + 2)  # relapsed: a failed attempt
    retry = d.poll("ERROR", T0 + 100)
    assert retry.action is not None and retry.action.kind is ActionKind.STOP


def test_conflict_event_names_the_conflicting_request() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    get = d.outcome(step, Outcome(OutcomeKind.CONFLICT, http_status=422), T0)
    done = d.outcome(get, ok("STARTING"), T0)
    fields = done.events[0].fields
    assert (fields["attempt"], fields["http_status"], fields["resolution"]) == (
        1, 422, "starting_elsewhere")
    assert d.phase() is Phase.STARTING


def test_an_attempt_whose_answer_was_never_recorded_times_out_from_its_request() -> None:
    # A process died between recording the restart and hearing its answer: the record has
    # no verification deadline. Stuck in STARTING, the attempt still fails on time.
    d = Driver()
    d.poll("STOPPED", T0)  # requested; no outcome applied
    assert d.record is not None and d.record.verify_deadline is None
    assert d.poll("STARTING", T0 + 29).action is None
    assert d.phase() is Phase.VERIFYING
    late = d.poll("STARTING", T0 + 30)
    assert names(late) == ["restart.failed"]
    assert late.events[0].fields["reason"] == "starting_timeout"
    d2 = Driver()
    d2.poll("STOPPED", T0)
    assert names(d2.poll("MYSTERY", T0 + 31)) == ["session.unknown_status", "restart.failed"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [("FAILED", "relapsed"), ("SCAN_QR_CODE", "needs_person"), ("STARTING", "starting_timeout")],
)
def test_a_failed_attempt_is_a_fact_of_the_step(status: str, reason: str) -> None:
    d = Driver()
    d.outcome(d.poll("STOPPED", T0), ok("STARTING"), T0)
    step = d.poll(status, T0 + 31)
    assert step.failed and names(step).count("restart.failed") == 1
    fields = next(e.fields for e in step.events if e.name == "restart.failed")
    assert fields.get("reason", fields["outcome"]) == reason


def test_a_failed_call_and_a_vanished_session_are_failed_attempts_a_deferral_is_not() -> None:
    d = Driver()
    step = d.poll("STOPPED", T0)
    assert not step.failed
    assert d.outcome(step, Outcome(OutcomeKind.FAILED, reason="server_error"), T0).failed
    d = Driver()
    step = d.poll("STOPPED", T0)
    assert d.outcome(step, Outcome(OutcomeKind.GONE, http_status=404), T0).failed
    d = Driver()
    step = d.poll("STOPPED", T0)
    assert not d.outcome(step, Outcome(OutcomeKind.RATE_LIMITED, http_status=429), T0).failed


def test_a_session_a_conflict_found_starting_elsewhere_recovers_by_elsewhere() -> None:
    d = Driver()
    step = d.poll("FAILED", T0)
    get = d.outcome(step, Outcome(OutcomeKind.CONFLICT, http_status=409), T0)
    d.outcome(get, ok("STARTING"), T0)
    assert d.record is not None and d.record.starting_elsewhere
    assert d.record.last_outcome == "starting_elsewhere"
    d.poll("STARTING", T0 + 5)
    assert d.record is not None and d.record.starting_elsewhere
    back = d.poll("WORKING", T0 + 10)
    assert names(back) == ["session.recovered"] and back.events[0].fields["by"] == "elsewhere"
    assert d.record is not None and not d.record.starting_elsewhere
    assert d.record.last_outcome == "recovered"


def test_what_came_last_is_for_people_and_steers_nothing() -> None:
    # The typed field decides; ``last_outcome`` is whatever was shown last.
    words = Record("s1", "Shop", Phase.STARTING, "STARTING", since=T0,
                   last_outcome="starting_elsewhere")
    step = core.decide(seen("WORKING"), words, T0 + 5, POLICY, MaxRandom())
    assert names(step) == [] and step.record is not None and step.record.phase is Phase.HEALTHY
    fact = Record("s1", "Shop", Phase.STARTING, "STARTING", since=T0,
                  last_outcome="anything", starting_elsewhere=True)
    step = core.decide(seen("WORKING"), fact, T0 + 5, POLICY, MaxRandom())
    assert names(step) == ["session.recovered"] and step.events[0].fields["by"] == "elsewhere"


def test_anything_else_that_comes_of_it_ends_its_starting_elsewhere() -> None:
    fact = Record("s1", "Shop", Phase.STARTING, "STARTING", since=T0,
                  last_outcome="starting_elsewhere", starting_elsewhere=True)
    for status in ("FAILED", "SCAN_QR_CODE"):
        step = core.decide(seen(status), fact, T0 + 5, POLICY, MaxRandom())
        assert step.record is not None and not step.record.starting_elsewhere, status
    step = core.vanished(fact, T0 + 5, POLICY, configured=True)
    assert step.record is not None and not step.record.starting_elsewhere
    # An unknown status is not an outcome: it still came up by someone else's start.
    odd = core.decide(seen("???"), fact, T0 + 5, POLICY, MaxRandom()).record
    assert odd is not None and odd.starting_elsewhere and odd.phase is Phase.UNKNOWN


def test_a_given_up_session_stays_given_up_through_its_retry_until_healthy() -> None:
    d = Driver()
    d.record = Record("s1", "Shop", Phase.GAVE_UP, "FAILED", attempt=3,
                      failures=(T0, T0, T0), next_attempt_at=T0 + 600)
    assert d.record.gave_up  # the phase says it
    probe = d.poll("FAILED", T0 + 600)
    assert d.record is not None and d.record.phase is Phase.VERIFYING and d.record.gave_up
    deferred = d.outcome(probe, Outcome(OutcomeKind.RATE_LIMITED, http_status=429), T0 + 600)
    assert deferred.record is not None and deferred.record.phase is Phase.GAVE_UP
    d.poll("WORKING", T0 + 700)
    assert d.record is not None and not d.record.gave_up
