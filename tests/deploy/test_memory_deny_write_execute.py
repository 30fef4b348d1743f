"""The units set MemoryDenyWriteExecute=yes: CPython and every runtime dependency (OpenSSL,
pydantic-core, httpx...) must work under it. The real CLI runs a check against the
simulator over real HTTP under the same seccomp filter systemd installs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from supervisor.simulator import SimulatorServer, parse_scenario
from tests.deploy import mdwe
from tests.deploy.conftest import ROOT, missing

pytestmark = pytest.mark.e2e

API_KEY = "sk-mdwe-test-key-7c1d"


@pytest.fixture(autouse=True)
def _libseccomp() -> None:
    if mdwe.library() is None:
        missing("libseccomp", "Debian: apt-get install libseccomp2, a dependency of systemd")


@pytest.fixture
def server() -> Iterator[SimulatorServer]:
    scenario = parse_scenario({"start_delay": 0.2, "seed": 1,
                               "sessions": [{"id": "a"}, {"id": "b", "status": "STOPPED"}],
                               "session_count": 0}, "test")
    running = SimulatorServer(scenario=scenario, api_key=API_KEY).start()
    yield running
    running.stop()


def under_mdwe(*args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                "WASEND_SUPERVISOR_STATE_PATH": ":memory:", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tests.deploy.mdwe", sys.executable, *args],
        capture_output=True, text=True, env=full_env, timeout=60, check=False, cwd=ROOT,
    )


def test_the_filter_refuses_writable_executable_memory() -> None:
    done = under_mdwe("-c", "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ"
                            " | mmap.PROT_WRITE | mmap.PROT_EXEC)")
    assert done.returncode == 1
    assert "PermissionError" in done.stderr


def test_check_runs_under_memory_deny_write_execute(server: SimulatorServer) -> None:
    done = under_mdwe("-m", "supervisor", "check", "--wait", "10", "--json",
                      env={"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": API_KEY,
                           "WASEND_SUPERVISOR_LOG_FORMAT": "json"})
    assert done.returncode == 1, done.stderr  # b was restarted
    report = json.loads(done.stdout)
    assert [s["outcome"] for s in report["sessions"]] == ["ok", "restarted"]
    assert server.simulator.status("b") == "WORKING"
