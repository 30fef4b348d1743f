"""Each fault over real HTTP on 127.0.0.1, on the shared live server."""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from supervisor.simulator import SimulatorServer
from tests.fakes import ShiftableClock
from tests.waiting import wait_for


def test_rate_limit_with_retry_after_seconds_and_early_accounting(
    server: SimulatorServer, client: httpx.Client, live_clock: ShiftableClock
) -> None:
    server.simulator.update_faults(rate_limit={"requests": 2, "window": 60, "retry_after": 1})
    assert [client.get("/sessions").status_code for _ in range(2)] == [200, 200]
    limited = client.get("/sessions")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["statusCode"] == 429
    assert client.get("/sessions").status_code == 429  # too early
    live_clock.advance(1.0)
    assert client.get("/sessions").status_code == 429  # on time, still over the limit
    live_clock.advance(60.0)
    assert client.get("/sessions").status_code == 200
    records = server.simulator.requests()
    assert [(r.status, r.early, r.fault) for r in records] == [
        (200, False, None),
        (200, False, None),
        (429, False, "rate_limit"),
        (429, True, "early"),
        (429, False, "rate_limit"),
        (200, False, None),
    ]
    stats = client.get("/_simulator/stats").json()
    assert (stats["rate_limited"], stats["early"]) == (3, 1)


def test_rate_limit_with_retry_after_http_date(
    server: SimulatorServer, client: httpx.Client, live_clock: ShiftableClock
) -> None:
    server.simulator.update_faults(
        rate_limit={"requests": 1, "window": 5, "retry_after": 3, "retry_after_form": "http-date"}
    )
    assert client.get("/sessions").status_code == 200
    before = live_clock.now()
    limited = client.get("/sessions")
    assert limited.status_code == 429
    when = parsedate_to_datetime(limited.headers["retry-after"]).timestamp()
    assert when == int(when)
    assert before + 3 <= when <= live_clock.now() + 4
    assert limited.headers["retry-after"].endswith(" GMT")
    assert client.get("/sessions").status_code == 429
    assert server.simulator.requests()[-1].early is True
    live_clock.advance(
        when + 4 - live_clock.now()
    )  # past the date (and the one the early request set)
    assert client.get("/sessions").status_code == 200


def test_rate_limit_without_retry_after(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(
        rate_limit={"requests": 1, "window": 60, "retry_after_form": "absent"}
    )
    client.get("/sessions")
    limited = client.get("/sessions")
    assert limited.status_code == 429
    assert "retry-after" not in limited.headers
    client.get("/sessions")
    assert not any(r.early for r in server.simulator.requests())


def test_burst_of_429s(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(rate_limit={"burst": 3, "retry_after": 0})
    answers = [client.get("/sessions") for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 429, 429, 200]
    assert all(a.headers.get("retry-after") == "0" for a in answers[:3])
    assert client.get("/_simulator/faults").json()["rate_limit"]["burst"] == 0


def test_server_errors(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(server_errors={"rate": 1.0, "status": 502, "kinds": ["restart"]})
    client.post("/sessions/sess-0001/stop")
    failed = client.post("/sessions/sess-0001/restart")
    assert failed.status_code == 502
    assert failed.json()["statusCode"] == 502
    assert client.get("/sessions/sess-0001").json()["status"] == "STOPPED"  # not restarted
    assert client.get("/sessions").status_code == 200
    assert server.simulator.requests()[1].fault == "server_error"


def test_added_latency(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(latency={"seconds": 0.15})
    started = time.monotonic()
    assert client.get("/sessions").status_code == 200
    assert time.monotonic() - started >= 0.15
    assert server.simulator.requests()[-1].duration >= 0.15


def test_hang_outlasts_the_client_timeout(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(hang={"always": True})
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get("/sessions", timeout=0.2)
    assert time.monotonic() - started < 2.0
    wait_for(lambda: server.simulator.stats()["unanswered"] == 1)
    record = server.simulator.requests()[-1]
    assert (record.status, record.fault) == (None, "hang")


def test_short_hang_is_answered_afterwards(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(hang={"rate": 1.0, "seconds": 0.1})
    started = time.monotonic()
    assert client.get("/sessions").status_code == 200
    assert time.monotonic() - started >= 0.1


def test_malformed_json(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(malformed_json={"rate": 1.0, "kinds": ["get"]})
    broken = client.get("/sessions/sess-0001")
    assert broken.status_code == 200
    assert broken.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.content)
    assert client.get("/sessions").json()["sessions"]  # other kinds stay well-formed
    assert client.get("/sessions/nope").json()["statusCode"] == 404  # errors stay well-formed


def test_outage_503_then_recovery(
    server: SimulatorServer, client: httpx.Client, anon: httpx.Client
) -> None:
    server.simulator.start_outage(60, "503")
    down = client.get("/sessions")
    assert down.status_code == 503
    assert down.json()["statusCode"] == 503
    assert anon.get("/sessions").status_code == 503
    assert client.get("/_simulator/stats").json()["outage"] == "503"  # admin still answers
    server.simulator.end_outage()
    assert client.get("/sessions").status_code == 200


def test_outage_refuse_closes_the_port_and_reopens_it(
    server: SimulatorServer, client: httpx.Client, live_clock: ShiftableClock
) -> None:
    assert client.get("/sessions").status_code == 200  # a pooled keep-alive connection
    port = server.port
    server.simulator.start_outage(30, "refuse")
    assert server.wait_listening(False)
    with (
        httpx.Client(base_url=server.base_url, timeout=2.0) as fresh,
        pytest.raises(httpx.ConnectError),
    ):
        fresh.get("/sessions")
    with pytest.raises(httpx.TransportError):
        client.get("/sessions")  # the open connection was dropped too
    live_clock.advance(30)
    assert server.wait_listening(True)
    assert server.port == port
    assert client.get("/sessions").status_code == 200
