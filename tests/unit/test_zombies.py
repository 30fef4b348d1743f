"""Zombie sessions: healthy by their status while their engine says not connected. The
decision core believes the status for ``zombie_after``, then fails the session like a
restartable one (a stop first), and the usual backoff, verification and give-up apply."""

from __future__ import annotations

import msgspec

from supervisor.domain import core
from supervisor.domain import events as ev
from supervisor.domain.history import entry
from supervisor.domain.models import (
    Action,
    ActionKind,
    Outcome,
    OutcomeKind,
    Phase,
    SessionInfo,
    Step,
)
from supervisor.domain.policy import Policy
from tests.unit.test_core import POLICY, T0, Driver, names

ZOMBIE = msgspec.structs.replace(POLICY, zombie_after=120.0)


class Watch(Driver):
    """The core's driver, with the engine's view in each sighting."""

    def see(self, status: str, at: float, connected: bool | None,
            previous: float | None = None) -> Step:
        step = core.decide(SessionInfo("s1", "Shop", status, connected), self.record, at,
                           self.policy, self.rng, previous_poll=previous)
        self.record = step.record
        self.events += names(step)
        return step


def test_a_healthy_status_with_a_disconnected_engine_is_believed_until_zombie_after() -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0, True)
    first = d.see("WORKING", T0 + 30, False)
    assert first.action is None and first.events == ()
    assert d.record is not None and d.record.disconnected_since == T0 + 30
    assert d.phase() is Phase.HEALTHY
    assert d.see("WORKING", T0 + 149.9, False).action is None
    assert d.record.disconnected_since == T0 + 30  # counted from the first sighting


def test_past_zombie_after_it_is_failed_and_stopped_before_it_is_restarted() -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0, False)
    step = d.see("WORKING", T0 + 120, False)
    assert names(step) == [ev.SESSION_ZOMBIE, ev.SESSION_UNHEALTHY, ev.RESTART_REQUESTED]
    zombie, unhealthy = step.events[0].fields, step.events[1].fields
    assert zombie["reason"] == "engine_disconnected" and zombie["disconnected_for"] == 120.0
    assert zombie["status"] == "WORKING" and unhealthy["reason"] == "engine_disconnected"
    assert step.action == Action(ActionKind.STOP, "s1", 1)  # WASend restarts only a stopped one
    assert d.phase() is Phase.VERIFYING
    assert d.record is not None and d.record.zombie is True
    # the history says why
    row = entry(step.events[0], T0 + 120)
    assert row is not None and row.outcome == "zombie" and row.reason == "engine_disconnected"


def test_a_zombie_restarted_and_seen_connected_is_a_success_and_forgets_the_disconnection(
) -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0, False)
    stop = d.see("WORKING", T0 + 120, False)
    restart = d.outcome(stop, Outcome(OutcomeKind.OK, status="STOPPED"), T0 + 121)
    assert restart.action == Action(ActionKind.RESTART, "s1", 1)
    d.outcome(restart, Outcome(OutcomeKind.OK, status="STARTING"), T0 + 122)
    # the engine still connecting while the status already says WORKING: still starting
    assert d.see("WORKING", T0 + 130, False).action is None
    assert d.phase() is Phase.VERIFYING
    done = d.see("WORKING", T0 + 140, True)
    assert names(done) == [ev.RESTART_SUCCEEDED, ev.SESSION_RECOVERED]
    assert d.record is not None and d.record.disconnected_since is None
    assert d.record.stop_first is False and d.record.zombie is False


def test_a_restart_whose_engine_never_connects_fails_at_starting_timeout() -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0, False)
    stop = d.see("WORKING", T0 + 120, False)
    restart = d.outcome(stop, Outcome(OutcomeKind.OK, status="STOPPED"), T0 + 121)
    d.outcome(restart, Outcome(OutcomeKind.OK, status="STARTING"), T0 + 121)
    failed = d.see("WORKING", T0 + 121 + POLICY.starting_timeout, False)
    assert names(failed) == [ev.RESTART_FAILED]
    assert failed.events[0].fields["reason"] == "starting_timeout"


def test_a_zombie_whose_restart_must_wait_stays_failed_not_recovered() -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0, False)
    stop = d.see("WORKING", T0 + 120, False)
    d.outcome(stop, Outcome(OutcomeKind.RATE_LIMITED, http_status=429), T0 + 120)
    assert d.phase() is Phase.UNHEALTHY
    again = d.see("WORKING", T0 + 150, False)
    assert ev.SESSION_RECOVERED not in names(again) and ev.SESSION_ZOMBIE not in names(again)
    assert again.action is None or again.action.kind is ActionKind.STOP  # still a zombie
    assert d.phase() in (Phase.UNHEALTHY, Phase.VERIFYING)


def test_an_engine_that_reconnects_in_time_ends_the_count() -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0, False)
    back = d.see("WORKING", T0 + 100, True)
    assert back.action is None and back.events == ()
    assert d.record is not None and d.record.disconnected_since is None
    d.see("WORKING", T0 + 110, False)
    assert d.see("WORKING", T0 + 200, False).action is None  # counted anew from +110


def test_an_engine_the_answer_does_not_report_is_no_sign_of_anything() -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0, None)
    assert d.see("WORKING", T0 + 10_000, None).action is None
    assert d.record is not None and d.record.disconnected_since is None


def test_zombie_after_0_turns_it_off() -> None:
    d = Watch(msgspec.structs.replace(POLICY, zombie_after=0.0))
    d.see("WORKING", T0, False)
    assert d.see("WORKING", T0 + 10_000, False).action is None
    assert d.record is not None and d.record.disconnected_since is None


def test_a_disconnected_session_is_not_stable_so_its_backoff_does_not_reset() -> None:
    d = Watch(ZOMBIE)
    step = d.see("STOPPED", T0, True)
    d.outcome(step, Outcome(OutcomeKind.OK, status="STARTING"), T0)
    d.see("WORKING", T0 + 10, True)  # recovered, attempt 1 kept until stable
    d.see("WORKING", T0 + 20, False)
    d.see("WORKING", T0 + 20 + POLICY.stable_after, False)
    assert d.record is not None and d.record.attempt == 1  # not reset while disconnected


def test_the_default_policy_catches_zombies_after_two_minutes() -> None:
    assert Policy().zombie_after == 120.0


def test_the_count_starts_at_the_last_poll_that_saw_the_engine_connected() -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0, True)
    d.see("WORKING", T0 + 30, False, previous=T0)  # connected at T0, lost since
    assert d.record is not None and d.record.disconnected_since == T0
    # polls every 30 s: failed at the first poll 120 s after T0, so within 120 s + one
    # interval of the loss, however soon after T0 it came
    assert d.see("WORKING", T0 + 119.9, False, previous=T0 + 90).action is None
    step = d.see("WORKING", T0 + 120, False, previous=T0 + 119.9)
    assert ev.SESSION_ZOMBIE in names(step)
    assert step.events[0].fields["disconnected_for"] == 120.0


def test_without_a_poll_before_it_or_for_a_new_session_the_count_starts_now() -> None:
    d = Watch(ZOMBIE)
    d.see("WORKING", T0 + 30, False, previous=T0)  # a session first seen now
    assert d.record is not None and d.record.disconnected_since == T0 + 30
    e = Watch(ZOMBIE)
    e.see("WORKING", T0, True)
    e.see("WORKING", T0 + 300, False, previous=None)  # the poll before failed
    assert e.record is not None and e.record.disconnected_since == T0 + 300
