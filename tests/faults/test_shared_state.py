"""One state file, several real processes: ``check`` from a timer after ``run`` or an
earlier ``check``, concurrent ``check``s, and state files that cannot be used."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.domain.models import Phase, Record
from supervisor.runtime.wiring import build
from supervisor.simulator import SimulatorServer
from supervisor.state.sqlite import SqliteStore
from tests.e2e.conftest import API_KEY, ROOT, Running, SimFactory, cli
from tests.fakes import MaxRandom
from tests.faults.conftest import settings_at
from tests.waiting import until, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def env_for(server: SimulatorServer, state: Path | str, **extra: str) -> dict[str, str]:
    return {"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
            "WASEND_SUPERVISOR_STATE_PATH": str(state),
            "WASEND_SUPERVISOR_LOG_FORMAT": "json", "WASEND_SUPERVISOR_LOG_LEVEL": "debug",
            "WASEND_SUPERVISOR_REQUEST_TIMEOUT": "3", "WASEND_SUPERVISOR_RATE_LIMIT": "50",
            **extra}


def events_of(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def restarts(server: SimulatorServer) -> list[str | None]:
    return [r.session for r in server.simulator.requests() if r.kind == "restart"]


def test_a_check_honours_the_backoff_an_earlier_run_started(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: a session an earlier run failed and scheduled for an hour from now
    is reported ``waiting`` by a ``check`` (exit 1) and not restarted."""
    server = simulator({"sessions": [{"id": "a", "status": "FAILED"}], "session_count": 0})
    state = tmp_path / "state.db"
    now = time.time()
    with capture_logs():
        earlier = SqliteStore.open(state)
    earlier.put(Record("a", phase=Phase.UNHEALTHY, last_status="FAILED", attempt=2,
                       failures=(now - 60, now - 30), next_attempt_at=now + 3600,
                       since=now - 30, last_outcome="failed:relapsed"))
    earlier.close()
    done = cli("check", "--json", env=env_for(server, state))
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["sessions"][0]["outcome"] == "waiting"
    assert restarts(server) == []


def test_a_second_check_while_the_first_restart_is_verified_does_not_restart(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: ``check`` restarts a stopped session; a second ``check`` right after
    (a timer) finds it in its verification window and reports ``recovering``; a third,
    once it is up, reports it healthy. One restart request in all."""
    server = simulator({"sessions": [{"id": "a", "status": "STOPPED"}], "session_count": 0,
                        "start_delay": 3.0})
    state = tmp_path / "state.db"
    first = cli("check", "--json", env=env_for(server, state))
    second = cli("check", "--json", env=env_for(server, state))
    assert json.loads(first.stdout)["sessions"][0]["outcome"] == "recovering", first.stderr
    assert json.loads(second.stdout)["sessions"][0]["outcome"] == "recovering", second.stderr
    assert second.returncode == 1
    wait_for(lambda: server.simulator.status("a") == "WORKING",
             describe=lambda: f"the session is {server.simulator.status('a')}")
    third = cli("check", "--json", env=env_for(server, state))
    assert third.returncode == 0, third.stdout
    assert restarts(server) == ["a"]
    history = cli("history", "--json", env=env_for(server, state))
    events = [row["event"] for row in json.loads(history.stdout)["history"]]
    assert events == ["session.unhealthy", "restart.requested", "restart.accepted",
                      "restart.succeeded"]


def test_concurrent_checks_on_one_file_restart_a_session_once(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: four ``check`` processes started together on one state file, each
    seeing the session STOPPED (the list answer is slow, so they all list before any
    decides), send one restart request between them; the others leave it to the one
    that claimed it; the file passes an integrity check and its history has one
    ``restart.requested``."""
    server = simulator({"sessions": [{"id": "a", "status": "STOPPED"}, {"id": "b"}],
                        "session_count": 0, "start_delay": 2.0,
                        "latency": {"seconds": 1.2, "kinds": ["list"]}})
    state = tmp_path / "state.db"
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                "HOME": str(tmp_path), **env_for(server, state)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "supervisor", "check", "--json"], cwd=ROOT,
                         env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=30) for p in procs]
    assert all(p.returncode == 1 for p in procs), [err[-2000:] for _, err in outputs]
    assert restarts(server) == ["a"]
    lists = [r for r in server.simulator.requests() if r.kind == "list"]
    restart_at = next(r.monotonic for r in server.simulator.requests() if r.kind == "restart")
    assert sum(r.monotonic < restart_at for r in lists) >= 2, "the checks did not overlap"
    left = [e for _, err in outputs for e in events_of(err)
            if e["event"] == "state.left_to_other_process"]
    assert left, "the other checks should have left the session to the one that claimed it"
    conn = sqlite3.connect(state)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    requested = conn.execute(
        "SELECT count(*) FROM history WHERE event = 'restart.requested'").fetchone()[0]
    assert requested == 1
    conn.close()


async def test_a_corrupt_state_file_is_moved_aside_and_supervision_goes_on(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: the daemon, given a state file of its own with a damaged page, logs
    one error-level ``state.corrupt_moved_aside`` naming where the file went, starts a
    fresh one and supervises: the stopped session is restarted."""
    server = simulator({"sessions": [{"id": "b", "status": "STOPPED"}], "session_count": 0})
    state = tmp_path / "state.db"
    with capture_logs():
        store = SqliteStore.open(state)
    for i in range(300):
        store.put(Record(f"old-{i:03d}", name="x" * 200))
    store.close()
    damaged = bytearray(state.read_bytes())
    damaged[3 * 4096 + 10: 3 * 4096 + 400] = b"\xff" * 390  # inside a table page
    state.write_bytes(bytes(damaged))
    with capture_logs() as events:
        running = Running(build(settings_at(server.base_url, state_path=state),
                                rng=MaxRandom()))
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events))
        assert await running.stop() == 0
    [moved] = [e for e in events if e["event"] == "state.corrupt_moved_aside"]
    assert moved["log_level"] == "error"
    assert Path(moved["moved_to"]).read_bytes() == bytes(damaged)
    assert SqliteStore.open_readonly(state).get("b") is not None


def test_a_state_path_naming_a_file_that_is_not_ours_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    """Expectation: ``run`` and ``check`` given a config file as their state_path (a
    slip of the pen) stop before any request with one line saying it is not a state file
    (exit status 78 for ``run``; ``check`` its error status) and leave the file exactly
    as it was, with nothing beside it."""
    config = tmp_path / "c.toml"
    config.write_text("poll_interval = 10\n")
    os.utime(config, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    env = {"WASEND_API_KEY": API_KEY, "WASEND_BASE_URL": "http://127.0.0.1:9"}
    for mode in ("run", "check"):
        done = cli(mode, "--state-path", str(config), env=env)
        assert done.returncode == 78 if mode == "run" else done.returncode in (3, 78), (
            done.stderr)  # check: 3 (UNKNOWN) once its start-up errors answer so
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("wasend-supervisor: state error: state_path: ")
        assert (f"{config} is not a wasend-supervisor state file (not an SQLite database);"
                " it was left as it was (from command line --state-path)") in line
        assert config.read_text() == "poll_interval = 10\n"
        assert config.stat().st_mtime_ns == 1_600_000_000_000_000_000
        assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]


def test_run_and_check_refuse_an_unusable_state_path_in_one_line(tmp_path: Path) -> None:
    """Expectation: a state_path whose directory cannot be created stops ``run`` and
    ``check`` before any request, with one line naming the setting, the problem and
    where it was set, and exit status 78 (``check``: 3, UNKNOWN, with the same line as
    its verdict)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"WASEND_API_KEY": API_KEY, "WASEND_BASE_URL": "http://127.0.0.1:9",
           "WASEND_SUPERVISOR_STATE_PATH": str(blocker / "state.db")}
    problem = (f"state error: state_path: {blocker} exists and is not a directory (from"
               " environment variable WASEND_SUPERVISOR_STATE_PATH)")
    for mode, status in (("run", 78), ("check", 3)):
        done = cli(mode, env=env)
        assert done.returncode == status, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines == [f"wasend-supervisor: {problem}"]
    assert done.stdout == f"UNKNOWN: {problem}\n"


def test_status_and_history_need_no_key_and_make_no_request(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: after a ``check`` restarted a session, ``status`` and ``history``
    (without any API key in the environment) show it from the state file, and the
    simulator sees no request from them."""
    server = simulator({"sessions": [{"id": "a", "status": "STOPPED"}], "session_count": 0})
    state = tmp_path / "state.db"
    assert cli("check", env=env_for(server, state)).returncode == 1
    requests = len(server.simulator.requests())
    env = {"WASEND_SUPERVISOR_STATE_PATH": str(state)}
    status = cli("status", env=env)
    assert status.returncode == 1, status.stderr  # as check's: a restart being verified
    row = next(line for line in status.stdout.splitlines() if line.startswith("a "))
    assert "verifying" in row and "restartable" not in row
    history = cli("history", "--since", "5m", env=env)
    assert history.returncode == 0
    assert "restart.requested" in history.stdout
    assert len(server.simulator.requests()) == requests
