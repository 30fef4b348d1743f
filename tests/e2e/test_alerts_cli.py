"""The alerts on the command line as a user runs them: ``check`` without alerts loads
nothing of them, and ``config`` and ``alerts test`` keep the URLs secret (real processes,
the simulator over real HTTP)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from supervisor.simulator import SimulatorServer
from tests.e2e.conftest import ROOT, SimFactory, cli
from tests.serving import Serving

pytestmark = pytest.mark.e2e

TOKEN = "xoxb7Qm2Lr9Tt4Kp1Zs8Wd3"

# A check as the console script runs it, then the modules it loaded.
_CHECK_THEN_MODULES = """\
import json, sys
from supervisor.cli import main
status = main(["check", "--json"])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def run_check_listing_modules(server: SimulatorServer, tmp_path: Path,
                              **env: str) -> tuple[int, list[str]]:
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                "HOME": str(tmp_path), "WASEND_BASE_URL": server.base_url,
                "WASEND_API_KEY": server.api_key,
                "WASEND_SUPERVISOR_STATE_PATH": str(tmp_path / "state.db"), **env}
    done = subprocess.run([sys.executable, "-c", _CHECK_THEN_MODULES], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=60, check=False)
    last = json.loads(done.stderr.strip().splitlines()[-1])
    return last["status"], last["modules"]


def test_check_without_alerts_imports_neither_apprise_nor_the_alerts(
        simulator: SimFactory, tmp_path: Path) -> None:
    server = simulator({"session_count": 3})
    status, modules = run_check_listing_modules(server, tmp_path)
    assert status == 0
    loaded = [m for m in modules if m == "apprise" or m.startswith("apprise.")
              or m == "supervisor.alerts" or m.startswith("supervisor.alerts.")]
    assert loaded == []


def test_config_prints_no_url_and_alerts_test_says_none_configured(
        simulator: SimFactory, tmp_path: Path) -> None:
    urls = tmp_path / "alert-urls"
    urls.write_text(f"# chat\nops=slack://{TOKEN}/C0123\n")
    urls.chmod(0o600)
    env = {"WASEND_SUPERVISOR_ALERTS__URLS": f"json://127.0.0.1:9/hook?token={TOKEN}",
           "WASEND_SUPERVISOR_ALERTS__URLS_FILE": str(urls)}
    done = cli("config", env=env)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert "; 1 URL" in done.stdout
    bad = cli("config", env={"WASEND_SUPERVISOR_ALERTS__URLS": f"slack:/{TOKEN}"})
    assert bad.returncode == 78
    assert TOKEN not in bad.stdout + bad.stderr
    none = cli("alerts", "test")
    assert none.returncode == 3
    assert none.stderr.startswith("wasend-supervisor: no alerts configured")


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def _free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_alerts_test_sends_to_a_real_receiver_and_names_the_one_that_is_down(
        tmp_path: Path) -> None:
    """Needs helper "delivery"'s channels (and Apprise): runs once they are merged."""
    _Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    serving = Serving(server)
    try:
        up = f"json://user:{TOKEN}@127.0.0.1:{server.server_address[1]}/hook"
        down = f"json://user:{TOKEN}x@127.0.0.1:{_free_closed_port()}/hook"
        done = cli("alerts", "test", env={"WASEND_SUPERVISOR_ALERTS__URLS": f"{up}\n{down}",
                                          "WASEND_SUPERVISOR_REQUEST_TIMEOUT": "5"})
    finally:
        serving.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "apprise-1 (json:// (alerts.urls item 1)): delivered"
    assert lines[1].startswith("apprise-2 (json:// (alerts.urls item 2)): failed: ")
    assert len(lines) == 2
    assert TOKEN not in done.stdout + done.stderr
    [body] = _Receiver.bodies
    assert b"test" in body
