"""The status page in the service: served beside the probes when ``http_auth_file`` is
set and only then, ``/metrics`` behind a token when asked, the auth file read again on
SIGHUP (a bad one keeping the logins in force), and the one-line refusals at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.domain import events as ev
from supervisor.service import web_missing
from tests.e2e.conftest import ROOT, Served, SimFactory, cli
from tests.waiting import until

pytestmark = pytest.mark.e2e

TOKEN = "service-token-8c1e5b7a2f90d364"
OTHER = "service-token-new-41d9a0c3e7b2"


def auth_file(tmp_path: Path, text: str = f"alice:{TOKEN}\n") -> Path:
    path = tmp_path / "auth"
    path.write_text(text)
    path.chmod(0o600)
    return path


async def test_without_an_auth_file_the_listener_serves_as_before(
        simulator: SimFactory) -> None:
    served = await Served(simulator({"session_count": 1}), reloadable=True).start()
    try:
        assert served.service.page is None
        assert served.service.listener is not None and served.service.listener.app is None
        assert (await served.get("/")).status_code == 404
        assert (await served.get("/login")).status_code == 404
        assert (await served.http.post(served.url("/login"))).status_code == 404
        assert (await served.get("/api/sessions", TOKEN)).status_code == 404
        assert (await served.get("/metrics")).status_code == 200
    finally:
        assert await served.stop() == 0


_MODULES = """\
import sys
from supervisor.cli import main
from supervisor.config.model import Settings
from supervisor.service import Service
Service.build(Settings(api_key="ws_live_abcdefghijklmnopqrstuvwx", http_listen="127.0.0.1:0"),
              env={})
print(sorted(m for m in sys.modules if m.split(".")[0] in ("starlette", "jinja2", "segno",
      "multipart", "playwright") or m.startswith("supervisor.web")))
"""


def test_without_an_auth_file_nothing_of_the_page_is_loaded() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _MODULES], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


async def test_the_page_is_served_beside_the_probes(simulator: SimFactory,
                                                    tmp_path: Path) -> None:
    server = simulator({"session_count": 3})
    served = await Served(server, reloadable=True, http_auth_file=auth_file(tmp_path)).start()
    try:
        assert (await served.get("/livez")).status_code == 200
        assert (await served.get("/metrics")).status_code == 200  # open: the default
        page = await served.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F"
        assert (await served.get("/api/sessions")).status_code == 401

        async def listed() -> bool:
            answer = await served.get("/api/sessions", TOKEN)
            return answer.status_code == 200 and answer.json()["total"] == 3

        await until(listed)
        login = await served.get("/login")
        assert login.status_code == 200 and "content-security-policy" in login.headers
    finally:
        assert await served.stop() == 0


async def test_metrics_behind_a_token(simulator: SimFactory, tmp_path: Path) -> None:
    served = await Served(simulator({"session_count": 1}), reloadable=True,
                          http_auth_file=auth_file(tmp_path), http_metrics_auth=True).start()
    try:
        assert (await served.get("/metrics")).status_code == 401
        assert (await served.get("/metrics", "wrong-token-0123456789")).status_code == 401
        metrics = await served.get("/metrics", TOKEN)
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "wasend_supervisor_" in metrics.text
        assert (await served.get("/livez")).status_code == 200  # the probes stay open
        assert (await served.get("/readyz")).status_code in (200, 503)
    finally:
        assert await served.stop() == 0


async def test_a_sighup_reads_the_auth_file_again(simulator: SimFactory,
                                                  tmp_path: Path) -> None:
    path = auth_file(tmp_path)
    served = await Served(simulator({"session_count": 1}), reloadable=True,
                          http_auth_file=path).start()
    reloader = served.service.reloader
    assert reloader is not None
    try:
        assert (await served.get("/api/sessions", TOKEN)).status_code == 200
        path.write_text("alice:qwxz\n")  # a token too short: the file is refused
        with capture_logs() as logs:
            assert await reloader.reload()
        (failed,) = [e for e in logs if e["event"] == ev.HTTP_AUTH_RELOAD_FAILED]
        assert failed["kept"] == "previous"
        assert failed["problem"].startswith(f"http_auth_file: {path} line 1 ")
        assert "qwxz" not in json.dumps(failed)
        assert (await served.get("/api/sessions", TOKEN)).status_code == 200  # kept
        path.write_text(f"alice:{OTHER}\nbob:{TOKEN}-bob\n")
        with capture_logs() as logs:
            assert await reloader.reload()
        (reloaded,) = [e for e in logs if e["event"] == ev.HTTP_AUTH_RELOADED]
        assert reloaded["names"] == 2
        assert (await served.get("/api/sessions", TOKEN)).status_code == 401
        assert (await served.get("/api/sessions", OTHER)).status_code == 200
        assert (await served.get("/api/sessions", f"{TOKEN}-bob")).status_code == 200
    finally:
        assert await served.stop() == 0


def test_an_auth_file_that_cannot_be_read_is_one_line_at_start(
        simulator: SimFactory, tmp_path: Path) -> None:
    server = simulator({"session_count": 1})
    env = {"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
           "WASEND_SUPERVISOR_HTTP_LISTEN": "127.0.0.1:0",
           "WASEND_SUPERVISOR_HTTP_AUTH_FILE": str(tmp_path / "absent")}
    done = cli("run", env=env)
    assert done.returncode == 78
    assert done.stderr.startswith("wasend-supervisor: configuration error: http_auth_file: "
                                  f"cannot read {tmp_path / 'absent'}")
    assert done.stderr.endswith(
        "(from environment variable WASEND_SUPERVISOR_HTTP_AUTH_FILE)\n")
    assert done.stderr.count("\n") == 1
    assert server.simulator.requests() == []  # before any poll


_WITHOUT_SEGNO = """\
import sys
sys.modules["segno"] = None  # import segno: ImportError, as when it is not installed
from supervisor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_auth_file_without_the_web_extra_is_one_line_at_start(
        simulator: SimFactory, tmp_path: Path) -> None:
    server = simulator({"session_count": 1})
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
           "WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
           "WASEND_SUPERVISOR_STATE_PATH": ":memory:",
           "WASEND_SUPERVISOR_HTTP_LISTEN": "127.0.0.1:0",
           "WASEND_SUPERVISOR_HTTP_AUTH_FILE": str(auth_file(tmp_path))}
    done = subprocess.run([sys.executable, "-c", _WITHOUT_SEGNO, "run"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (69, "")
    assert done.stderr == (
        "wasend-supervisor: http_auth_file: the status page needs the 'web' extra (pip install"
        " 'wasend-supervisor[web]'), and segno is not installed (from environment variable"
        " WASEND_SUPERVISOR_HTTP_AUTH_FILE)\n")
    assert server.simulator.requests() == []


def test_web_missing_says_nothing_without_an_auth_file() -> None:
    from supervisor.config.model import Settings

    assert web_missing(Settings()) is None
    assert web_missing(Settings(http_auth_file=Path("/x"))) is None  # all installed here
