"""``status`` on a file a real daemon is using: it is seen running, every session is
seen at its last poll, and once it stops the file turns stale."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.cli import main
from supervisor.runtime.wiring import build
from tests.e2e.conftest import Running, SimFactory
from tests.fakes import MaxRandom
from tests.faults.conftest import settings_at
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


async def test_status_sees_the_daemon_then_a_stale_file_once_it_stops(
    simulator: SimFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    state = tmp_path / "state.db"
    with capture_logs():
        running = Running(build(settings_at(server.base_url, state_path=state),
                                rng=MaxRandom()))
        await until(lambda: running.daemon.polls >= 3)
        assert main(["status", "--json", "--state-path", str(state)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert await running.stop() == 0
    assert report["daemon"]["running"] is True
    assert report["daemon"]["poll_interval"] == 0.1
    assert report["last_successful_poll"]["kind"] == "run"
    assert all(s["last_seen_ago"] is not None and s["last_seen_ago"] < 2.0
               for s in report["sessions"])
    stopped = time.time()
    await until(lambda: time.time() - stopped > 1.0)
    assert main(["status", "--state-path", str(state), "--stale-after", "1"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("daemon: none running; the last was ")
    assert ", stopped at 20" in lines[-1]  # it said so as it stopped
    assert lines[0].startswith(f"UNKNOWN: 2 session(s) in {state}; stale: the last successful")
