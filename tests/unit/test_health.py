"""Liveness and readiness as functions of the daemon's state and the (fake) clock."""

from __future__ import annotations

from supervisor.api.errors import ApiUnreachable, ServerError
from supervisor.ops.health import Health
from supervisor.runtime.cycle import PollResult
from tests.fakes import FakeClock

DOWN = ApiUnreachable("down", call="list")


def make(clock: FakeClock, alive: tuple[bool, str] = (True, "ok")) -> Health:
    return Health(clock, unready_after=90.0, alive=lambda: alive)


def test_not_ready_until_the_first_successful_poll() -> None:
    clock = FakeClock()
    health = make(clock)
    verdict = health.readiness()
    assert not verdict.ok and verdict.body["reason"] == "no successful poll yet"
    health.poll_done(PollResult(ok=False, error=DOWN))
    verdict = health.readiness()
    assert not verdict.ok
    assert verdict.body["reason"] == "no successful poll yet (last poll failed (unreachable))"
    health.poll_done(PollResult(ok=True))
    assert health.readiness().ok


def test_failures_inside_the_threshold_stay_ready_and_past_it_are_not() -> None:
    clock = FakeClock()
    health = make(clock)
    health.poll_done(PollResult(ok=True))
    clock.advance(30)
    health.poll_done(PollResult(ok=False, error=DOWN))
    clock.advance(30)
    health.poll_done(PollResult(ok=False, error=DOWN))
    verdict = health.readiness()
    assert verdict.ok and verdict.body["consecutive_failures"] == 2
    clock.advance(30.5)  # 90.5 s since the last success
    verdict = health.readiness()
    assert not verdict.ok
    assert verdict.body["reason"].startswith("no successful poll for 90 s")
    health.poll_done(PollResult(ok=True))
    assert health.readiness().ok
    assert health.readiness().body["reason"] == "polls are succeeding"


def test_a_poll_that_never_ends_makes_it_unready_too() -> None:
    clock = FakeClock()
    health = make(clock)
    health.poll_done(PollResult(ok=True))
    clock.advance(91)  # nothing reported since: stuck, or waiting out a long Retry-After
    assert not health.readiness().ok


def test_a_new_threshold_applies_at_once() -> None:
    clock = FakeClock()
    health = make(clock)
    health.poll_done(PollResult(ok=True))
    clock.advance(50)
    assert health.readiness().ok
    health.unready_after = 40
    assert not health.readiness().ok


def test_liveness_follows_the_scheduler_not_the_polls() -> None:
    clock = FakeClock()
    health = make(clock)
    for _ in range(10):
        health.poll_done(PollResult(ok=False, error=DOWN))
        clock.advance(100)
    assert health.liveness().ok
    dead = make(clock, alive=(False, "scheduler stopped"))
    verdict = dead.liveness()
    assert not verdict.ok and verdict.body == {"status": "dead", "reason": "scheduler stopped"}


def test_a_poll_skipped_while_backing_off_leaves_the_last_failure_standing() -> None:
    clock = FakeClock()
    health = Health(clock, unready_after=10, alive=lambda: (True, "ok"))
    health.poll_done(PollResult(ok=False, error=ServerError("503", call="list")))
    health.poll_done(PollResult(ok=False, skipped=True, skip_reason="api_unavailable"))
    assert health.last_outcome == "failed (server_error)"
    assert health.consecutive_failures == 1


def test_a_poll_that_could_not_use_the_state_file_makes_it_unready_at_once() -> None:
    clock = FakeClock()
    health = make(clock)
    health.poll_done(PollResult(ok=True))
    problem = "state.db was deleted while this process was using it; ..."
    health.poll_done(PollResult(ok=False, state_error=problem))
    verdict = health.readiness()
    assert not verdict.ok
    assert verdict.body["reason"] == f"the state file cannot be used: {problem}"
    health.poll_done(PollResult(ok=False, error=DOWN))  # says nothing of the state file
    assert not health.readiness().ok
    health.poll_done(PollResult(ok=True))
    assert health.readiness().ok


def view(role: str, problem: str | None = None) -> dict[str, object]:
    return {"role": role, "replica": "b", "leader": "a" if role == "standby" else "b",
            "epoch": 4, "lease_expires_in": 12.0, "problem": problem}


def test_among_replicas_a_standby_is_ready_while_it_reaches_the_database() -> None:
    clock = FakeClock()
    role = {"now": view("standby")}
    health = Health(clock, unready_after=90.0, alive=lambda: (True, "ok"),
                    leadership=lambda: dict(role["now"]))
    ready = health.readiness()  # it has never polled, and needs not
    assert ready.ok and ready.body["status"] == "standby"
    assert ready.body["reason"] == "standing by (leader: a)"
    assert (ready.body["role"], ready.body["leader"], ready.body["epoch"]) == ("standby", "a", 4)
    role["now"] = view("standby", problem="cannot reach postgresql://db:5432/w: refused")
    cut_off = health.readiness()
    assert not cut_off.ok and "database cannot be reached" in cut_off.body["reason"]


def test_among_replicas_the_leader_is_judged_by_its_polls_and_unready_once_stopped() -> None:
    clock = FakeClock()
    role = {"now": view("leader")}
    health = Health(clock, unready_after=90.0, alive=lambda: (True, "ok"),
                    leadership=lambda: dict(role["now"]))
    assert not health.readiness().ok  # elected, no poll yet
    health.poll_done(PollResult(ok=True))
    assert health.readiness().ok and health.readiness().body["role"] == "leader"
    role["now"] = view("stopped", problem="lost the connection to postgresql://db:5432/w")
    stopped = health.readiness()
    assert not stopped.ok and stopped.body["role"] == "stopped"
    assert stopped.body["reason"].startswith("supervision stopped: the lease could not be renewed")
