"""The session life cycle on a manual clock: nothing here sleeps."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from supervisor.simulator import (
    ManualClock,
    Scenario,
    ScenarioError,
    SessionSpec,
    Simulator,
    UnknownSession,
)
from supervisor.simulator.faults import Faults
from supervisor.simulator.simulator import Action

Make = Callable[..., Simulator]


def act(sim: Simulator, sid: str, action: Action) -> tuple[int, dict[str, object]]:
    code, body = sim.api_action(sid, action)
    return code, json.loads(body)


def test_generated_sessions_are_numbered_named_and_working(make_sim: Make) -> None:
    sim = make_sim(sessions=3)
    assert sim.session_ids() == ["sess-0001", "sess-0002", "sess-0003"]
    obj = sim.session_object("sess-0002")
    assert obj["uniqueSessionId"] == "sess-0002"
    assert obj["status"] == "WORKING"
    assert obj["phoneNumber"] == "+15550000002"
    assert obj["sessionName"] == "Session sess-0002"
    assert len({sim.session_object(s)["id"] for s in sim.session_ids()}) == 3


def test_explicit_sessions_redefine_generated_ones_and_add_others(make_sim: Make) -> None:
    scenario = Scenario(
        initial_status="STOPPED",
        sessions=(SessionSpec(id="sess-0002", status="FAILED"), SessionSpec(id="extra")),
    )
    sim = make_sim(sessions=2, scenario=scenario)
    assert sim.statuses() == {"sess-0001": "STOPPED", "sess-0002": "FAILED", "extra": "WORKING"}


def test_restart_of_stopped_session_starts_then_works_after_the_delay(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(start_delay=2.0)
    sim.set_status("sess-0001", "STOPPED")
    code, body = act(sim, "sess-0001", "restart")
    assert (code, body["status"]) == (200, "STARTING")
    clock.advance(1.999)
    assert sim.status("sess-0001") == "STARTING"
    clock.advance(0.001)
    assert sim.status("sess-0001") == "WORKING"


@pytest.mark.parametrize("outcome", ["FAILED", "SCAN_QR_CODE", "ERROR", "CONNECTED"])
def test_restart_leads_to_the_configured_outcome(
    make_sim: Make, clock: ManualClock, outcome: str
) -> None:
    sim = make_sim(start_delay=1.0, outcome=outcome)
    sim.set_status("sess-0001", "STOPPED")
    act(sim, "sess-0001", "restart")
    clock.advance(1.0)
    assert sim.status("sess-0001") == outcome


def test_outcome_starting_means_stuck_for_ever(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim(outcome="STARTING")
    sim.set_status("sess-0001", "STOPPED")
    act(sim, "sess-0001", "restart")
    clock.advance(10_000)
    assert sim.status("sess-0001") == "STARTING"
    assert sim.session("sess-0001")["pending"] is None


def test_per_session_outcome_sequence_is_used_one_per_start_and_the_last_repeats(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(start_delay=1.0)
    sim.set_outcome("sess-0001", ["FAILED", "FAILED", "WORKING"])
    seen = []
    for _ in range(4):
        sim.set_status("sess-0001", "STOPPED")
        act(sim, "sess-0001", "restart")
        clock.advance(1.0)
        seen.append(sim.status("sess-0001"))
    assert seen == ["FAILED", "FAILED", "WORKING", "WORKING"]
    assert sim.status("sess-0002") == "WORKING"  # others keep the global outcome


def test_global_outcome_sequence_counts_per_session(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim(start_delay=0.0, outcome=["FAILED", "WORKING"])
    for sid in ("sess-0001", "sess-0002"):
        sim.set_status(sid, "STOPPED")
        act(sim, sid, "restart")
    assert sim.statuses()["sess-0001"] == "FAILED"
    assert sim.statuses()["sess-0002"] == "FAILED"
    act(sim, "sess-0001", "restart")  # FAILED may be restarted
    assert sim.status("sess-0001") == "WORKING"


@pytest.mark.parametrize("status", ["WORKING", "CONNECTED", "STARTING", "SCAN_QR_CODE", "working"])
def test_restart_of_running_session_is_a_conflict(make_sim: Make, status: str) -> None:
    sim = make_sim()
    sim.set_status("sess-0001", status)
    code, body = act(sim, "sess-0001", "restart")
    assert code == 409
    assert body["statusCode"] == 409
    assert "already running" in str(body["message"])
    assert sim.status("sess-0001") == status


@pytest.mark.parametrize("status", ["FAILED", "ERROR", "STOPPED", "CREATED", "UNHEARD_OF"])
def test_restart_of_stopped_failed_or_unknown_status_is_accepted(
    make_sim: Make, status: str
) -> None:
    sim = make_sim()
    sim.set_status("sess-0001", status)
    assert act(sim, "sess-0001", "restart")[0] == 200
    assert sim.status("sess-0001") == "STARTING"


def test_conflict_on_failed_restart_needs_a_stop_first(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim(conflict_on_failed_restart=True, start_delay=1.0)
    for status in ("FAILED", "ERROR"):
        sim.set_status("sess-0001", status)
        code, body = act(sim, "sess-0001", "restart")
        assert code == 409
        assert "must be in a STOPPED state" in str(body["message"])
        assert act(sim, "sess-0001", "stop")[0] == 200
        assert sim.status("sess-0001") == "STOPPED"
        assert act(sim, "sess-0001", "restart")[0] == 200
        clock.advance(1.0)
        assert sim.status("sess-0001") == "WORKING"


def test_start_accepts_stopped_and_failed_and_answers_422_otherwise(make_sim: Make) -> None:
    sim = make_sim()
    for status in ("STOPPED", "FAILED", "ERROR", "CREATED"):
        sim.set_status("sess-0001", status)
        assert act(sim, "sess-0001", "start")[0] == 200
        assert sim.status("sess-0001") == "STARTING"
    for status in ("WORKING", "STARTING", "SCAN_QR_CODE", "CONNECTED"):
        sim.set_status("sess-0001", status)
        code, body = act(sim, "sess-0001", "start")
        assert code == 422
        assert body["error"] == "Unprocessable Entity"


def test_start_only_from_stopped_refuses_failed(make_sim: Make) -> None:
    sim = make_sim(start_only_from_stopped=True)
    sim.set_status("sess-0001", "FAILED")
    assert act(sim, "sess-0001", "start")[0] == 422
    sim.set_status("sess-0001", "STOPPED")
    assert act(sim, "sess-0001", "start")[0] == 200


@pytest.mark.parametrize("status", ["WORKING", "STARTING", "FAILED", "SCAN_QR_CODE", "STOPPED"])
def test_stop_works_from_any_state_and_drops_a_pending_start(
    make_sim: Make, clock: ManualClock, status: str
) -> None:
    sim = make_sim(start_delay=1.0)
    sim.set_status("sess-0001", "STOPPED")
    act(sim, "sess-0001", "restart")
    sim.set_status("sess-0001", status)
    code, body = act(sim, "sess-0001", "stop")
    assert (code, body["status"]) == (200, "STOPPED")
    clock.advance(5)
    assert sim.status("sess-0001") == "STOPPED"


def test_post_status_is_used_for_successful_posts(make_sim: Make) -> None:
    sim = make_sim(post_status=201)
    assert act(sim, "sess-0001", "stop")[0] == 201


def test_unknown_session(make_sim: Make) -> None:
    sim = make_sim()
    assert sim.api_action("nope", "restart")[0] == 404
    assert sim.api_get("nope")[0] == 404
    with pytest.raises(UnknownSession, match="no session 'nope'"):
        sim.set_status("nope", "FAILED")


def test_set_status_stores_any_well_formed_status_verbatim(make_sim: Make) -> None:
    sim = make_sim()
    sim.set_status("sess-0001", "Hibernating")
    assert sim.session_object("sess-0001")["status"] == "Hibernating"
    with pytest.raises(ValueError, match="malformed status"):
        sim.set_status("sess-0001", "not a status")


def test_updated_at_is_the_wall_time_of_the_transition_even_when_read_later(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(start_delay=2.0)
    sim.set_status("sess-0001", "STOPPED")  # at wall 1_700_000_000 = 2023-11-14T22:13:20Z
    act(sim, "sess-0001", "restart")
    clock.advance(100)
    obj = sim.session_object("sess-0001")
    assert obj["status"] == "WORKING"
    assert obj["updatedAt"] == "2023-11-14T22:13:22.000Z"


def test_random_failures_are_seeded_and_reproducible() -> None:
    def run() -> dict[str, str]:
        clock = ManualClock()
        scenario = Scenario(faults=Faults(seed=3))
        sim = Simulator(scenario, sessions=50, clock=clock, api_key="k")
        sim.update_faults(random_failures={"rate": 0.1})
        clock.advance(5)
        return sim.statuses()

    first, second = run(), run()
    assert first == second
    assert 0 < list(first.values()).count("FAILED") < 50


def test_random_failure_rate_is_a_probability_per_second(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(sessions=4000, seed=11, random_failures={"rate": 0.5})
    clock.advance(1.0)
    failed = list(sim.statuses().values()).count("FAILED")
    assert 1800 < failed < 2200  # expected 2000: (1 - 0.5) ** 1 survive
    clock.advance(1.0)
    failed = list(sim.statuses().values()).count("FAILED")
    assert 2800 < failed < 3200  # expected 3000: 1 - 0.5 ** 2


def test_random_failures_limited_to_sessions_with_their_status(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(
        sessions=3, random_failures={"rate": 1.0, "status": "STOPPED", "sessions": ["sess-0002"]}
    )
    clock.advance(0.001)
    assert sim.statuses() == {
        "sess-0001": "WORKING",
        "sess-0002": "STOPPED",
        "sess-0003": "WORKING",
    }


def test_random_failures_hit_only_healthy_sessions(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim(sessions=2, start_delay=5.0)
    sim.set_status("sess-0001", "STOPPED")
    act(sim, "sess-0001", "restart")
    sim.set_status("sess-0002", "SCAN_QR_CODE")
    sim.update_faults(random_failures={"rate": 1.0})
    clock.advance(4.0)
    assert sim.statuses() == {"sess-0001": "STARTING", "sess-0002": "SCAN_QR_CODE"}
    clock.advance(1.0)  # WORKING at 5.0 s, and fails at that same instant
    assert sim.status("sess-0001") == "FAILED"


def test_scheduled_failures_fire_at_their_time_for_their_sessions(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(
        sessions=3,
        scheduled_failures=[
            {"at": 10, "session": "sess-0002", "status": "STOPPED"},
            {"at": 20, "status": "ERROR"},
        ],
    )
    clock.advance(9.99)
    assert set(sim.statuses().values()) == {"WORKING"}
    clock.advance(0.01)
    assert sim.statuses() == {
        "sess-0001": "WORKING",
        "sess-0002": "STOPPED",
        "sess-0003": "WORKING",
    }
    clock.advance(10)
    assert set(sim.statuses().values()) == {"ERROR"}


def test_events_are_applied_in_time_order_when_read_late(
    make_sim: Make, clock: ManualClock
) -> None:
    # restart at 0 -> WORKING at 1; scheduled FAILED at 3: read only at 5.
    sim = make_sim(sessions=1, start_delay=1.0, scheduled_failures=[{"at": 3, "status": "FAILED"}])
    sim.set_status("sess-0001", "STOPPED")
    act(sim, "sess-0001", "restart")
    clock.advance(5)
    obj = sim.session_object("sess-0001")
    assert obj["status"] == "FAILED"
    assert obj["updatedAt"] == "2023-11-14T22:13:23.000Z"


def test_scheduled_failures_in_the_past_do_not_fire_when_set(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(sessions=1)
    clock.advance(10)
    sim.update_faults(scheduled_failures=[{"at": 5}, {"at": 12, "status": "STOPPED"}])
    assert sim.status("sess-0001") == "WORKING"
    clock.advance(2)
    assert sim.status("sess-0001") == "STOPPED"


def test_add_sessions_continues_the_numbering(make_sim: Make) -> None:
    sim = make_sim(sessions=2)
    added = sim.add_sessions(2, status="stopped", specs=[{"id": "mine", "status": "FAILED"}])
    assert added == ["sess-0003", "sess-0004", "mine"]
    assert sim.status("sess-0004") == "STOPPED"
    assert sim.status("mine") == "FAILED"


def test_reset_goes_back_to_the_scenario(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim(sessions=2)
    sim.set_status("sess-0001", "FAILED")
    sim.add_sessions(1)
    sim.update_faults(list_shape="array")
    clock.advance(3)
    sim.reset()
    assert sim.statuses() == {"sess-0001": "WORKING", "sess-0002": "WORKING"}
    assert sim.faults.list_shape == "nested"
    assert sim.uptime() == 0.0


def test_raw_state_shows_pending_transition_and_counters(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(start_delay=2.0)
    act(sim, "sess-0001", "stop")
    act(sim, "sess-0001", "restart")
    clock.advance(0.5)
    raw = sim.session("sess-0001")
    assert raw["status"] == "STARTING"
    assert raw["pending"] == {"status": "WORKING", "in": 1.5}
    assert (raw["starts"], raw["restarts"], raw["stops"]) == (1, 1, 1)
    assert raw["object"]["uniqueSessionId"] == "sess-0001"


def test_add_sessions_rejects_bad_status_and_clashing_ids(make_sim: Make) -> None:
    sim = make_sim(sessions=2)
    with pytest.raises(ScenarioError, match="status: must be a known status"):
        sim.add_sessions(1, status="bogus")
    with pytest.raises(ScenarioError, match="'sess-0002' is taken"):
        sim.add_sessions(specs=[{"id": "sess-0002"}])
    # a generated id never collides with an explicit one given in the same call
    assert sim.add_sessions(1, specs=[{"id": "sess-0003"}]) == ["sess-0004", "sess-0003"]
    assert len(sim.session_ids()) == 4
