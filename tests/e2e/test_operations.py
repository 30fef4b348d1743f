"""The service as operators see it, against the simulator over real HTTP: /livez,
/readyz and /metrics in each state, and the systemd notifications."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.e2e.conftest import Served, SimFactory
from tests.waiting import until

pytestmark = pytest.mark.e2e


async def eventually(served: Served, path: str, status: int, timeout: float = 10) -> None:
    """Poll an endpoint until it answers ``status``, with a deadline."""
    got: list[int] = []

    async def answers() -> bool:
        got[:] = [await served.status(path)]
        return got[0] == status

    await until(answers, timeout, step=0.05,
                describe=lambda: f"{path} still answers {got[0]}, not {status}")


async def test_readyz_is_503_until_the_first_successful_poll(simulator: SimFactory) -> None:
    server = simulator({"session_count": 2,
                        "hang": {"always": True, "kinds": ["list"], "seconds": 60}})
    served = await Served(server, request_timeout=1.0, shutdown_grace=0.2).start()
    try:
        await until(lambda: server.simulator.stats()["in_flight"] >= 1)  # first poll hangs
        ready = await served.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/json"
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["reason"].startswith("no successful poll yet")
        live = await served.get("/livez")
        assert (live.status_code, live.json()["status"]) == (200, "alive")
        server.simulator.update_faults(hang={"always": False})
        await eventually(served, "/readyz", 200)
        body = (await served.get("/readyz")).json()
        assert body["status"] == "ready" and body["last_poll"] == "ok"
    finally:
        assert await served.stop() == 0


async def test_readyz_fails_past_the_threshold_while_livez_stays_up(
    simulator: SimFactory,
) -> None:
    server = simulator({"session_count": 2})
    served = await Served(server, unready_after=0.6).start()
    try:
        await eventually(served, "/readyz", 200)
        server.simulator.start_outage(60, "503")
        await eventually(served, "/readyz", 503)
        body = (await served.get("/readyz")).json()
        assert body["reason"].startswith("no successful poll for")
        assert body["consecutive_failures"] >= 1
        assert body["last_poll"] == "failed (server_error)"
        for _ in range(5):  # an API outage never makes the process look dead
            assert await served.status("/livez") == 200
        server.simulator.end_outage()
        await eventually(served, "/readyz", 200)
    finally:
        assert await served.stop() == 0
    assert served.service.listener is not None
    with pytest.raises(ConnectionRefusedError):  # after the stop the listener is gone
        socket.create_connection(served.service.listener.address, timeout=1).close()


async def test_livez_follows_the_scheduler(simulator: SimFactory) -> None:
    server = simulator({"session_count": 1})
    served = Served(server)
    await served.service.open()  # listening, but the scheduler has not started
    try:
        live = await served.get("/livez")
        assert (live.status_code, live.json()["reason"]) == (503, "scheduler not started")
        served.task = asyncio.create_task(served.service.run())
        await eventually(served, "/livez", 200)
    finally:
        assert await served.stop() == 0


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def one(found: dict[str, list[tuple[dict[str, str], float]]], name: str,
        **labels: str) -> float:
    [value] = [v for have, v in found[name] if all(have.get(k) == x for k, x in labels.items())]
    return value


async def test_metrics_unknown_paths_and_methods(simulator: SimFactory) -> None:
    server = simulator({
        "sessions": [{"id": "a"}, {"id": "b", "status": "STOPPED"},
                     {"id": "q", "status": "SCAN_QR_CODE"}],
        "session_count": 0,
        "rate_limit": {"burst": 1, "retry_after": 1},  # the very first request gets a 429
    })
    with capture_logs() as events:
        served = await Served(server).start()
        try:
            await until(lambda: any(e["event"] == "restart.succeeded" for e in events))
            target = served.service.daemon.polls + 1
            await until(lambda: served.service.daemon.polls >= target)
            response = await served.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            head = await served.http.head(served.url("/metrics"))
            assert head.status_code == 200 and head.content == b""
            assert await served.status("/nope") == 404
            assert await served.status("/metrics/") == 404
            post = await served.http.post(served.url("/readyz"))
            assert post.status_code == 405
        finally:
            assert await served.stop() == 0

    found = metric_samples(response.text)
    for name in (
        "wasend_supervisor_sessions", "wasend_supervisor_sessions_in_phase",
        "wasend_supervisor_restarts_total", "wasend_supervisor_restart_requests_total",
        "wasend_supervisor_api_rate_limited_total",
        "wasend_supervisor_api_rate_limit_paused_seconds_total",
        "wasend_supervisor_api_request_duration_seconds_bucket",
        "wasend_supervisor_poll_duration_seconds_count",
        "wasend_supervisor_last_successful_poll_timestamp_seconds",
        "wasend_supervisor_sessions_given_up", "wasend_supervisor_sessions_needing_person",
        "wasend_supervisor_gave_up_total", "wasend_supervisor_needs_person_total",
        "wasend_supervisor_polls_total",
    ):
        assert name in found, name
    assert one(found, "wasend_supervisor_sessions", **{"class": "healthy"}) == 2
    assert one(found, "wasend_supervisor_sessions", **{"class": "needs_person"}) == 1
    assert one(found, "wasend_supervisor_sessions_needing_person") == 1
    assert one(found, "wasend_supervisor_needs_person_total") == 1
    assert one(found, "wasend_supervisor_restarts_total", outcome="succeeded") == 1
    assert one(found, "wasend_supervisor_restart_requests_total") == 1
    assert one(found, "wasend_supervisor_api_rate_limited_total") == 1
    assert one(found, "wasend_supervisor_api_rate_limit_paused_seconds_total") > 0
    assert one(found, "wasend_supervisor_api_request_duration_seconds_count",
               call="list", status="429") == 1
    assert one(found, "wasend_supervisor_api_request_duration_seconds_count",
               call="restart", status="200") == 1
    assert one(found, "wasend_supervisor_polls_total", outcome="failed") == 1
    assert one(found, "wasend_supervisor_last_successful_poll_timestamp_seconds") > 1.7e9
    assert not any("session" in labels for samples in found.values() for labels, _ in samples)


# --- systemd -------------------------------------------------------------------------------


@pytest.fixture
def notify(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path_factory.mktemp("n") / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()


def received(sock: socket.socket, into: list[str]) -> list[str]:
    while True:
        try:
            into.extend(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return into


async def test_service_tells_systemd_ready_status_watchdog_and_stopping(
    simulator: SimFactory, notify: tuple[str, socket.socket],
) -> None:
    server = simulator({"session_count": 0,
                        "sessions": [{"id": "a"}, {"id": "f", "status": "FAILED",
                                                   "outcome": "FAILED"}]})
    path, sock = notify
    lines: list[str] = []
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}
    served = await Served(server, env=env).start()
    try:
        await until(lambda: "READY=1" in received(sock, lines))
        await until(lambda: received(sock, lines).count("WATCHDOG=1") >= 2)
        await until(lambda: any("recovering" in line for line in received(sock, lines)))
    finally:
        assert await served.stop() == 0
    received(sock, lines)
    assert lines[0] == "STATUS=starting: waiting for the first poll"
    assert lines.count("READY=1") == 1
    status = next(line for line in lines if line.startswith("STATUS=2 sessions"))
    assert status.endswith(" ok")
    assert "STOPPING=1" in lines and lines.index("STOPPING=1") > lines.index("READY=1")


async def test_ready_after_a_failed_first_poll(
    simulator: SimFactory, notify: tuple[str, socket.socket],
) -> None:
    server = simulator({"session_count": 1, "outage": {"duration": 60, "mode": "503"}})
    path, sock = notify
    lines: list[str] = []
    served = await Served(server, env={"NOTIFY_SOCKET": path}).start()
    try:
        await until(lambda: "READY=1" in received(sock, lines))
        assert await served.status("/readyz") == 503  # ready for systemd, not for traffic
    finally:
        assert await served.stop() == 0
    after = lines[lines.index("READY=1") + 1]
    assert after.startswith("STATUS=0 sessions: 0 healthy; last poll ")
    assert after.endswith("failed (server_error)")

