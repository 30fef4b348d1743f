"""The command line as a user runs it: real processes, the simulator over real HTTP."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from supervisor import __version__
from supervisor.domain.models import Record
from supervisor.simulator import SimulatorServer
from supervisor.state.sqlite import SqliteStore
from tests.e2e.conftest import API_KEY, ROOT, SimFactory, cli
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def env_for(server: SimulatorServer, **extra: str) -> dict[str, str]:
    return {"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
            "WASEND_SUPERVISOR_LOG_FORMAT": "json", **extra}


def test_check_exits_0_when_all_healthy(simulator: SimFactory) -> None:
    server = simulator({"session_count": 3})
    done = cli("check", "--json", env=env_for(server))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [s["outcome"] for s in report["sessions"]] == ["ok"] * 3


def test_check_exits_1_after_restarting_a_session(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b", "status": "STOPPED"}],
                        "session_count": 0})
    done = cli("check", "--wait", "5", env=env_for(server))
    assert done.returncode == 1, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("b "))
    assert row.split()[-2:] == ["restart", "restarted"]
    assert server.simulator.status("b") == "WORKING"
    # stdout is the report only; the events went to stderr as JSON lines
    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert "restart.succeeded" in events


def test_check_exits_2_when_a_session_needs_a_person(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "q", "status": "SCAN_QR_CODE"}],
                        "session_count": 0})
    done = cli("check", "--json", env=env_for(server))
    assert done.returncode == 2
    assert json.loads(done.stdout)["sessions"][1]["outcome"] == "needs_person"


def test_check_exits_3_when_the_api_cannot_be_asked() -> None:
    done = cli("check", env={"WASEND_BASE_URL": "http://127.0.0.1:9",
                             "WASEND_API_KEY": API_KEY, "WASEND_SUPERVISOR_REQUEST_TIMEOUT": "2"})
    assert done.returncode == 3
    assert "UNKNOWN" in done.stdout and "unreachable" in done.stdout


def test_check_exits_3_on_a_refused_key(simulator: SimFactory) -> None:
    server = simulator({"session_count": 1})
    done = cli("check", env={**env_for(server), "WASEND_API_KEY": "sk-wrong-key"})
    assert done.returncode == 3
    assert done.stdout.startswith("UNKNOWN: API key refused: list: HTTP 401")


def test_check_dry_run_restarts_nothing(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "b", "status": "STOPPED"}], "session_count": 0})
    done = cli("check", "--dry-run", "--json", env=env_for(server))
    assert done.returncode == 1
    assert json.loads(done.stdout)["sessions"][0]["action"] == "would_restart"
    assert [r.kind for r in server.simulator.requests()] == ["list"]


def _records(path: Path) -> list[Record]:
    store = SqliteStore.open_readonly(path)
    try:
        return sorted(store.records(), key=lambda r: r.session_id)
    finally:
        store.close()


@pytest.mark.parametrize(("status", "exit_status", "outcome"), [
    ("SCAN_QR_CODE", 2, "needs_person"),
    ("SOMETHING_NEW", 1, "unknown_status"),
    ("STARTING", 1, "starting"),
])
def test_check_dry_run_says_what_a_real_check_says_on_the_apis_answer(
    simulator: SimFactory, tmp_path: Path, status: str, exit_status: int, outcome: str
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    env = env_for(server, WASEND_SUPERVISOR_STATE_PATH=str(tmp_path / "state.db"))
    assert cli("check", env=env).returncode == 0  # remembered healthy
    remembered = _records(tmp_path / "state.db")
    httpx.post(f"{server.base_url}/_simulator/sessions/a/status",
               json={"status": status}).raise_for_status()
    server.simulator.reset_log()

    dry = cli("check", "--dry-run", env=env)
    assert dry.returncode == exit_status, dry.stdout + dry.stderr
    assert dry.stdout.startswith(("CRITICAL: " if exit_status == 2 else "WARNING: ")
                                 + "1 of 2 sessions ")
    assert next(line for line in dry.stdout.splitlines() if line.startswith("a ")
                ).split()[-1] == outcome
    assert _records(tmp_path / "state.db") == remembered  # the dry run wrote nothing
    assert [r.kind for r in server.simulator.requests()] == ["list"]

    real = cli("check", env=env)
    assert (real.returncode, real.stdout) == (dry.returncode, dry.stdout)


def test_invalid_settings_exit_78_with_one_line_per_problem() -> None:
    done = cli("run", "--poll-interval", "-1",
               env={"WASEND_API_KEY": API_KEY, "WASEND_SUPERVISOR_RATE_LIMIT": "lots",
                    "WASEND_BASE_URL": "http://api.example.com"})
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, done.stderr
    assert all(line.startswith("wasend-supervisor: configuration error: ") for line in lines)
    assert any("poll_interval" in line and "command line" in line for line in lines)
    assert any("rate_limit" in line and "WASEND_SUPERVISOR_RATE_LIMIT" in line for line in lines)
    assert any("base_url" in line for line in lines)
    assert "Traceback" not in done.stderr


def test_missing_key_is_a_configuration_error() -> None:
    done = cli("run")
    assert done.returncode == 78
    assert "api_key" in done.stderr and "Traceback" not in done.stderr
    done = cli("check")
    assert done.returncode == 3  # check is a monitoring plugin: UNKNOWN
    assert done.stdout.startswith("UNKNOWN: configuration error: api_key: no API key found")
    assert "api_key" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("args", "status", "first_line"), [
    (("check", "--bogus"), 3, "UNKNOWN: usage error: unrecognized arguments: --bogus"),
    (("check", "--wait", "-1"), 3, "UNKNOWN: usage error: argument --wait: "),
    (("check", "--poll-interval", "-5"), 3, "UNKNOWN: configuration error: poll_interval: "),
    (("run", "--bogus"), 2, ""),
    (("run", "--poll-interval", "-5"), 78, ""),
    (("config", "--poll-interval", "-5"), 78, ""),
])
def test_usage_and_configuration_errors_exit_as_each_mode_promises(
    args: tuple[str, ...], status: int, first_line: str
) -> None:
    done = cli(*args, env={"WASEND_API_KEY": API_KEY})
    assert done.returncode == status, done.stderr
    assert done.stdout.startswith(first_line) and len(done.stdout.splitlines()) <= 1
    assert done.stderr and "Traceback" not in done.stderr


def test_check_quiet_says_nothing_when_all_is_well(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    done = cli("check", "--quiet", env=env_for(server))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    asked = cli("check", "--quiet", "--log-level", "info", env=env_for(server))
    assert asked.stdout == ""
    assert "poll.completed" in [json.loads(line)["event"] for line in asked.stderr.splitlines()]


def test_check_quiet_shows_only_the_sessions_in_trouble(simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "q", "status": "SCAN_QR_CODE"}],
                        "session_count": 0})
    done = cli("check", "--quiet", env=env_for(server))
    assert done.returncode == 2
    verdict, header, *rows = done.stdout.splitlines()
    assert verdict.startswith("CRITICAL: 1 of 2 sessions needs a person (Session q) | ")
    assert header.split()[0] == "SESSION" and [row.split()[0] for row in rows] == ["q"]
    # only warnings and worse on stderr: the error event, not poll.completed
    assert [json.loads(line)["event"] for line in done.stderr.splitlines()] == [
        "session.needs_person"]


def _check_on_a_terminal(server: SimulatorServer, *args: str, **env: str) -> tuple[int, str]:
    """``check`` with its stderr on a pseudo-terminal: its status and what the terminal got."""
    master, slave = pty.openpty()
    try:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "supervisor", "check", *args], cwd=ROOT, timeout=30,
                env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                     "WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
                     "WASEND_SUPERVISOR_STATE_PATH": ":memory:", **env},
                stdout=subprocess.DEVNULL, stderr=slave, check=False)
        finally:
            os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    return done.returncode, b"".join(chunks).decode()


def test_check_on_a_terminal_logs_warnings_only_unless_asked(simulator: SimFactory) -> None:
    server = simulator({"session_count": 2})
    assert _check_on_a_terminal(server) == (0, "")
    status, shown = _check_on_a_terminal(server, "--log-level", "info")
    assert status == 0 and "poll.completed" in shown and "\x1b[" in shown  # colours
    status, shown = _check_on_a_terminal(server, "--log-level", "info", NO_COLOR="1")
    assert status == 0 and "poll.completed" in shown and "\x1b" not in shown


def test_version() -> None:
    done = cli("--version")
    assert (done.returncode, done.stdout) == (0, f"wasend-supervisor {__version__}\n")


def test_config_prints_the_effective_configuration_with_the_key_masked() -> None:
    done = cli("config", env={"WASEND_API_KEY": API_KEY,
                              "WASEND_SUPERVISOR_POLL_INTERVAL": "12"})
    assert done.returncode == 0, done.stderr
    assert API_KEY not in done.stdout
    assert "poll_interval = 12.0" in done.stdout
    assert 'api_key = "********"' in done.stdout


def _start_run(server: SimulatorServer) -> subprocess.Popen[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
           "WASEND_SUPERVISOR_STATE_PATH": ":memory:",
           **env_for(server, WASEND_SUPERVISOR_POLL_INTERVAL="0.2",
                     WASEND_SUPERVISOR_SHUTDOWN_GRACE="3")}
    return subprocess.Popen([sys.executable, "-m", "supervisor", "run"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_run_exits_0_on_sigterm_within_its_grace_period(simulator: SimFactory) -> None:
    server = simulator({"session_count": 2})
    proc = _start_run(server)
    try:
        wait_for(lambda: len(server.simulator.requests()) >= 2, describe="the daemon did not poll")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert took < 3 + 1.5
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "daemon.stopped"
    assert any(e["event"] == "daemon.stopping" and e["signal"] == "SIGTERM" for e in events)
    assert API_KEY not in out + err


def test_second_sigint_exits_at_once(simulator: SimFactory) -> None:
    server = simulator({"session_count": 1, "hang": {"always": True, "seconds": 60}})
    proc = _start_run(server)
    assert proc.stdout is not None
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for(lambda: server.simulator.stats()["in_flight"] >= 1,
                 describe="no poll hanging in flight")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: any('"daemon.stopping"' in line for line in out)
                 or proc.poll() is not None,
                 describe=lambda: f"the first SIGINT was not taken: {out[-5:]}")
        assert proc.poll() is None  # still waiting for the poll, within its grace
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5)
    finally:
        proc.kill()
        reader.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == 130
    events = [json.loads(line)["event"] for line in out]
    assert events[-2:] == ["daemon.stopping", "daemon.forced_exit"], events


def test_python_dash_m_and_help_work() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for mode in ("run", "check", "config", "simulate", "demo"):
        assert mode in done.stdout


def test_simulate_prints_where_to_point_the_supervisor() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "simulate", "--port", "0", "--api-key", API_KEY],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        second = proc.stdout.readline().strip()
        assert first.startswith("WASEND_BASE_URL=http://127.0.0.1:")
        assert second == f"WASEND_API_KEY={API_KEY}"
        url = first.split("=", 1)[1]
        done = cli("check", env={"WASEND_BASE_URL": url, "WASEND_API_KEY": API_KEY})
        assert done.returncode == 0, done.stdout + done.stderr
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
