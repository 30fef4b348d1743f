"""The supervisor against the simulator over real HTTP: no mocks."""

from __future__ import annotations

import itertools

import pytest
from structlog.testing import capture_logs

from supervisor.domain.models import Phase
from supervisor.simulator import RequestRecord, SimulatorServer
from tests.e2e.conftest import Running, SimFactory, runtime_for
from tests.waiting import until

pytestmark = pytest.mark.e2e


def restarts(server: SimulatorServer, session_id: str) -> list[RequestRecord]:
    return [r for r in server.simulator.requests()
            if r.kind == "restart" and r.session == session_id]


async def test_stopped_session_is_restarted_and_seen_healthy(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b", "status": "STOPPED"}],
                        "session_count": 0})
    with capture_logs() as events:
        running = Running(runtime_for(server))
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events))
        assert await running.stop() == 0
    assert server.simulator.status("b") == "WORKING"
    assert len(restarts(server, "b")) == 1
    assert restarts(server, "a") == []
    record = running.runtime.store.get("b")
    assert record is not None and record.phase is Phase.HEALTHY


async def test_error_session_answering_409_is_stopped_then_restarted(
    simulator: SimFactory,
) -> None:
    server = simulator({"sessions": [{"id": "e", "status": "ERROR"}], "session_count": 0,
                        "conflict_on_failed_restart": True})
    with capture_logs() as events:
        running = Running(runtime_for(server))
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events))
        await running.stop()
    calls = [(r.kind, r.status) for r in server.simulator.requests() if r.session == "e"]
    assert calls[:4] == [("restart", 409), ("get", 200), ("stop", 200), ("restart", 200)]
    conflict = next(e for e in events if e["event"] == "restart.conflict")
    assert conflict["resolution"] == "stop_then_restart"
    assert conflict["http_status"] == 409 and conflict["attempt"] == 1
    assert server.simulator.status("e") == "WORKING"


async def test_flapping_session_backs_off_and_is_given_up_on(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "f", "status": "FAILED", "outcome": "FAILED"}],
                        "session_count": 0, "start_delay": 0.1})
    with capture_logs() as events:
        running = Running(runtime_for(server, max_restarts=4,
                                      starting_timeout=1.0))
        await until(lambda: any(e["event"] == "session.gave_up" for e in events), timeout=20)
        # After giving up: no further restart for gave_up_retry_interval (an hour).
        count = len(restarts(server, "f"))
        target = running.daemon.polls + 5
        await until(lambda: running.daemon.polls >= target)
        assert len(restarts(server, "f")) == count
        await running.stop()
    times = [r.monotonic for r in restarts(server, "f")]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == sorted(gaps), f"restart intervals should grow: {gaps}"
    assert gaps[-1] > gaps[0] + 0.3
    assert sum(e["event"] == "session.gave_up" for e in events) == 1


async def test_scan_qr_code_session_is_never_restarted(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "q", "status": "SCAN_QR_CODE"}],
                        "session_count": 0})
    with capture_logs() as events:
        running = Running(runtime_for(server))
        await until(lambda: running.daemon.polls >= 15)
        await running.stop()
    assert restarts(server, "q") == []
    assert [e["event"] for e in events].count("session.needs_person") == 1


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_burst_is_honoured_with_no_early_request(
    simulator: SimFactory, form: str,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    runtime = runtime_for(server)
    with capture_logs() as events:
        running = Running(runtime)
        await until(lambda: running.daemon.polls >= 2)
        server.simulator.update_faults(
            rate_limit={"burst": 3, "retry_after": 1, "retry_after_form": form})
        server.simulator.set_status("b", "STOPPED")
        await until(lambda: server.simulator.status("b") == "WORKING"
                    and any(e["event"] == "restart.succeeded" for e in events), timeout=15)
        await running.stop()
    stats = server.simulator.stats()
    assert stats["rate_limited"] == 3
    assert stats["early"] == 0
    assert all(not r.early for r in server.simulator.requests())
    assert sum(e["event"] == "api.rate_limited" for e in events) == 3


@pytest.mark.parametrize("mode", ["refuse", "503"])
async def test_outage_is_ridden_out_and_supervision_resumes(
    simulator: SimFactory, mode: str,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    with capture_logs() as events:
        running = Running(runtime_for(server))
        await until(lambda: running.daemon.polls >= 2)
        server.simulator.start_outage(1.0, mode)  # type: ignore[arg-type]
        server.simulator.set_status("b", "FAILED")
        await until(lambda: any(e["event"] == "poll.failed" for e in events))
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events), timeout=15)
        await running.stop()
    failed = [e for e in events if e["event"] == "poll.failed"]
    assert failed and {e["error"] for e in failed} <= {"unreachable", "server_error"}
    assert server.simulator.status("b") == "WORKING"


async def test_a_thousand_sessions_cost_one_list_request_per_cycle(
    simulator: SimFactory,
) -> None:
    server = simulator({"session_count": 1000})
    running = Running(runtime_for(server, poll_interval=0.2))
    await until(lambda: running.daemon.polls >= 5, timeout=20)
    await running.stop()
    requests = server.simulator.requests()
    assert {r.kind for r in requests} == {"list"}
    assert len(requests) == running.daemon.polls


@pytest.mark.parametrize("shape", ["nested", "flat", "array"])
async def test_every_list_shape_is_understood(simulator: SimFactory, shape: str) -> None:
    server = simulator({"sessions": [{"id": "s", "status": "STOPPED"}], "session_count": 0,
                        "list_shape": shape})
    with capture_logs() as events:
        running = Running(runtime_for(server))
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events))
        await running.stop()
    assert not any(e["event"] == "poll.item_unreadable" for e in events)
