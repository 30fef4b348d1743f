"""The webhook endpoint in a real service against the simulator over real HTTP: a signed
status event has the session read at once and restarted on what the API said; a forged,
stale or unknown one costs no restart (a forged one not even a request); without a key the
path is 404; an address of its own; one line at start without an address."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.config.model import WebhookSettings
from supervisor.domain import events as ev
from supervisor.simulator import SimulatorServer
from tests.e2e.conftest import Served, SimFactory, cli
from tests.waiting import until

pytestmark = pytest.mark.e2e

KEY = "whk-e2e-5d1f8a3c9b7e2046"


def envelope(session: str, status: str, *, evt: str | None = None) -> bytes:
    return json.dumps({
        "id": evt or f"evt_{uuid.uuid4().hex[:26].upper()}",
        "timestamp": int(time.time() * 1000), "event": "session.status", "session": session,
        "metadata": {}, "payload": {"status": status, "statuses": [
            {"status": "WORKING", "timestamp": 1}, {"status": status, "timestamp": 2}]},
        "engine": "GOWS", "environment": {"version": "test", "engine": "GOWS", "tier": "PLUS"},
    }).encode()


def signed(body: bytes, key: str = KEY) -> dict[str, str]:
    return {"content-type": "application/json",
            "x-webhook-hmac": hmac.new(key.encode(), body, hashlib.sha512).hexdigest(),
            "x-webhook-hmac-algorithm": "sha512",
            "x-webhook-timestamp": str(int(time.time() * 1000)),
            "x-webhook-request-id": uuid.uuid4().hex}


async def serve(server: SimulatorServer, **overrides: Any) -> Served:
    """The service running, its first poll made (the rest of the test is the webhooks'):
    the poll interval is a minute unless told otherwise."""
    overrides.setdefault("poll_interval", 60.0)
    served = await Served(server, **overrides).start()
    await until(lambda: served.service.daemon.polls >= 1)
    return served


def hook_url(served: Served, *, own: bool = False) -> str:
    listener = served.service.webhook_listener if own else None
    return served.url("/webhooks/wasend", listener=listener)


async def post(served: Served, body: bytes, headers: dict[str, str], *,
               own: bool = False) -> httpx.Response:
    return await served.http.post(hook_url(served, own=own), content=body, headers=headers)


def hooks(**kw: Any) -> WebhookSettings:
    kw.setdefault("hmac_key", SecretStr(KEY))
    return WebhookSettings(**kw)


def calls(server: SimulatorServer, session: str) -> list[str]:
    return [r.kind for r in server.simulator.requests() if r.session == session]


async def test_a_signed_event_has_the_session_read_and_restarted_at_once(
        simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0,
                        "start_delay": 0.1})
    served = await serve(server, webhooks=hooks())
    try:
        server.simulator.set_status("b", "FAILED")
        with capture_logs() as logs:
            body = envelope("b", "FAILED")
            started = time.monotonic()
            answer = await post(served, body, signed(body))
            assert answer.status_code == 202
            await until(lambda: "restart" in calls(server, "b"), timeout=5)
            took = time.monotonic() - started
        assert calls(server, "b")[:2] == ["get", "restart"]
        assert calls(server, "a") == []
        assert took < 2.0  # not a poll interval (60 s)
        nudged = [e for e in logs if e["event"] == ev.SESSION_NUDGED]
        assert nudged and nudged[0]["session_id"] == "b" and nudged[0]["status"] == "FAILED"
        # the same event again (a replay, or the provider retrying): acknowledged, nothing
        assert (await post(served, body, signed(body))).status_code == 200
    finally:
        await served.stop()


async def test_a_hint_is_never_the_truth_a_false_status_costs_one_get_and_no_restart(
        simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}], "session_count": 0})
    served = await serve(server, webhooks=hooks())
    try:
        body = envelope("a", "FAILED")  # signed, but the API says WORKING
        assert (await post(served, body, signed(body))).status_code == 202
        endpoint = served.service.webhooks
        assert endpoint is not None
        await until(lambda: calls(server, "a") == ["get"] and endpoint.nudges.reads == 1
                    and not endpoint.nudges.waiting, timeout=5)
    finally:
        await served.stop()
    assert calls(server, "a") == ["get"]


async def test_forged_stale_and_unknown_events_cost_no_restart_and_forged_ones_no_request(
        simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a", "status": "STOPPED"}], "session_count": 0})
    served = await serve(server, webhooks=hooks(), poll_interval=3600.0)
    try:
        await until(lambda: "restart" in calls(server, "a"))  # the first poll restarted it
        server.simulator.reset_log()
        body = envelope("a", "FAILED")
        assert (await post(served, body, signed(body, "whk-someone-else-0000000"))
                ).status_code == 401
        assert (await post(served, body, {})).status_code == 401
        stale = signed(body)
        stale["x-webhook-timestamp"] = str(int((time.time() - 3600) * 1000))
        assert (await post(served, body, stale)).status_code == 401
        assert (await post(served, b"{not json", signed(b"{not json"))).status_code == 400
        with capture_logs() as logs:
            ghost = envelope("nobody", "FAILED")
            assert (await post(served, ghost, signed(ghost))).status_code == 202
            await until(lambda: any(e.get("reason") == "unknown_session" for e in logs))
        assert server.simulator.requests() == []
        counts = served.service.webhooks.receiver.counts if served.service.webhooks else {}
        assert counts["signature"] == 2 and counts["skew"] == 1 and counts["malformed"] == 1
        metrics = (await served.http.get(served.url("/metrics"))).text
        assert 'wasend_supervisor_webhooks_total{outcome="signature"} 2.0' in metrics
    finally:
        await served.stop()


async def test_without_a_key_the_path_is_404_as_any_other(simulator: SimFactory) -> None:
    server = simulator({"session_count": 1})
    served = await serve(server)
    try:
        body = envelope("sess-0001", "FAILED")
        assert (await post(served, body, signed(body))).status_code == 404
        assert served.service.webhooks is None
        metrics = (await served.http.get(served.url("/metrics"))).text
        assert "webhooks_total" not in metrics
    finally:
        await served.stop()


async def test_unsigned_events_on_purpose_are_taken_from_loopback_on_an_address_of_its_own(
        simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}], "session_count": 0})
    served = await serve(server, http_listen="", webhooks=WebhookSettings(
        allow_unsigned=True, listen="127.0.0.1:0"))
    try:
        assert served.service.listener is None
        body = json.dumps({"session": "a", "status": "STOPPED"}).encode()
        answer = await post(served, body, {"content-type": "application/json"}, own=True)
        assert answer.status_code == 202
        await until(lambda: calls(server, "a") == ["get"], timeout=5)
        assert (await served.http.get(hook_url(served, own=True))).status_code == 405
    finally:
        await served.stop()


def test_a_key_without_an_address_is_one_line_at_start() -> None:
    done = cli("config", env={"WASEND_SUPERVISOR_WEBHOOKS__HMAC_KEY": KEY})
    assert done.returncode == 78
    (line,) = done.stderr.strip().splitlines()
    assert line.endswith("webhooks: the endpoint needs an address: set http_listen, or "
                         "webhooks.listen (webhooks.hmac_key from environment variable "
                         "WASEND_SUPERVISOR_WEBHOOKS__HMAC_KEY)")
    assert KEY not in done.stderr + done.stdout
