"""SimulatorServer, serve() and the module's command line."""

from __future__ import annotations

import ast
import io
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from supervisor.simulator import ScenarioError, Simulator, SimulatorServer, serve
from supervisor.simulator.cli import main
from supervisor.simulator.faults import LIST_SHAPES
from tests.waiting import wait_for

from .conftest import API_KEY

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor" / "simulator"


def test_port_zero_reports_the_real_port_and_the_context_manager_stops_it() -> None:
    with SimulatorServer(sessions=2, api_key=API_KEY) as server:
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.api_key == API_KEY
        response = httpx.get(
            f"{server.base_url}/sessions", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert len(response.json()["sessions"]) == 2
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/sessions")


def test_generated_api_key_is_random() -> None:
    first, second = SimulatorServer(sessions=1), SimulatorServer(sessions=1)
    assert len(first.api_key) >= 32
    assert first.api_key != second.api_key


def test_uvicorn_stays_quiet(
    server: SimulatorServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert client.get("/sessions").status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert [r for r in caplog.records if r.name.startswith("uvicorn")] == []


def test_busy_port_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            SimulatorServer(sessions=1, port=taken.getsockname()[1]).start()


def test_server_from_a_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('session_count = 4\nlist_shape = "array"\n', encoding="utf-8")
    server = SimulatorServer(scenario=path, api_key=API_KEY)
    assert len(server.simulator.session_ids()) == 4
    assert server.simulator.faults.list_shape == "array"
    with pytest.raises(ValueError, match="not both"):
        SimulatorServer(server.simulator, sessions=3)


def test_stop_ends_hanging_requests() -> None:
    sim = Simulator(sessions=1, api_key=API_KEY)
    sim.update_faults(hang={"always": True})
    server = SimulatorServer(sim).start()
    outcome: list[object] = []

    def hang() -> None:
        try:
            outcome.append(
                httpx.get(
                    f"{server.base_url}/sessions",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=30,
                ).status_code
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=hang)
    caller.start()
    wait_for(lambda: sim.stats()["in_flight"] == 1)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    caller.join(5)
    assert outcome, "the hanging request never returned"
    assert sim.stats()["in_flight"] == 0


class _Output(io.StringIO):
    """What serve() prints, readable from another thread."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def lines(self) -> dict[str, str]:
        with self.lock:
            text = self.getvalue()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture
def restore_signals() -> Iterator[None]:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.usefixtures("restore_signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_url_and_key_and_returns_0_on_signal(signum: int) -> None:
    out = _Output()
    seen: list[int] = []

    def drive() -> None:
        wait_for(lambda: "WASEND_API_KEY" in out.lines())
        env = out.lines()
        response = httpx.get(
            f"{env['WASEND_BASE_URL']}/sessions",
            headers={"Authorization": f"Bearer {env['WASEND_API_KEY']}"},
        )
        seen.append(len(response.json()["sessions"]))
        os.kill(os.getpid(), signum)

    driver = threading.Thread(target=drive)
    driver.start()
    code = serve("127.0.0.1", 0, 3, "k3y", None, out)
    driver.join(5)
    assert code == 0
    assert seen == [3]
    env = out.lines()
    assert env["WASEND_API_KEY"] == "k3y"
    assert env["WASEND_BASE_URL"].startswith("http://127.0.0.1:")


def test_serve_raises_scenario_error_before_listening(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("list_shape = 3", encoding="utf-8")
    with pytest.raises(ScenarioError, match="list_shape"):
        serve("127.0.0.1", 0, None, None, path, io.StringIO())


def test_command_line_reports_a_bad_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[hang]\nsecs = 3", encoding="utf-8")
    assert main(["--port", "0", "--scenario", str(path)]) == 2
    assert "hang.secs: unknown key (did you mean 'seconds'?)" in capsys.readouterr().err


def test_command_line_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use" in (
        capsys.readouterr().err
    )


def test_list_of_10000_sessions_is_cheap() -> None:
    sim = Simulator(sessions=10_000, api_key=API_KEY)
    for shape in LIST_SHAPES:
        best = min(_cpu(lambda: sim.api_list(shape)) for _ in range(3))
        assert best < 0.15, f"{shape}: {best * 1000:.0f} ms of CPU"


def _cpu(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def test_simulator_imports_nothing_else_from_the_supervisor_package() -> None:
    offending = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                offending.append(f"{path.name}: from {'.' * node.level}{node.module or ''}")
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                if name.split(".")[0] == "supervisor" and not name.startswith(
                    "supervisor.simulator"
                ):
                    offending.append(f"{path.name}: {name}")
    assert offending == []
