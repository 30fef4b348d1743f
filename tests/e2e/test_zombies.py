"""Zombie sessions against the simulator over real HTTP: a session that says WORKING while
its engine says not connected is restarted (a stop, then a restart) once that has lasted
``zombie_after``, and watching for it costs no request beyond the list."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from supervisor.domain import events as ev
from supervisor.domain.models import Phase
from tests.e2e.conftest import Running, SimFactory, runtime_for
from tests.waiting import until

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("shape", ["nested", "flat"])
async def test_a_zombie_is_stopped_restarted_and_seen_connected(
        simulator: SimFactory, shape: str) -> None:
    server = simulator({"sessions": [{"id": "z", "zombie": True}, {"id": "ok"}],
                        "session_count": 0, "list_shape": shape, "start_delay": 0.1})
    with capture_logs() as events:
        running = Running(runtime_for(server, zombie_after=1.0))
        await until(lambda: any(e["event"] == ev.RESTART_SUCCEEDED for e in events), timeout=15)
        assert await running.stop() == 0
    (zombie,) = [e for e in events if e["event"] == ev.SESSION_ZOMBIE]
    assert zombie["session_id"] == "z" and zombie["reason"] == "engine_disconnected"
    assert zombie["disconnected_for"] >= 1.0
    calls = [r.kind for r in server.simulator.requests() if r.session == "z"]
    assert calls[:2] == ["stop", "restart"]
    assert server.simulator.session("z")["zombie"] is False
    assert [r for r in server.simulator.requests() if r.session == "ok"] == []
    record = running.runtime.store.get("z")
    assert record is not None and record.phase is Phase.HEALTHY
    assert record.disconnected_since is None and record.zombie is False


async def test_watching_for_zombies_costs_no_request_beyond_the_list(
        simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "z", "zombie": True}], "session_count": 200})
    with capture_logs() as events:
        running = Running(runtime_for(server, poll_interval=0.1, zombie_after=60.0))
        await until(lambda: running.daemon.polls >= 10, timeout=20)
        await running.stop()
    assert {r.kind for r in server.simulator.requests()} == {"list"}
    assert not [e for e in events if e["event"] == ev.SESSION_ZOMBIE]
    record = running.runtime.store.get("z")
    assert record is not None and record.disconnected_since is not None


async def test_zombie_after_0_leaves_a_zombie_alone(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "z", "zombie": True}], "session_count": 0})
    running = Running(runtime_for(server, zombie_after=0.0))
    await until(lambda: running.daemon.polls >= 15, timeout=20)
    await running.stop()
    assert {r.kind for r in server.simulator.requests()} == {"list"}
