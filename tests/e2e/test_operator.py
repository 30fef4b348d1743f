"""A person's actions against the simulator over real HTTP: a session paused with the
command line while a daemon runs on the same state file is left alone, and restarted once
resumed; ``Operator.restart_now`` makes exactly one restart request."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.domain.models import Phase, Record
from supervisor.runtime.operator import Operator, Refused
from supervisor.simulator import RequestRecord, SimulatorServer
from supervisor.state.sqlite import SqliteStore
from tests.e2e.conftest import Running, SimFactory, cli, runtime_for
from tests.waiting import until

pytestmark = pytest.mark.e2e


def restarts(server: SimulatorServer, session_id: str) -> list[RequestRecord]:
    return [r for r in server.simulator.requests()
            if r.kind in ("restart", "stop") and r.session == session_id]


def state_cli(path: Path, *args: str) -> str:
    done = cli(*args, env={"WASEND_SUPERVISOR_STATE_PATH": str(path)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_a_paused_stopped_session_is_left_alone_and_restarted_once_resumed(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    with capture_logs() as events:
        running = Running(runtime_for(server, state_path=str(path)))
        store = running.runtime.store
        try:
            await until(lambda: store.get("b") is not None)
            assert state_cli(path, "pause", "b", "--by", "alice").startswith(
                "session b: paused by alice")
            await until(lambda: "b" in store.holds())
            server.simulator.set_status("b", "STOPPED")
            server.simulator.set_status("a", "STOPPED")  # beside it, one not paused
            await until(lambda: (store.get("b") or Record("b")).last_status == "STOPPED")
            seen_stopped = running.daemon.polls
            await until(lambda: running.daemon.polls >= seen_stopped + 3)
            assert restarts(server, "b") == []
            assert server.simulator.status("b") == "STOPPED"
            assert len([r for r in restarts(server, "a") if r.kind == "restart"]) == 1

            assert state_cli(path, "resume", "b", "--by", "bob") == (
                "session b: resumed; the next poll supervises it as usual")
            await until(lambda: any(e["event"] == "restart.succeeded"
                                    and e["session_id"] == "b" for e in events))
        finally:
            await running.stop()
    assert [(r.kind, r.status) for r in restarts(server, "b")] == [("restart", 200)]
    assert server.simulator.status("b") == "WORKING"


async def test_restart_now_of_a_given_up_session_makes_exactly_one_request(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    server = simulator({"sessions": [{"id": "f", "status": "FAILED"}], "session_count": 0,
                        "start_delay": 5.0})
    with capture_logs():
        store = SqliteStore.open(path)
    now = time.time()
    store.put(Record("f", phase=Phase.GAVE_UP, last_status="FAILED", attempt=4,
                     next_attempt_at=now + 3600))
    store.close()
    with capture_logs() as events:
        running = Running(runtime_for(server, state_path=str(path), starting_timeout=30.0))
        operator = Operator(running.daemon)
        try:
            await until(lambda: running.daemon.polls >= 3)
            assert restarts(server, "f") == []  # given up: its next try is an hour away
            await operator.restart_now("f", "alice")
            assert [(r.kind, r.status) for r in restarts(server, "f")] == [("restart", 200)]
            record = running.runtime.store.get("f")
            assert record is not None and record.phase is Phase.VERIFYING
            polls = running.daemon.polls
            await until(lambda: running.daemon.polls >= polls + 2)
            with pytest.raises(Refused, match="has a restart in flight"):
                await operator.restart_now("f", "alice")  # still STARTING: being verified
        finally:
            await running.stop()
    assert [(r.kind, r.status) for r in restarts(server, "f")] == [("restart", 200)]
    names = [e["event"] for e in events if e.get("session_id") == "f"]
    assert names[:3] == ["operator.restart_requested", "restart.requested",
                         "restart.accepted"]
    assert names.count("restart.requested") == 1
    assert names[-1] == "operator.refused"
