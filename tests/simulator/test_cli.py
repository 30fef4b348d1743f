"""The simulator's one command line, through both of its entry points, as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "cli-test-key-42"
ENTRY_POINTS = {
    "wasend-supervisor simulate": [sys.executable, "-m", "supervisor", "simulate"],
    "python -m supervisor.simulator": [sys.executable, "-m", "supervisor.simulator"],
}


def command(entry: str, *args: str) -> list[str]:
    return [*ENTRY_POINTS[entry], *args]


def environment() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}


def served_sessions(entry: str, *args: str) -> list[str]:
    """Start the simulator on a free port, list its sessions with the key, stop it."""
    proc = subprocess.Popen(command(entry, "--port", "0", "--api-key", KEY, *args),
                            env=environment(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("WASEND_BASE_URL="), first + proc.stderr.read()  # type: ignore[union-attr]
        url = first.split("=", 1)[1]
        answer = httpx.get(f"{url}/sessions", headers={"Authorization": f"Bearer {KEY}"},
                           timeout=10)
        assert answer.status_code == 200
        ids = [item["session"]["uniqueSessionId"] for item in answer.json()["sessions"]]
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    return ids


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("bad", [["--sessions", "-1"], ["--sessions", "many"],
                                 ["--port", "-5"], ["--port", "70000"]])
def test_a_bad_value_is_one_line_and_exit_2(entry: str, bad: list[str]) -> None:
    done = subprocess.run(command(entry, *bad), env=environment(), cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"{entry}: error: argument {bad[0]}: ")


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_the_scenarios_session_count_is_honoured_and_sessions_overrides_it(
    entry: str, tmp_path: Path,
) -> None:
    scenario = tmp_path / "f.toml"
    scenario.write_text("session_count = 7\n", encoding="utf-8")
    assert len(served_sessions(entry, "--scenario", str(scenario))) == 7
    assert len(served_sessions(entry, "--scenario", str(scenario), "--sessions", "3")) == 3


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_a_bad_scenario_is_one_line_and_exit_2(entry: str, tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text("session_count = -3\n", encoding="utf-8")
    done = subprocess.run(command(entry, "--port", "0", "--scenario", str(scenario)),
                          env=environment(), cwd=ROOT, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{entry}: error: ")
    assert "session_count" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
