"""The simulator's QR codes on a manual clock: only a session in SCAN_QR_CODE has one, it
rotates every ``qr_rotate`` seconds (a scenario and admin setting), both paths answer it,
and the request log names them ``qr``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from supervisor.simulator import ManualClock, ScenarioError, Simulator, UnknownSession
from supervisor.simulator.gate import classify
from supervisor.simulator.scenario import parse_scenario

Make = Callable[..., Simulator]
# WhatsApp's pairing string: "2@" and a ref, then comma-separated base64 keys.
PAIRING = re.compile(r"2@[A-Za-z0-9+/=]{40},(?:[A-Za-z0-9+/]{43}=,){2}[A-Za-z0-9+/]{43}=")


def answered(sim: Simulator, sid: str) -> tuple[int, object]:
    code, body = sim.api_qr(sid)
    return code, json.loads(body)


def test_only_a_session_to_scan_has_a_code(make_sim: Make) -> None:
    sim = make_sim(sessions=2)
    sim.set_status("sess-0001", "SCAN_QR_CODE")
    code, body = answered(sim, "sess-0001")
    assert code == 200
    assert isinstance(body, dict) and PAIRING.fullmatch(body["data"])
    assert answered(sim, "sess-0002") == (422, {
        "statusCode": 422, "error": "Unprocessable Entity",
        "message": "Can get QR code only in SCAN_QR_CODE status. The current status is WORKING"})
    assert sim.qr_payload("sess-0002") is None
    assert answered(sim, "nope")[0] == 404
    with pytest.raises(UnknownSession):
        sim.qr_payload("nope")


@pytest.mark.parametrize("status", ["STOPPED", "STARTING", "FAILED", "CONNECTED", "CREATED"])
def test_every_other_status_answers_422(make_sim: Make, status: str) -> None:
    sim = make_sim(sessions=1)
    sim.set_status("sess-0001", status)
    assert answered(sim, "sess-0001")[0] == 422


def test_the_status_is_compared_case_insensitively(make_sim: Make) -> None:
    sim = make_sim(sessions=1)
    sim.set_status("sess-0001", "scan_qr_code")
    assert answered(sim, "sess-0001")[0] == 200


def test_the_code_rotates_every_qr_rotate_seconds_from_entering_the_status(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(sessions=1)
    clock.advance(7.3)  # the rotation counts from the status, not from the start
    sim.set_status("sess-0001", "SCAN_QR_CODE")
    first = sim.qr_payload("sess-0001")
    assert sim.qr_state("sess-0001")["rotates_in"] == pytest.approx(20.0)
    clock.advance(19.9)
    assert sim.qr_payload("sess-0001") == first
    assert sim.qr_state("sess-0001")["rotates_in"] == pytest.approx(0.1)
    clock.advance(0.1)
    second = sim.qr_payload("sess-0001")
    clock.advance(20.0)
    third = sim.qr_payload("sess-0001")
    assert len({first, second, third}) == 3
    assert answered(sim, "sess-0001") == (200, {"data": third})


def test_entering_the_status_again_gives_new_codes(make_sim: Make, clock: ManualClock) -> None:
    sim = make_sim(sessions=1)
    sim.set_status("sess-0001", "SCAN_QR_CODE")
    before = sim.qr_payload("sess-0001")
    clock.advance(1.0)
    sim.set_status("sess-0001", "WORKING")
    sim.set_status("sess-0001", "SCAN_QR_CODE")
    assert sim.qr_payload("sess-0001") not in (None, before)


def test_a_restart_that_leads_to_scan_counts_from_when_it_got_there(
    make_sim: Make, clock: ManualClock
) -> None:
    sim = make_sim(sessions=1, start_delay=2.0, outcome="SCAN_QR_CODE")
    sim.set_status("sess-0001", "STOPPED")
    sim.api_action("sess-0001", "restart")
    assert sim.qr_payload("sess-0001") is None  # STARTING
    clock.advance(30.0)  # SCAN_QR_CODE from 2 s on, computed when read
    assert sim.qr_state("sess-0001")["rotates_in"] == pytest.approx(12.0)


def test_sessions_have_codes_of_their_own_and_each_simulator_its_own(
    clock: ManualClock,
) -> None:
    one = Simulator(sessions=2, api_key="k", clock=clock)
    other = Simulator(sessions=2, api_key="k", clock=clock)
    for sim in (one, other):
        for sid in ("sess-0001", "sess-0002"):
            sim.set_status(sid, "SCAN_QR_CODE")
    codes = {sim.qr_payload(sid) for sim in (one, other) for sid in ("sess-0001", "sess-0002")}
    assert len(codes) == 4


def test_qr_rotate_is_a_fault_option_set_by_scenario_and_at_run_time(
    clock: ManualClock,
) -> None:
    scenario = parse_scenario({"qr_rotate": 5})
    sim = Simulator(scenario, sessions=1, api_key="k", clock=clock)
    assert sim.faults.qr_rotate == 5.0
    assert sim.faults_dict()["qr_rotate"] == 5.0
    sim.set_status("sess-0001", "SCAN_QR_CODE")
    first = sim.qr_payload("sess-0001")
    clock.advance(5.0)
    assert sim.qr_payload("sess-0001") != first
    sim.update_faults(qr_rotate=60)
    assert sim.qr_state("sess-0001")["rotates_in"] == pytest.approx(55.0)
    assert Simulator(sessions=0, api_key="k").faults.qr_rotate == 20.0  # the default


@pytest.mark.parametrize("value", [0, -1, "20", True])
def test_a_bad_qr_rotate_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ScenarioError, match=r"^qr_rotate: "):
        parse_scenario({"qr_rotate": value})


def test_both_paths_are_qr_requests() -> None:
    assert classify("GET", "/sessions/s1/auth/qr") == ("qr", "s1")
    assert classify("GET", "/sessions/s1/qr") == ("qr", "s1")
    assert classify("POST", "/sessions/s1/qr") == ("other", "s1")
