"""``check`` from a timer with Alertmanager: a real ``check`` process against the simulator
over real HTTP, posting to Debian's prometheus-alertmanager on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.simulator import SimulatorServer, parse_scenario
from tests.alerts.conftest import Alertmanager
from tests.e2e.conftest import API_KEY, cli

pytestmark = pytest.mark.e2e


def test_each_check_over_an_open_episode_keeps_it_firing_in_alertmanager(
    alertmanager: Alertmanager, tmp_path: Path,
) -> None:
    """Alertmanager resolves by itself an alert that is not posted again before its
    ``endsAt``: each ``check`` over an episode still open posts it again (as the daemon
    does every minute), so that a check from a timer keeps it firing."""
    scenario = parse_scenario({"sessions": [{"id": "q", "status": "SCAN_QR_CODE"}],
                               "session_count": 0, "seed": 1}, "test")
    with SimulatorServer(scenario=scenario, api_key=API_KEY) as server:
        env = {"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": API_KEY,
               "WASEND_SUPERVISOR_STATE_PATH": str(tmp_path / "state.db"),
               "WASEND_SUPERVISOR_ALERTS__ALERTMANAGER_URL": alertmanager.url}
        ends = []
        for _ in range(2):
            done = cli("check", env=env)
            assert done.returncode == 2, done.stdout + done.stderr  # q needs a person
            (alert,) = alertmanager.alerts()
            assert alert["labels"]["session_id"] == "q"
            assert alert["status"]["state"] == "active"
            ends.append(alert["endsAt"])
    assert ends[1] > ends[0]  # fires for longer: posted again by the second check
