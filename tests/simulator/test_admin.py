"""The admin API under /_simulator/."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from supervisor.simulator import Simulator, SimulatorServer, admin_requires_key, create_app
from supervisor.simulator.scenario import parse_scenario
from tests.fakes import ShiftableClock

from .conftest import API_KEY


def test_set_status_over_admin_api(anon: httpx.Client, client: httpx.Client) -> None:
    response = anon.post("/_simulator/sessions/sess-0002/status", json={"status": "FAILED"})
    assert response.status_code == 200
    assert response.json()["status"] == "FAILED"
    assert client.get("/sessions/sess-0002").json()["status"] == "FAILED"


def test_set_status_errors(anon: httpx.Client) -> None:
    assert (
        anon.post("/_simulator/sessions/nope/status", json={"status": "FAILED"}).status_code == 404
    )
    bad = anon.post("/_simulator/sessions/sess-0001/status", json={"state": "FAILED"})
    assert bad.status_code == 400
    assert "status" in bad.json()["error"]
    assert anon.post("/_simulator/sessions/sess-0001/status", content=b"{").status_code == 400
    assert (
        anon.post("/_simulator/sessions/sess-0001/status", json={"status": "a b"}).status_code
        == 400
    )


def test_patch_session_status_and_outcome(
    anon: httpx.Client, client: httpx.Client, live_clock: ShiftableClock
) -> None:
    raw = anon.patch(
        "/_simulator/sessions/sess-0003", json={"status": "STOPPED", "outcome": ["SCAN_QR_CODE"]}
    )
    assert raw.status_code == 200
    assert (raw.json()["status"], raw.json()["next_outcome"]) == ("STOPPED", "SCAN_QR_CODE")
    client.post("/sessions/sess-0003/restart")
    live_clock.advance(0.5)
    assert client.get("/sessions/sess-0003").json()["status"] == "SCAN_QR_CODE"
    assert (
        anon.patch("/_simulator/sessions/sess-0003", json={"outcome": ["NOPE"]}).status_code == 400
    )


def test_a_zombie_says_working_while_its_engine_says_not_connected_until_it_is_stopped(
    anon: httpx.Client, client: httpx.Client, live_clock: ShiftableClock
) -> None:
    raw = anon.patch("/_simulator/sessions/sess-0001", json={"zombie": True})
    assert raw.status_code == 200 and raw.json()["zombie"] is True
    one = client.get("/sessions/sess-0001").json()
    assert one["status"] == "WORKING" and one["engine"]["gows"]["connected"] is False
    (listed,) = [i for i in client.get("/sessions").json()["sessions"]
                 if i["session"]["uniqueSessionId"] == "sess-0001"]
    assert listed["downstream"]["status"] == "WORKING"
    assert listed["downstream"]["engine"]["gows"]["connected"] is False
    # a restart of a running session conflicts, and leaves it a zombie
    assert client.post("/sessions/sess-0001/restart").status_code == 409
    assert client.get("/sessions/sess-0001").json()["engine"]["gows"]["connected"] is False
    # a stop and a start end it
    client.post("/sessions/sess-0001/stop")
    client.post("/sessions/sess-0001/restart")
    live_clock.advance(0.5)
    back = client.get("/sessions/sess-0001").json()
    assert back["status"] == "WORKING" and back["engine"]["gows"]["connected"] is True
    assert anon.get("/_simulator/sessions/sess-0001").json()["zombie"] is False
    bad = anon.patch("/_simulator/sessions/sess-0001", json={"zombie": "yes"})
    assert bad.status_code == 400 and "zombie" in bad.json()["error"]


def test_a_scenario_makes_a_zombie(make_sim: Callable[..., Simulator]) -> None:
    scenario = parse_scenario({"sessions": [{"id": "z", "zombie": True}]})
    sim = make_sim(sessions=0, scenario=scenario)
    assert sim.session("z")["zombie"] is True
    made = sim.session_object("z")
    assert made["status"] == "WORKING" and made["engine"]["gows"]["connected"] is False


def test_read_raw_session_state(anon: httpx.Client, client: httpx.Client) -> None:
    client.post("/sessions/sess-0001/stop")
    client.post("/sessions/sess-0001/restart")
    raw = anon.get("/_simulator/sessions/sess-0001").json()
    assert raw["status"] == "STARTING"
    assert raw["pending"]["status"] == "WORKING"
    assert 0 < raw["pending"]["in"] <= 0.5
    assert (raw["restarts"], raw["stops"]) == (1, 1)
    assert raw["object"]["uniqueSessionId"] == "sess-0001"
    assert anon.get("/_simulator/sessions/nope").status_code == 404


def test_list_states_and_add_sessions(anon: httpx.Client, client: httpx.Client) -> None:
    added = anon.post(
        "/_simulator/sessions",
        json={"count": 2, "status": "STOPPED", "sessions": [{"id": "vip", "status": "ERROR"}]},
    )
    assert added.status_code == 201
    assert added.json() == {"added": ["sess-0006", "sess-0007", "vip"]}
    states = anon.get("/_simulator/sessions").json()["sessions"]
    assert states["sess-0007"] == "STOPPED"
    assert states["vip"] == "ERROR"
    assert len(client.get("/sessions").json()["sessions"]) == 8
    taken = anon.post("/_simulator/sessions", json={"sessions": [{"id": "vip"}]})
    assert taken.status_code == 400
    assert "taken" in taken.json()["error"]
    assert anon.post("/_simulator/sessions", json={"cnt": 1}).status_code == 400


def test_faults_get_patch_put(anon: httpx.Client, client: httpx.Client) -> None:
    faults = anon.get("/_simulator/faults").json()
    assert faults["list_shape"] == "nested"
    assert faults["start_delay"] == 0.5
    patched = anon.patch(
        "/_simulator/faults", json={"list_shape": "array", "rate_limit": {"requests": 100}}
    )
    assert patched.status_code == 200
    assert patched.json()["list_shape"] == "array"
    assert patched.json()["rate_limit"]["requests"] == 100
    assert patched.json()["start_delay"] == 0.5  # untouched
    assert isinstance(client.get("/sessions").json(), list)
    put = anon.put("/_simulator/faults", json={"list_shape": "flat"})
    assert put.json()["rate_limit"]["requests"] == 0  # everything else back to defaults
    assert put.json()["start_delay"] == 1.0
    assert "uniqueSessionId" in client.get("/sessions").json()["sessions"][0]


def test_faults_patch_error_names_the_key(anon: httpx.Client) -> None:
    bad = anon.patch("/_simulator/faults", json={"rate_limit": {"retry_after_form": "date"}})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("rate_limit.retry_after_form: must be one of")
    assert anon.patch("/_simulator/faults", json=[1]).status_code == 400
    assert anon.get("/_simulator/faults").json()["rate_limit"]["retry_after_form"] == "seconds"


def test_request_log_since_limit_and_clear(
    anon: httpx.Client, client: httpx.Client, server: SimulatorServer
) -> None:
    client.get("/sessions")
    middle = server.simulator.clock.monotonic()
    client.get("/sessions/sess-0001")
    client.get("/sessions/sess-0002")
    log = anon.get("/_simulator/requests").json()
    assert log["count"] == 3
    entry = log["requests"][0]
    assert set(entry) == {
        "seq",
        "wall",
        "monotonic",
        "method",
        "path",
        "kind",
        "session",
        "status",
        "early",
        "fault",
        "duration",
        "agent",
    }
    assert (entry["method"], entry["path"], entry["status"], entry["early"]) == (
        "GET",
        "/sessions",
        200,
        False,
    )
    since = anon.get("/_simulator/requests", params={"since": middle}).json()
    assert [r["path"] for r in since["requests"]] == ["/sessions/sess-0001", "/sessions/sess-0002"]
    last = anon.get("/_simulator/requests", params={"limit": 1}).json()
    assert [r["session"] for r in last["requests"]] == ["sess-0002"]
    assert anon.get("/_simulator/requests", params={"since": "soon"}).status_code == 400
    assert anon.delete("/_simulator/requests").json() == {"cleared": True}
    assert anon.get("/_simulator/requests").json()["count"] == 0


def test_stats(anon: httpx.Client, client: httpx.Client) -> None:
    client.get("/sessions")
    client.post("/sessions/sess-0001/restart")
    anon.get("/sessions")
    stats = anon.get("/_simulator/stats").json()
    assert stats["requests"] == 3
    assert stats["by_kind"] == {"list": 2, "restart": 1}
    assert stats["by_status"] == {"200": 1, "401": 1, "409": 1}
    assert stats["sessions"] == 5
    assert stats["sessions_by_status"] == {"WORKING": 5}
    assert stats["outage"] is None


def test_reset(anon: httpx.Client, client: httpx.Client) -> None:
    anon.post("/_simulator/sessions/sess-0001/status", json={"status": "FAILED"})
    anon.patch("/_simulator/faults", json={"list_shape": "flat"})
    assert anon.post("/_simulator/reset").json() == {"reset": True}
    assert anon.get("/_simulator/sessions").json()["sessions"]["sess-0001"] == "WORKING"
    assert anon.get("/_simulator/faults").json()["list_shape"] == "nested"
    assert anon.get("/_simulator/stats").json()["requests"] == 0


@pytest.mark.parametrize(
    ("host", "needs_key"),
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.10", True),
        ("example.com", True),
    ],
)
def test_admin_key_is_required_off_loopback(host: str, needs_key: bool) -> None:
    assert admin_requires_key(host) is needs_key


def asgi_client(app: object) -> httpx.AsyncClient:
    """A client that calls the ASGI app in-process (no socket, no TestClient)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")  # type: ignore[arg-type]


async def test_guarded_admin_api_answers_401_without_the_key(
    make_sim: Callable[..., Simulator],
) -> None:
    async with asgi_client(create_app(make_sim(), admin_requires_key=True)) as guarded:
        for method, path in [
            ("GET", "/_simulator/stats"),
            ("GET", "/_simulator/faults"),
            ("PATCH", "/_simulator/faults"),
            ("POST", "/_simulator/sessions/sess-0001/status"),
            ("GET", "/_simulator/requests"),
        ]:
            response = await guarded.request(
                method, path, headers={"Authorization": "Bearer wrong"}
            )
            assert response.status_code == 401, path
        assert (await guarded.get("/_simulator/stats")).status_code == 401


async def test_guarded_admin_api_works_with_the_key(make_sim: Callable[..., Simulator]) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with asgi_client(create_app(make_sim(), admin_requires_key=True)) as guarded:
        response = await guarded.post(
            "/_simulator/sessions/sess-0001/status", json={"status": "FAILED"}, headers=headers
        )
        assert response.status_code == 200
        assert (await guarded.get("/sessions/sess-0001", headers=headers)).json()[
            "status"
        ] == "FAILED"


async def test_open_admin_api_needs_no_key(make_sim: Callable[..., Simulator]) -> None:
    async with asgi_client(create_app(make_sim(), admin_requires_key=False)) as open_client:
        assert (await open_client.get("/_simulator/stats")).status_code == 200
        assert (await open_client.get("/sessions")).status_code == 401  # the API itself still does


async def test_server_on_all_interfaces_guards_its_admin_api() -> None:
    server = SimulatorServer(sessions=1, api_key=API_KEY, host="0.0.0.0")  # never started
    async with asgi_client(server.app) as client:
        assert (await client.get("/_simulator/stats")).status_code == 401
        keyed = await client.get(
            "/_simulator/stats", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert keyed.status_code == 200
