"""The real ``run`` as a process: SIGHUP reloads (a good and a bad configuration),
SIGTERM as PID 1 in a PID namespace, and a listener that cannot bind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor.simulator import SimulatorServer
from tests.e2e.conftest import API_KEY, ROOT, SimFactory
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


class Process:
    """``python -m supervisor run ...`` with its JSON events collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], *, prefix: list[str] | None = None,
                 ) -> None:
        full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                    "HOME": os.environ.get("HOME", "/tmp"),
                    "WASEND_SUPERVISOR_LOG_FORMAT": "json",
                    "WASEND_SUPERVISOR_STATE_PATH": ":memory:", **env}
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "supervisor", "run", *args],
            env=full_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.other.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def names(self) -> list[str]:
        return [e["event"] for e in list(self.events)]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 15) -> None:
        """Wait for ``condition``; fail at once if the process exits before it holds."""
        wait_for(lambda: condition() or self.proc.poll() is not None, timeout,
                 describe=lambda: f"events: {self.names()[-20:]}")
        if not condition():
            raise AssertionError(f"exited early: {self.finish()}")

    def event(self, name: str) -> dict[str, Any]:
        self.wait_for(lambda: name in self.names())
        return next(e for e in self.events if e["event"] == name)

    def count(self, name: str) -> int:
        return self.names().count(name)

    def finish(self, timeout: float = 10) -> str:
        """Wait for the exit and for its output to be read; its stderr."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return "".join(self.stderr)


def env_for(server: SimulatorServer) -> dict[str, str]:
    return {"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key}


GOOD = """
poll_interval = 0.2
poll_jitter = 0.0
rate_limit = 50.0
max_restarts = 2
starting_timeout = 1.0
shutdown_grace = 2.0
[backoff]
initial = 0.1
max = 0.2
"""


def test_sighup_reloads_a_good_configuration_and_refuses_a_bad_one(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    server = simulator({"session_count": 0, "start_delay": 0.1,
                        "sessions": [{"id": "a"}, {"id": "f", "status": "FAILED",
                                                   "outcome": "FAILED"}]})
    config = tmp_path / "supervisor.toml"
    config.write_text(GOOD)
    run = Process(["--config", str(config)], env_for(server))
    try:
        run.event("session.gave_up")  # the state to keep: f is given up on
        restarts_f = [r for r in server.simulator.requests() if r.kind == "restart"]

        # A good configuration: a new poll interval and rate limit.
        config.write_text(GOOD.replace("poll_interval = 0.2", "poll_interval = 0.3")
                          .replace("rate_limit = 50.0", "rate_limit = 20.0"))
        run.proc.send_signal(signal.SIGHUP)
        reloaded = run.event("config.reloaded")
        assert reloaded["changed"] == ["poll_interval", "rate_limit"]
        assert reloaded["restart_required"] == []
        assert reloaded["level"] == "info"
        polls = run.count("poll.completed")
        run.wait_for(lambda: run.count("poll.completed") >= polls + 5)
        # The give-up survived the reload: no new attempt and no second give-up.
        assert [r for r in server.simulator.requests() if r.kind == "restart"] == restarts_f
        assert run.count("session.gave_up") == 1

        # A bad configuration: refused, with every problem, and the old one stays.
        config.write_text(GOOD.replace("poll_interval = 0.2", "poll_interval = 5.0")
                          .replace("rate_limit = 50.0", 'rate_limit = "lots"'))
        run.proc.send_signal(signal.SIGHUP)
        failed = run.event("config.reload_failed")
        assert failed["level"] == "error"
        assert len(failed["problems"]) == 1
        assert failed["problems"][0].startswith("rate_limit: must be a number")
        polls = run.count("poll.completed")
        run.wait_for(lambda: run.count("poll.completed") >= polls + 3)  # still running

        # Back to the configuration in force: nothing changed, so the bad one never applied.
        config.write_text(GOOD.replace("poll_interval = 0.2", "poll_interval = 0.3")
                          .replace("rate_limit = 50.0", "rate_limit = 20.0"))
        run.proc.send_signal(signal.SIGHUP)
        run.wait_for(lambda: run.count("config.reloaded") == 2)
        assert [e for e in run.events if e["event"] == "config.reloaded"][1]["changed"] == []

        run.proc.send_signal(signal.SIGTERM)
        err = run.finish()
    finally:
        run.proc.kill()
        run.finish()
    assert run.proc.returncode == 0, err
    assert run.names()[-1] == "daemon.stopped"
    assert API_KEY not in "".join(json.dumps(e) for e in run.events) + err


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare cannot run: {exc}"
    if probe.returncode != 0:
        return f"PID namespaces not permitted here: {probe.stderr.strip()[:200]}"
    return None


def _child_of(parent: int, timeout: float = 10) -> int:
    """The pid (in our namespace) of ``parent``'s child: the namespace's PID 1."""
    found: list[int] = []

    def children() -> list[int]:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
        return found

    wait_for(children, timeout, describe="no child process found")
    return found[0]


def test_sigterm_as_pid_1_exits_0_quickly(simulator: SimFactory) -> None:
    problem = _unshare_problem()
    if problem is not None:
        pytest.skip(problem)
    server = simulator({"session_count": 2})
    run = Process(["--poll-interval", "0.2"], env_for(server),
                  prefix=["unshare", "--pid", "--fork", "--mount-proc"])
    try:
        started = run.event("daemon.started")
        assert started["pid"] == 1  # it really is PID 1 in its namespace
        run.wait_for(lambda: run.count("poll.completed") >= 2)
        pid1 = _child_of(run.proc.pid)
        sent = time.monotonic()
        os.kill(pid1, signal.SIGTERM)
        err = run.finish()
        took = time.monotonic() - sent
    finally:
        run.proc.kill()
        run.finish()
    assert run.proc.returncode == 0, err
    assert took < 5
    assert run.names()[-1] == "daemon.stopped"
    assert any(e["event"] == "daemon.stopping" and e["signal"] == "SIGTERM" for e in run.events)


def test_a_listen_address_in_use_is_one_line_and_exit_71() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = Process(["--http-listen", f"127.0.0.1:{port}"],
                      {"WASEND_BASE_URL": "http://127.0.0.1:9", "WASEND_API_KEY": API_KEY})
        err = run.finish()
    assert run.proc.returncode == 71
    assert err == f"wasend-supervisor: cannot listen on 127.0.0.1:{port}: " \
                  "Address already in use\n"
    # no poll was made
    assert [n for n in run.names() if not n.startswith("state.")] == ["http.listen_failed"]
