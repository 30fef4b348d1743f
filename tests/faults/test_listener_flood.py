"""A flood of idle connections on the health listener of a real ``run``: ``/livez`` is still
answered, fast, and what was shed is counted and told (the issue's acceptance test: 2,000
idle connections held for 20 s while ``/livez`` is asked 4 times a second)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.e2e.conftest import API_KEY, ROOT, SimFactory
from tests.waiting import wait_for

pytestmark = pytest.mark.faults

FLOOD = 2000
SECONDS = 20.0
PROBES_PER_SECOND = 4
PROBE_BUDGET = 1.0  # seconds, for the whole answer (a kubelet's default timeoutSeconds)


class Daemon:
    """``wasend-supervisor run`` with the listener on a free port; its JSON events kept."""

    def __init__(self, base_url: str) -> None:
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
               "HOME": os.environ.get("HOME", "/tmp"), "WASEND_BASE_URL": base_url,
               "WASEND_API_KEY": API_KEY, "WASEND_SUPERVISOR_STATE_PATH": ":memory:"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--http-listen", "127.0.0.1:0",
             "--log-format", "json", "--poll-interval", "1"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.events.append(json.loads(line))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == name]

    def address(self, timeout: float = 20.0) -> tuple[str, int]:
        wait_for(lambda: self.named("http.listening") or self.proc.poll() is not None,
                 timeout, describe="the listener did not start")
        assert self.proc.poll() is None, self.proc.stderr.read()  # type: ignore[union-attr]
        host, port = self.named("http.listening")[0]["address"].rsplit(":", 1)
        return host, int(port)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=20)
        finally:
            self.proc.kill()
            self._reader.join(timeout=5)
            assert self.proc.stderr is not None
            with self.proc.stderr:
                errors = self.proc.stderr.read()
        assert "Traceback" not in errors, errors
        return status


def get(address: tuple[str, int], path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One request on a fresh connection (as the kubelet asks); the status and the body."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def probe(address: tuple[str, int]) -> tuple[float, str]:
    """How long a /livez took to answer in full, and what it was."""
    started = time.monotonic()
    try:
        status, _ = get(address, "/livez", timeout=PROBE_BUDGET * 3)
        outcome = str(status)
    except (OSError, IndexError, ValueError) as exc:
        outcome = type(exc).__name__
    return time.monotonic() - started, outcome


def test_livez_is_answered_within_a_second_under_2000_idle_connections(
    simulator: SimFactory,
) -> None:
    server = simulator({"session_count": 3})
    daemon = Daemon(server.base_url)
    flooder: subprocess.Popen[str] | None = None
    try:
        address = daemon.address()
        # The scheduler runs: /livez is 200.
        wait_for(lambda: probe(address)[1] == "200", timeout=20)
        flooder = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.flood", address[0], str(address[1]),
             str(FLOOD)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert flooder.stdout is not None
        assert flooder.stdout.readline().strip() == f"open {FLOOD}"

        probes: list[tuple[float, str]] = []
        started = time.monotonic()
        for n in range(int(SECONDS * PROBES_PER_SECOND)):
            # The probes' own pace (4 a second, as asked), not a wait standing in for a
            # condition: each probe is timed from its start to its last byte.
            time.sleep(max(0.0, started + n / PROBES_PER_SECOND - time.monotonic()))
            probes.append(probe(address))
        assert flooder.poll() is None, "the flood stopped before the probes did"

        flooder.terminate()
        flood = json.loads(flooder.communicate(timeout=10)[0])
        status, metrics = get(address, "/metrics")
    finally:
        if flooder is not None:
            flooder.kill()
            flooder.communicate()
        assert daemon.stop() == 0

    slow = [(round(t, 3), outcome) for t, outcome in probes
            if t >= PROBE_BUDGET or outcome != "200"]
    assert len(probes) == 80
    assert slow == [], f"{len(slow)} of {len(probes)} probes failed or were slow: {slow[:10]}"
    # The flood was real: the listener shed its connections, said so, and counted them.
    assert flood["closed_by_server"] > 10 * FLOOD
    assert status == 200
    sample = 'wasend_supervisor_http_connections_dropped_total{reason="evicted"} '
    evicted = [float(line.removeprefix(sample)) for line in metrics.decode().splitlines()
               if line.startswith(sample)]
    assert evicted and evicted[0] > FLOOD
    shed = daemon.named("http.connections_shed")
    assert 1 <= len(shed) <= 1 + int(SECONDS / 10) + 2  # at most one every 10 s (and at close)
    assert shed[0]["level"] == "warning" and shed[0]["busiest_peer"] == "127.0.0.1"
    assert sum(e["evicted"] for e in shed) == evicted[0]
