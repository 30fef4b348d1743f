"""The session API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from supervisor.simulator import SimulatorServer
from tests.fakes import ShiftableClock

SESSION_FIELDS = {
    "id",
    "uniqueSessionId",
    "userId",
    "sessionName",
    "name",
    "phoneNumber",
    "status",
    "enableAccountProtection",
    "enableMessageLogging",
    "enableWebhook",
    "webhookUrl",
    "createdAt",
    "updatedAt",
    "config",
    "engine",
}
DETAIL_FIELDS = SESSION_FIELDS - {"name", "status", "config", "engine"}


def assert_full_session(obj: dict[str, object]) -> None:
    assert set(obj) == SESSION_FIELDS
    config, engine = obj["config"], obj["engine"]
    assert isinstance(config, dict)
    assert set(config) == {"metadata", "proxy", "debug", "noweb", "webhooks"}
    assert set(config["metadata"]) == {"userEmail", "userId"}
    assert set(config["noweb"]) == {"markOnline", "store"}
    assert isinstance(engine, dict)
    assert set(engine["grpc"]) == {"client", "stream"}
    assert set(engine["gows"]) == {"found", "connected"}
    for key in ("id", "uniqueSessionId", "userId", "sessionName", "name", "phoneNumber"):
        assert isinstance(obj[key], str)
        assert obj[key]
    assert str(obj["createdAt"]).endswith("Z")


def test_list_is_nested_by_default(client: httpx.Client) -> None:
    response = client.get("/sessions")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    items = response.json()["sessions"]
    assert len(items) == 5
    for item in items:
        assert set(item) == {"session", "downstream"}
        assert set(item["session"]) == DETAIL_FIELDS
        assert set(item["downstream"]) == {"name", "status", "config", "engine"}
        assert item["downstream"]["status"] == "WORKING"
    assert items[0]["session"]["uniqueSessionId"] == "sess-0001"


def test_list_flat_shape(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(list_shape="flat")
    items = client.get("/sessions").json()["sessions"]
    for item in items:
        assert_full_session(item)
    assert [i["uniqueSessionId"] for i in items][:2] == ["sess-0001", "sess-0002"]


def test_list_array_shape(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(list_shape="array")
    items = client.get("/sessions").json()
    assert isinstance(items, list)
    assert len(items) == 5
    assert_full_session(items[0])


def test_get_one_session_is_a_full_session_object(client: httpx.Client) -> None:
    response = client.get("/sessions/sess-0002")
    assert response.status_code == 200
    obj = response.json()
    assert_full_session(obj)
    assert (obj["uniqueSessionId"], obj["status"]) == ("sess-0002", "WORKING")


def test_unknown_session_is_404_json(client: httpx.Client) -> None:
    for method, path in [
        ("GET", "/sessions/nope"),
        ("POST", "/sessions/nope/restart"),
        ("POST", "/sessions/nope/start"),
        ("POST", "/sessions/nope/stop"),
        ("GET", "/sessions/nope/auth/qr"),
        ("GET", "/sessions/nope/qr"),
        ("DELETE", "/sessions/nope"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["statusCode"] == 404


def test_unknown_route_is_404_json(client: httpx.Client) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "message": "Not Found", "error": "Not Found"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}]
)
def test_wrong_or_missing_key_is_401(anon: httpx.Client, headers: dict[str, str]) -> None:
    response = anon.get("/sessions", headers=headers)
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_restart_cycle_over_http(
    server: SimulatorServer, client: httpx.Client, live_clock: ShiftableClock
) -> None:
    assert client.post("/sessions/sess-0001/restart").status_code == 409
    stopped = client.post("/sessions/sess-0001/stop")
    assert (stopped.status_code, stopped.json()["status"]) == (200, "STOPPED")
    restarted = client.post("/sessions/sess-0001/restart")
    assert restarted.status_code == 200
    body = restarted.json()
    assert_full_session(body)
    assert body["status"] == "STARTING"
    assert client.post("/sessions/sess-0001/restart").status_code == 409  # STARTING runs
    live_clock.advance(0.5)  # the live scenario's start_delay
    assert client.get("/sessions/sess-0001").json()["status"] == "WORKING"


def test_restart_of_failed_session_with_conflict_option(
    server: SimulatorServer, client: httpx.Client
) -> None:
    sim = server.simulator
    sim.set_status("sess-0002", "FAILED")
    assert client.post("/sessions/sess-0002/restart").json()["status"] == "STARTING"
    sim.update_faults(conflict_on_failed_restart=True)
    sim.set_status("sess-0002", "FAILED")
    assert client.post("/sessions/sess-0002/restart").status_code == 409
    assert client.post("/sessions/sess-0002/stop").status_code == 200
    assert client.post("/sessions/sess-0002/restart").status_code == 200


def test_start_conflict_is_422(client: httpx.Client) -> None:
    response = client.post("/sessions/sess-0003/start")
    assert response.status_code == 422
    assert response.json()["statusCode"] == 422
    client.post("/sessions/sess-0003/stop")
    assert client.post("/sessions/sess-0003/start").json()["status"] == "STARTING"


def test_posts_answer_201_when_configured(server: SimulatorServer, client: httpx.Client) -> None:
    server.simulator.update_faults(post_status=201)
    assert client.post("/sessions/sess-0004/stop").status_code == 201
    assert client.post("/sessions/sess-0004/start").status_code == 201
    assert client.get("/sessions/sess-0004").status_code == 200


def test_qr_code_on_both_paths_for_a_session_to_scan(
    server: SimulatorServer, client: httpx.Client
) -> None:
    server.simulator.set_status("sess-0001", "SCAN_QR_CODE")
    sdk = client.get("/sessions/sess-0001/auth/qr")
    page = client.get("/sessions/sess-0001/qr")
    assert (sdk.status_code, page.status_code) == (200, 200)
    data = sdk.json()["data"]
    assert isinstance(data, str) and data.startswith("2@")
    assert page.json() == {"data": data}
    assert server.simulator.qr_payload("sess-0001") == data
    admin = client.get("/_simulator/sessions/sess-0001/qr").json()
    assert (admin["id"], admin["status"], admin["data"]) == ("sess-0001", "SCAN_QR_CODE", data)
    assert 0 < admin["rotates_in"] <= 20
    assert [r.kind for r in server.simulator.requests()] == ["qr", "qr"]


def test_qr_code_of_a_session_not_to_scan_is_422(
    server: SimulatorServer, client: httpx.Client
) -> None:
    for path in ("/sessions/sess-0001/auth/qr", "/sessions/sess-0001/qr"):
        response = client.get(path)
        assert response.status_code == 422, path
        body = response.json()
        assert body["statusCode"] == 422
        assert "SCAN_QR_CODE" in body["message"] and "WORKING" in body["message"]
    admin = client.get("/_simulator/sessions/sess-0001/qr").json()
    assert (admin["data"], admin["rotates_in"]) == (None, None)
    assert client.get("/_simulator/sessions/nope/qr").status_code == 404


def test_create_and_delete(client: httpx.Client) -> None:
    created = client.post("/sessions", json={"sessionName": "New", "phoneNumber": "+15551234567"})
    assert created.status_code == 200
    obj = created.json()
    assert_full_session(obj)
    assert (obj["sessionName"], obj["status"], obj["uniqueSessionId"]) == (
        "New",
        "CREATED",
        "sess-0006",
    )
    assert client.post("/sessions", json={"sessionName": "x"}).status_code == 400
    assert client.post("/sessions", content=b"{").status_code == 400
    deleted = client.delete("/sessions/sess-0006")
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert client.get("/sessions/sess-0006").status_code == 404


def test_every_api_request_is_logged_but_admin_requests_are_not(
    server: SimulatorServer, client: httpx.Client
) -> None:
    client.get("/sessions")
    client.post("/sessions/sess-0001/restart")
    client.get("/_simulator/stats")
    records = server.simulator.requests()
    assert [(r.method, r.path, r.status) for r in records] == [
        ("GET", "/sessions", 200),
        ("POST", "/sessions/sess-0001/restart", 409),
    ]
    assert all(r.duration >= 0 for r in records)


def test_the_log_names_each_requests_user_agent(server: SimulatorServer,
                                                client: httpx.Client) -> None:
    server.simulator.reset_log()
    client.get("/sessions", headers={"User-Agent": "wasend-supervisor/1 (replica b)"})
    client.get("/sessions", headers={"User-Agent": ""})
    agents = [r.agent for r in server.simulator.requests()]
    assert agents == ["wasend-supervisor/1 (replica b)", ""]
    logged = client.get("/_simulator/requests").json()["requests"]
    assert [r["agent"] for r in logged] == agents
