"""The webhook endpoint in a real service against the simulator over real HTTP: a signed
status event has the session read at once and restarted on what the API said; a forged,
stale or unknown one costs no restart (a forged one not even a request); without a key the
path is 404; an address of its own; one line at start without an address."""

from __future__ import annotations

import asyncio
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
from supervisor.service import Service
from supervisor.simulator import SimulatorServer
from tests.e2e.conftest import SimFactory, cli, settings_for
from tests.fakes import MaxRandom
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


class Served:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.http = httpx.AsyncClient(trust_env=False, timeout=5)
        self.task: asyncio.Task[int] | None = None

    @classmethod
    async def start(cls, server: SimulatorServer, **overrides: Any) -> Served:
        overrides.setdefault("http_listen", "127.0.0.1:0")
        overrides.setdefault("poll_interval", 60.0)  # the first poll only: the rest is ours
        settings = settings_for(server, **overrides)
        served = cls(Service.build(settings, env={}, load=lambda: settings, rng=MaxRandom()))
        await served.service.open()
        served.task = asyncio.create_task(served.service.run())
        await until(lambda: served.service.daemon.polls >= 1)
        return served

    def url(self, path: str = "/webhooks/wasend", *, own: bool = False) -> str:
        listener = self.service.webhook_listener if own else self.service.listener
        assert listener is not None
        host, port = listener.address
        return f"http://{host}:{port}{path}"

    async def post(self, body: bytes, headers: dict[str, str], **kw: Any) -> httpx.Response:
        return await self.http.post(self.url(**kw), content=body, headers=headers)

    async def stop(self) -> int:
        assert self.task is not None
        self.service.daemon.request_stop("test")
        status = await asyncio.wait_for(self.task, 10)
        await self.service.aclose()
        await self.http.aclose()
        return status


def hooks(**kw: Any) -> WebhookSettings:
    kw.setdefault("hmac_key", SecretStr(KEY))
    return WebhookSettings(**kw)


def calls(server: SimulatorServer, session: str) -> list[str]:
    return [r.kind for r in server.simulator.requests() if r.session == session]


async def test_a_signed_event_has_the_session_read_and_restarted_at_once(
        simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0,
                        "start_delay": 0.1})
    served = await Served.start(server, webhooks=hooks())
    try:
        server.simulator.set_status("b", "FAILED")
        with capture_logs() as logs:
            body = envelope("b", "FAILED")
            started = time.monotonic()
            answer = await served.post(body, signed(body))
            assert answer.status_code == 202
            await until(lambda: "restart" in calls(server, "b"), timeout=5)
            took = time.monotonic() - started
        assert calls(server, "b")[:2] == ["get", "restart"]
        assert calls(server, "a") == []
        assert took < 2.0  # not a poll interval (60 s)
        nudged = [e for e in logs if e["event"] == ev.SESSION_NUDGED]
        assert nudged and nudged[0]["session_id"] == "b" and nudged[0]["status"] == "FAILED"
        # the same event again (a replay, or the provider retrying): acknowledged, nothing
        assert (await served.post(body, signed(body))).status_code == 200
    finally:
        await served.stop()


async def test_a_hint_is_never_the_truth_a_false_status_costs_one_get_and_no_restart(
        simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}], "session_count": 0})
    served = await Served.start(server, webhooks=hooks())
    try:
        body = envelope("a", "FAILED")  # signed, but the API says WORKING
        assert (await served.post(body, signed(body))).status_code == 202
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
    served = await Served.start(server, webhooks=hooks(), poll_interval=3600.0)
    try:
        await until(lambda: "restart" in calls(server, "a"))  # the first poll restarted it
        server.simulator.reset_log()
        body = envelope("a", "FAILED")
        assert (await served.post(body, signed(body, "whk-someone-else-0000000"))
                ).status_code == 401
        assert (await served.post(body, {})).status_code == 401
        stale = signed(body)
        stale["x-webhook-timestamp"] = str(int((time.time() - 3600) * 1000))
        assert (await served.post(body, stale)).status_code == 401
        assert (await served.post(b"{not json", signed(b"{not json"))).status_code == 400
        with capture_logs() as logs:
            ghost = envelope("nobody", "FAILED")
            assert (await served.post(ghost, signed(ghost))).status_code == 202
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
    served = await Served.start(server)
    try:
        body = envelope("sess-0001", "FAILED")
        assert (await served.post(body, signed(body))).status_code == 404
        assert served.service.webhooks is None
        metrics = (await served.http.get(served.url("/metrics"))).text
        assert "webhooks_total" not in metrics
    finally:
        await served.stop()


async def test_unsigned_events_on_purpose_are_taken_from_loopback_on_an_address_of_its_own(
        simulator: SimFactory) -> None:
    server = simulator({"sessions": [{"id": "a"}], "session_count": 0})
    served = await Served.start(server, http_listen="", webhooks=WebhookSettings(
        allow_unsigned=True, listen="127.0.0.1:0"))
    try:
        assert served.service.listener is None
        body = json.dumps({"session": "a", "status": "STOPPED"}).encode()
        answer = await served.post(body, {"content-type": "application/json"}, own=True)
        assert answer.status_code == 202
        await until(lambda: calls(server, "a") == ["get"], timeout=5)
        assert (await served.http.get(served.url(own=True))).status_code == 405
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
