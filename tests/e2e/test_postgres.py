"""The state in PostgreSQL (``state_url``), end to end: ``run`` as a user starts it,
against the simulator over real HTTP and a real PostgreSQL server (tests/pg.py); the
record and the history land in the database, and ``status``, ``history``, ``pause`` and
``alerts list`` read it; two daemons on one database never restart a session twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import pytest

from supervisor.simulator import SimulatorServer
from supervisor.state.postgres import PostgresStore
from tests.e2e.conftest import API_KEY, ROOT, SimFactory, cli
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "pg-E2E-PASSWORD-7c41d"  # grep-able: the server trusts loopback, libpq sends none


def with_password(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace("@", f":{PASSWORD}@", 1)))


def env_for(server: SimulatorServer, url: str, **extra: str) -> dict[str, str]:
    return {"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
            "WASEND_SUPERVISOR_LOG_FORMAT": "json", "WASEND_SUPERVISOR_STATE_URL": url,
            "WASEND_SUPERVISOR_POLL_INTERVAL": "0.2", "WASEND_SUPERVISOR_POLL_JITTER": "0",
            "WASEND_SUPERVISOR_RATE_LIMIT": "50", "WASEND_SUPERVISOR_SHUTDOWN_GRACE": "3",
            "WASEND_SUPERVISOR_STARTING_TIMEOUT": "3", **extra}


def start_run(env: dict[str, str]) -> subprocess.Popen[str]:
    full = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
            "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.Popen([sys.executable, "-m", "supervisor", "run"], env=full, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    return proc.returncode, out + err


def restarts(server: SimulatorServer) -> Counter[str]:
    return Counter(r.session or "" for r in server.simulator.requests() if r.kind == "restart")


def history_of(url: str) -> list[tuple[str, str]]:
    """The history in the database (none before a daemon made the tables)."""
    try:
        store = PostgresStore.open_readonly(url)
    except FileNotFoundError:
        return []
    try:
        return [(e.session_id, e.event) for e in store.read_history()]
    finally:
        store.close()


def test_run_keeps_its_state_in_postgresql_and_the_commands_read_it(
    simulator: SimFactory, pg_url: str,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b", "status": "STOPPED"}],
                        "session_count": 0})
    url = with_password(pg_url)
    env = env_for(server, url)
    proc = start_run(env)
    try:
        wait_for(lambda: ("b", "restart.succeeded") in history_of(pg_url), timeout=30,
                 describe="the restart of b never reached the history in PostgreSQL")
    finally:
        status, output = stop(proc)
    assert status == 0, output
    assert server.simulator.status("b") == "WORKING"
    assert restarts(server) == {"b": 1}
    assert PASSWORD not in output and API_KEY not in output
    opened = [json.loads(line) for line in output.splitlines()
              if line.startswith("{") and '"state.opened"' in line]
    assert opened and opened[0]["path"] == urlsplit(pg_url)._replace(
        netloc=f"127.0.0.1:{urlsplit(pg_url).port}").geturl()

    store = PostgresStore.open_readonly(pg_url)
    try:
        record = store.get("b")
        assert record is not None and record.phase.value == "healthy"
        assert (record.last_status, record.last_outcome) == ("WORKING", "succeeded")
    finally:
        store.close()

    shown = cli("status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert {s["id"] for s in report["sessions"]} == {"a", "b"}
    rows = cli("history", "--json", "--session", "b", env=env)
    assert rows.returncode == 0, rows.stderr
    assert "restart.succeeded" in {row["event"] for row in json.loads(rows.stdout)["history"]}
    paused = cli("pause", "a", "--by", "ops", env=env)
    assert paused.returncode == 0, paused.stderr
    assert "paused" in cli("status", env=env).stdout
    assert cli("resume", "a", env=env).returncode == 0
    listed = cli("alerts", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    for done in (shown, rows, paused, listed):
        assert PASSWORD not in done.stdout + done.stderr


def test_two_daemons_on_one_database_restart_each_session_once(
    simulator: SimFactory, pg_url: str,
) -> None:
    stopped = [f"s{i}" for i in range(12)]
    server = simulator({"sessions": [{"id": s, "status": "STOPPED"} for s in stopped],
                        "session_count": 0, "start_delay": 0.5})
    env = env_for(server, pg_url)
    procs = [start_run(env), start_run(env)]
    outputs: list[str] = []
    try:
        wait_for(lambda: all(server.simulator.status(s) == "WORKING" for s in stopped),
                 timeout=30, describe=lambda: f"not all restarted: {restarts(server)}")
        wait_for(lambda: sum(e == "restart.succeeded" for _, e in history_of(pg_url))
                 == len(stopped), timeout=30, describe="the history lacks a success")
    finally:
        for proc in procs:
            status, output = stop(proc)
            outputs.append(output)
            assert status == 0, output
    assert restarts(server) == dict.fromkeys(stopped, 1)
    events = Counter(e for _, e in history_of(pg_url))
    assert events["restart.requested"] == len(stopped)
    # Both daemons polled: the claims were contested, not taken by one alone.
    lists = [r for r in server.simulator.requests() if r.kind == "list"]
    assert len(lists) >= 4
    assert all("restart.requested" in o or "state.opened" in o for o in outputs)


def test_check_keeps_its_state_in_postgresql_and_a_second_check_honours_it(
    simulator: SimFactory, pg_url: str,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b", "status": "STOPPED"}],
                        "session_count": 0})
    env = env_for(server, pg_url)
    first = cli("check", "--wait", "5", env=env)
    assert first.returncode == 1, first.stderr
    assert server.simulator.status("b") == "WORKING"
    assert ("b", "restart.succeeded") in history_of(pg_url)
    again = cli("check", "--json", env=env)  # a new process: the record is in the database
    assert again.returncode == 0, again.stderr
    assert restarts(server) == {"b": 1}
    assert [s["outcome"] for s in json.loads(again.stdout)["sessions"]] == ["ok", "ok"]
