"""The simulator's webhooks: WAHA-shaped session.status events posted over real HTTP to a
receiver on 127.0.0.1, signed, retried, with faults; the background timer that sends a
change at its time; the burst; the settings; the command line."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from supervisor.simulator import ManualClock, ScenarioError, Simulator, SimulatorServer
from supervisor.simulator.cli import HMAC_KEY_ENV
from supervisor.simulator.faults import WebhookRetries, WebhookSettings
from supervisor.simulator.scenario import parse_scenario
from supervisor.simulator.webhooks import ulid
from tests.alerts.receivers import HttpReceiver, Request, free_port
from tests.waiting import wait_for

from .conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
KEY = "webhook-test-secret"
EVT = re.compile(r"evt_[0-9A-HJKMNP-TV-Z]{26}")
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class ScriptedReceiver(HttpReceiver):
    """An HttpReceiver that answers the statuses of ``script`` in turn, the last one
    for every later request."""

    script: list[int]

    @property
    def status(self) -> int:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    @status.setter
    def status(self, value: int) -> None:
        self.script = [value]

    @property
    def hook_url(self) -> str:
        return f"http://{self.url}/hook"

    def events(self) -> list[dict[str, Any]]:
        return [r.json() for r in list(self.requests)]


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    r = ScriptedReceiver()
    r.start()
    yield r
    r.stop()


def hooked(receiver: ScriptedReceiver, *, key: str | None = KEY, sessions: int = 3,
           **keys: Any) -> SimulatorServer:
    """A server whose scenario posts webhooks to ``receiver`` (start_delay 0.2 s)."""
    data: dict[str, Any] = {"session_count": sessions, "start_delay": 0.2, "seed": 3,
                            "webhook_url": receiver.hook_url, **keys}
    if key is not None:
        data["webhook_hmac_key"] = key
    return SimulatorServer(scenario=parse_scenario(data), api_key=API_KEY)


def signed(request: Request, key: str = KEY, algorithm: str = "sha512") -> bool:
    expected = hmac.new(key.encode(), request.body, getattr(hashlib, algorithm)).hexdigest()
    return hmac.compare_digest(request.headers.get("X-Webhook-Hmac", ""), expected)


def sent(sim: Simulator, count: int) -> None:
    """Wait until ``count`` attempts are in the log (logged once answered)."""
    wait_for(lambda: sim.webhook_stats()["sent"] >= count)


def post(server: SimulatorServer, path: str, body: object = None) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, headers=AUTH, timeout=5)


# -- one event per status change --------------------------------------------------------


def test_every_status_change_sends_one_signed_waha_event(receiver: ScriptedReceiver) -> None:
    with hooked(receiver) as server:
        sim = server.simulator
        assert post(server, "/sessions/sess-0001/stop").status_code == 200
        wait_for(lambda: len(receiver.requests) == 1)
        assert post(server, "/sessions/sess-0001/restart").status_code == 200
        requests_made = len(sim.requests())
        # STARTING now, WORKING after start_delay: sent by the timer, with no request made.
        wait_for(lambda: len(receiver.requests) == 3, timeout=5)
        assert len(sim.requests()) == requests_made
        sent(sim, 3)
        records = sim.webhooks()
    events = [r.json() for r in receiver.requests]
    assert [e["payload"]["status"] for e in events] == ["STOPPED", "STARTING", "WORKING"]
    for request, event in zip(receiver.requests, events, strict=True):
        assert request.path == "/hook"
        assert request.headers["Content-Type"] == "application/json"
        assert signed(request)
        assert request.headers["X-Webhook-Hmac-Algorithm"] == "sha512"
        assert request.headers["X-Webhook-Request-Id"]
        assert request.headers["X-Webhook-Timestamp"].isdigit()
        assert EVT.fullmatch(event["id"])
        assert isinstance(event["timestamp"], int)
        assert event["event"] == "session.status"
        assert event["session"] == "sess-0001"
        assert event["metadata"] == {}
        assert event["engine"] == "GOWS"
        assert event["environment"] == {"version": "2025.x-sim", "engine": "GOWS",
                                        "tier": "PLUS"}
        assert event["payload"]["statuses"][-1] == {"status": event["payload"]["status"],
                                                     "timestamp": event["timestamp"]}
    assert len({e["id"] for e in events}) == 3
    assert "me" not in events[0] and "me" not in events[1]
    assert events[2]["me"] == {"id": "15550000001@c.us", "pushName": "Session sess-0001"}
    assert [s["status"] for s in events[2]["payload"]["statuses"]] == [
        "WORKING", "STOPPED", "STARTING", "WORKING"]
    # The start completed at its time: the event says so, and it went out at once.
    assert events[2]["timestamp"] - events[1]["timestamp"] == pytest.approx(200, abs=2)
    last = records[-1]
    assert last.status == "WORKING" and last.http_status == 200 and last.attempt == 1
    assert last.sent_wall is not None
    assert last.sent_wall * 1000 - events[2]["timestamp"] < 100


def test_the_session_field_is_the_engine_name_and_statuses_keep_the_last_five(
    receiver: ScriptedReceiver,
) -> None:
    scenario = parse_scenario({
        "session_count": 0, "webhook_url": receiver.hook_url,
        "sessions": [{"id": "u-1", "name": "engine-one", "phone_number": "+44 20 7946"}],
    })
    with SimulatorServer(scenario=scenario, api_key=API_KEY) as server:
        sim = server.simulator
        for status in ("FAILED", "STOPPED", "ERROR", "STOPPED", "WORKING", "FAILED"):
            sim.set_status("u-1", status)
        wait_for(lambda: len(receiver.requests) == 6)
    last = receiver.events()[-1]
    assert last["session"] == "engine-one"
    assert [s["status"] for s in last["payload"]["statuses"]] == [
        "STOPPED", "ERROR", "STOPPED", "WORKING", "FAILED"]
    stamps = [s["timestamp"] for s in last["payload"]["statuses"]]
    assert stamps == sorted(stamps)
    working = receiver.events()[-2]
    assert working["me"] == {"id": "44207946@c.us", "pushName": "Session u-1"}
    assert "X-Webhook-Hmac" not in receiver.requests[0].headers  # no key: not signed


def test_a_sessions_events_arrive_in_order(receiver: ScriptedReceiver) -> None:
    statuses = ["FAILED", "STOPPED", "ERROR"] * 12
    with hooked(receiver, key=None) as server:
        for status in statuses:
            server.simulator.set_status("sess-0002", status)
        wait_for(lambda: len(receiver.requests) == len(statuses))
    assert [e["payload"]["status"] for e in receiver.events()] == statuses


def test_scheduled_and_random_failures_are_sent_at_their_time(
    receiver: ScriptedReceiver,
) -> None:
    with hooked(receiver, sessions=2,
                scheduled_failures=[{"at": 0.3, "session": "sess-0001", "status": "ERROR"}],
                random_failures={"rate": 1.0, "sessions": ["sess-0002"]}) as server:
        wait_for(lambda: len(receiver.requests) == 2, timeout=5)
        assert server.simulator.requests() == []
    by_session = {e["session"]: e for e in receiver.events()}
    assert by_session["sess-0001"]["payload"]["status"] == "ERROR"
    assert by_session["sess-0002"]["payload"]["status"] == "FAILED"


def test_no_event_without_a_status_change(receiver: ScriptedReceiver) -> None:
    with hooked(receiver) as server:
        sim = server.simulator
        assert httpx.patch(f"{server.base_url}/_simulator/sessions/sess-0001",
                           json={"zombie": True}).status_code == 200
        sim.start_outage(0.2)
        sim.set_status("sess-0002", "WORKING")  # already WORKING
        assert post(server, "/sessions/sess-0003/stop").status_code == 503  # the outage
        wait_for(lambda: not sim.outage_active())
        sim.set_status("sess-0003", "FAILED")  # a change, to know the rest has gone out
        wait_for(lambda: len(receiver.requests) >= 1)
        assert sim.webhook_stats()["events"] == 1
    assert [e["payload"]["status"] for e in receiver.events()] == ["FAILED"]


def test_without_a_webhook_url_changes_wait_for_a_read_as_before() -> None:
    with SimulatorServer(sessions=1, api_key=API_KEY) as server:
        sim = server.simulator
        sim.update_faults(start_delay=0.05)
        sim.set_status("sess-0001", "STOPPED")
        assert post(server, "/sessions/sess-0001/restart").status_code == 200
        stamp = sim.webhook_stats()
        assert sim.advance_due() is None  # the timer does nothing
        assert stamp["enabled"] is False and stamp["events"] == 0
        wait_for(lambda: sim.uptime() > 0.3)
        raw = sim._table.sessions["sess-0001"]  # its stored state: not yet advanced
        assert raw.status == "STARTING"
        assert sim.status("sess-0001") == "WORKING"  # the read applies it, as always


def test_the_timer_leaves_the_lazy_results_unchanged() -> None:
    """The same requests at the same times give the same statuses and updatedAt, whether
    the timer applies the changes at their time (webhooks on) or the reads do."""
    scenario = parse_scenario({
        "session_count": 4, "start_delay": 1.5, "seed": 9, "outcome": ["FAILED", "WORKING"],
        "scheduled_failures": [{"at": 2.0, "sessions": ["sess-0001", "sess-0003"]},
                               {"at": 4.5, "status": "STOPPED"}],
    })
    clocks = ManualClock(), ManualClock()
    lazy = Simulator(scenario, api_key=API_KEY, clock=clocks[0])
    timed = Simulator(scenario, api_key=API_KEY, clock=clocks[1],
                      webhook_url="http://127.0.0.1:9/hook")
    seen: list[list[Any]] = [[], []]
    for step in range(24):
        for i, (sim, clock) in enumerate(zip((lazy, timed), clocks, strict=True)):
            if i == 1:
                timed.advance_due()
            if step in (1, 7, 15):
                seen[i].append(sim.api_action("sess-0002", "restart"))
                seen[i].append(sim.api_action("sess-0001", "restart"))
            if step % 5 == 0:
                seen[i].append(sim.api_list("flat"))
            clock.advance(0.25)
            if i == 1:
                timed.advance_due()
    assert seen[0] == seen[1]
    assert lazy.api_list() == timed.api_list()
    assert timed.webhook_stats()["events"] > 5


# -- forms and signatures ---------------------------------------------------------------


def test_legacy_form_and_sha256(receiver: ScriptedReceiver) -> None:
    with hooked(receiver, webhook_legacy=True, webhook_hmac_algorithm="sha256") as server:
        server.simulator.set_status("sess-0002", "FAILED")
        wait_for(lambda: len(receiver.requests) == 1)
    request = receiver.requests[0]
    assert request.json() == {"event": "session.status", "session": "sess-0002",
                              "payload": {"name": "sess-0002", "status": "FAILED"}}
    assert request.headers["X-Webhook-Hmac-Algorithm"] == "sha256"
    assert signed(request, algorithm="sha256")


def test_ulid_is_crockford_base32_with_the_time_first() -> None:
    assert ulid(0, bytes(10)) == "0" * 26
    assert ulid(2**48 - 1, b"\xff" * 10) == "7" + "Z" * 25
    assert ulid(1, bytes(10)) < ulid(2, bytes(10))
    assert EVT.fullmatch("evt_" + ulid(1_700_000_000_000))


# -- retries ----------------------------------------------------------------------------


def test_a_failed_delivery_is_retried_with_the_same_event(receiver: ScriptedReceiver) -> None:
    receiver.script = [500, 200]
    with hooked(receiver, webhook_retries={"delay": 0.1}) as server:
        server.simulator.set_status("sess-0001", "FAILED")
        wait_for(lambda: len(receiver.requests) == 2)
        wait_for(lambda: server.simulator.webhook_stats()["delivered"] == 1)
        records = server.simulator.webhooks()
        stats = server.simulator.webhook_stats()
    first, second = receiver.requests
    assert first.body == second.body and signed(second)
    assert first.headers["X-Webhook-Request-Id"] != second.headers["X-Webhook-Request-Id"]
    assert [(r.attempt, r.http_status) for r in records] == [(1, 500), (2, 200)]
    assert records[0].id == records[1].id == first.json()["id"]
    assert records[1].sent_monotonic - records[0].sent_monotonic >= 0.1  # type: ignore[operator]
    assert (stats["sent"], stats["failed"], stats["delivered"]) == (2, 1, 1)


@pytest.mark.parametrize(("policy", "waits"), [("constant", [0.1, 0.1]),
                                               ("linear", [0.1, 0.2]),
                                               ("exponential", [0.1, 0.2])])
def test_retry_policies_and_giving_up(receiver: ScriptedReceiver, policy: str,
                                      waits: list[float]) -> None:
    receiver.status = 503
    retries = {"policy": policy, "delay": 0.1, "attempts": 3}
    with hooked(receiver, webhook_retries=retries) as server:
        sim = server.simulator
        sim.set_status("sess-0001", "FAILED")
        wait_for(lambda: sim.webhook_stats()["given_up"] == 1)
        records = sim.webhooks()
    assert [r.attempt for r in records] == [1, 2, 3]
    assert len(receiver.requests) == 3
    times = [r.sent_monotonic or 0.0 for r in records]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, wait in zip(gaps, waits, strict=True):
        assert gap >= wait
    assert WebhookRetries(policy="exponential", delay=2.0).wait(4) == 16.0
    assert WebhookRetries(policy="linear", delay=2.0).wait(4) == 8.0


def test_a_transport_error_is_retried_and_logged_by_name() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    scenario = parse_scenario({"session_count": 1, "webhook_url": url,
                               "webhook_retries": {"delay": 0.05, "attempts": 2}})
    with SimulatorServer(scenario=scenario, api_key=API_KEY) as server:
        server.simulator.set_status("sess-0001", "STOPPED")
        wait_for(lambda: server.simulator.webhook_stats()["given_up"] == 1)
        records = server.simulator.webhooks()
    assert [(r.attempt, r.http_status, r.error) for r in records] == [
        (1, None, "ConnectError"), (2, None, "ConnectError")]


# -- faults -----------------------------------------------------------------------------


def test_drop_never_sends(receiver: ScriptedReceiver) -> None:
    with hooked(receiver, webhook_faults={"drop": 1.0}) as server:
        sim = server.simulator
        sim.set_status("sess-0001", "FAILED")
        sim.update_faults(webhook_faults={"drop": 0.0})
        sim.set_status("sess-0002", "FAILED")
        wait_for(lambda: len(receiver.requests) == 1)
        sent(sim, 1)
        records = sim.webhooks()
        stats = sim.webhook_stats()
    assert receiver.events()[0]["session"] == "sess-0002"
    assert [(r.session, r.fault, r.attempt) for r in records] == [
        ("sess-0001", "drop", 0), ("sess-0002", None, 1)]
    assert stats["dropped"] == 1


def test_duplicate_sends_twice_with_the_same_id(receiver: ScriptedReceiver) -> None:
    with hooked(receiver, webhook_faults={"duplicate": 1.0}) as server:
        server.simulator.set_status("sess-0001", "FAILED")
        wait_for(lambda: len(receiver.requests) == 2)
        stats = server.simulator.webhook_stats()
    first, second = receiver.requests
    assert first.body == second.body
    assert all(signed(r) for r in receiver.requests)
    assert stats["duplicated"] == 1 and stats["events"] == 1


def test_delay_holds_an_event_back(receiver: ScriptedReceiver) -> None:
    with hooked(receiver, webhook_faults={"delay": {"rate": 1.0, "seconds": 0.3}}) as server:
        server.simulator.set_status("sess-0001", "FAILED")
        wait_for(lambda: len(receiver.requests) == 1)
        sent(server.simulator, 1)
        record = server.simulator.webhooks()[0]
    event = receiver.events()[0]
    assert record.fault == "delay"
    assert record.sent_wall is not None
    assert record.sent_wall * 1000 - event["timestamp"] >= 300


def test_reorder_swaps_with_the_next_event_of_the_session(receiver: ScriptedReceiver) -> None:
    with hooked(receiver, webhook_faults={"reorder": 1.0}) as server:
        sim = server.simulator
        sim.set_status("sess-0001", "FAILED")
        sim.update_faults(webhook_faults={"reorder": 0.0})
        sim.set_status("sess-0001", "STOPPED")
        wait_for(lambda: len(receiver.requests) == 2)
    assert [e["payload"]["status"] for e in receiver.events()] == ["STOPPED", "FAILED"]
    first, second = receiver.events()
    assert first["timestamp"] >= second["timestamp"]


def test_a_reordered_event_without_a_successor_goes_alone(receiver: ScriptedReceiver) -> None:
    with hooked(receiver, webhook_faults={"reorder": 1.0}) as server:
        server.simulator.set_status("sess-0001", "FAILED")
        wait_for(lambda: len(receiver.requests) == 1, timeout=5)
    assert receiver.events()[0]["payload"]["status"] == "FAILED"


def test_bad_signature_is_a_wrong_hmac(receiver: ScriptedReceiver) -> None:
    with hooked(receiver, webhook_faults={"bad_signature": 1.0}) as server:
        server.simulator.set_status("sess-0001", "FAILED")
        wait_for(lambda: len(receiver.requests) == 1)
        stats = server.simulator.webhook_stats()
    request = receiver.requests[0]
    assert len(request.headers["X-Webhook-Hmac"]) == 128
    assert not signed(request)
    assert stats["bad_signature"] == 1


def test_webhook_faults_are_seeded_like_the_others() -> None:
    def run() -> list[tuple[str, str | None]]:
        sim = Simulator(parse_scenario({
            "session_count": 40, "seed": 5, "webhook_url": "http://127.0.0.1:9/hook",
            "webhook_faults": {"drop": 0.3, "duplicate": 0.3, "bad_signature": 0.3}}),
            api_key=API_KEY, clock=ManualClock())
        for uid in sim.session_ids():
            sim.set_status(uid, "FAILED")
        hub = sim.webhook_hub
        queued = []
        while (item := hub.take()) is not None:
            queued.append((item.session, item.fault))
            hub.done(item)
        return queued + [(r.session, r.fault) for r in sim.webhooks()]

    first = run()
    assert first == run()
    assert {fault for _, fault in first} >= {None, "drop", "duplicate", "bad_signature"}


def test_the_queue_is_bounded_and_drops_the_oldest() -> None:
    sim = Simulator(parse_scenario({"session_count": 2, "webhook_url": "http://127.0.0.1:9/h"}),
                    api_key=API_KEY, clock=ManualClock())
    hub = sim.webhook_hub
    hub._queue_size = 3  # a small bound for the test
    assert sim.webhook_burst(5, ["sess-0001"]) == 5
    stats = sim.webhook_stats()
    assert (stats["queued"], stats["overflowed"]) == (3, 2)


# -- the burst --------------------------------------------------------------------------


def test_burst_sends_n_events_without_status_changes(receiver: ScriptedReceiver) -> None:
    with hooked(receiver, sessions=4) as server:
        sim = server.simulator
        answer = post(server, "/_simulator/webhooks/burst",
                      {"count": 200, "sessions": ["sess-0001", "sess-0002"]})
        assert answer.status_code == 202 and answer.json() == {"queued": 200}
        wait_for(lambda: len(receiver.requests) == 200, timeout=30)
        assert sim.statuses() == dict.fromkeys(sim.session_ids(), "WORKING")
        bad = post(server, "/_simulator/webhooks/burst",
                   {"count": 3, "status": "FAILED", "bad_signature": True})
        assert bad.json() == {"queued": 3}
        wait_for(lambda: len(receiver.requests) == 203)
        assert post(server, "/_simulator/webhooks/burst",
                    {"count": 1, "sessions": ["nope"]}).status_code == 404
        assert post(server, "/_simulator/webhooks/burst",
                    {"count": "many"}).status_code == 400
    events = receiver.events()
    assert len({e["id"] for e in events}) == 203
    assert {e["session"] for e in events[:200]} == {"sess-0001", "sess-0002"}
    assert all(signed(r) for r in receiver.requests[:200])
    assert not any(signed(r) for r in receiver.requests[200:])
    assert {e["payload"]["status"] for e in events[200:]} == {"FAILED"}


# -- settings and the admin API ---------------------------------------------------------


def test_settings_through_the_admin_api(receiver: ScriptedReceiver) -> None:
    with SimulatorServer(sessions=2, api_key=API_KEY) as server:
        base = f"{server.base_url}/_simulator/webhooks"
        answer = httpx.patch(base, json={"webhook_url": receiver.hook_url,
                                         "webhook_hmac_key": KEY,
                                         "webhook_retries": {"attempts": 4}})
        assert answer.status_code == 200
        settings = answer.json()
        assert settings == {"webhook_url": receiver.hook_url, "webhook_hmac_key_set": True,
                            "webhook_hmac_algorithm": "sha512", "webhook_legacy": False,
                            "webhook_retries": {"policy": "constant", "delay": 2.0,
                                                "attempts": 4}}
        assert KEY not in answer.text
        assert httpx.get(f"{base}/settings").json() == settings
        bad = httpx.patch(base, json={"webhook_retries": {"policy": "fibonacci"}})
        assert bad.status_code == 400 and "webhook_retries.policy" in bad.json()["error"]
        assert httpx.patch(base, json={"webhook_url": "ftp://x"}).status_code == 400
        assert "webhook_urll" in httpx.patch(base, json={"webhook_urll": "x"}).json()["error"]
        server.simulator.set_status("sess-0001", "FAILED")
        wait_for(lambda: len(receiver.requests) == 1)
        assert signed(receiver.requests[0])
        sent(server.simulator, 1)
        log = httpx.get(base).json()
        assert log["count"] == 1 and log["webhooks"][0]["http_status"] == 200
        assert set(log["webhooks"][0]) == {"seq", "id", "session", "status", "attempt",
                                           "sent_wall", "sent_monotonic", "http_status",
                                           "error", "fault", "duration"}
        stats = httpx.get(f"{server.base_url}/_simulator/stats").json()["webhooks"]
        assert stats["sent"] == 1 and stats["delivered"] == 1
        assert httpx.delete(base).json() == {"cleared": True}
        assert httpx.get(base).json() == {"webhooks": [], "count": 0}
        faults = httpx.patch(f"{server.base_url}/_simulator/faults",
                             json={"webhook_faults": {"duplicate": 0.5}}).json()
        assert faults["webhook_faults"]["duplicate"] == 0.5
        # Switched off: nothing more goes out; a reset goes back to the start (none).
        httpx.patch(base, json={"webhook_url": None})
        server.simulator.set_status("sess-0002", "FAILED")
        assert server.simulator.webhook_stats()["events"] == 0


def test_the_key_stays_out_of_reprs() -> None:
    settings = WebhookSettings(url="http://127.0.0.1:1/h", hmac_key=KEY)
    assert KEY not in repr(settings)
    assert KEY not in str(settings.to_dict())
    scenario = parse_scenario({"webhook_hmac_key": KEY})
    assert KEY not in repr(scenario)
    with_password = WebhookSettings(url="https://hook:pa55word@example.invalid/h")
    assert with_password.to_dict()["webhook_url"] == "https://hook:***@example.invalid/h"
    assert "pa55word" not in repr(with_password)


def test_scenario_keys_are_checked() -> None:
    scenario = parse_scenario({"webhook_url": "https://example.invalid/h",
                               "webhook_hmac_algorithm": "sha256", "webhook_legacy": True,
                               "webhook_retries": {"policy": "linear", "delay": 1,
                                                   "attempts": 3}})
    assert scenario.webhooks.url == "https://example.invalid/h"
    assert scenario.webhooks.retries == WebhookRetries("linear", 1.0, 3)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"webhook_url": 5}, "webhook_url"),
        ({"webhook_hmac_algorithm": "md5"}, "webhook_hmac_algorithm"),
        ({"webhook_hmac_key": ""}, "webhook_hmac_key"),
        ({"webhook_retries": {"attempts": 0}}, "webhook_retries.attempts"),
        ({"webhook_retries": {"tries": 2}}, "webhook_retries.tries"),
        ({"webhook_faults": {"drop": 2}}, "webhook_faults.drop"),
        ({"webhook_faults": {"delay": {"rate": -1}}}, "webhook_faults.delay.rate"),
    ]
    for bad, named in cases:
        with pytest.raises(ScenarioError, match=re.escape(named)):
            parse_scenario(bad)


def test_constructor_parameters_win_over_the_scenario(receiver: ScriptedReceiver) -> None:
    scenario = parse_scenario({"session_count": 1, "webhook_url": "http://127.0.0.1:9/x",
                               "webhook_hmac_key": "other"})
    with SimulatorServer(scenario=scenario, api_key=API_KEY, webhook_url=receiver.hook_url,
                         webhook_hmac_key=KEY) as server:
        server.simulator.set_status("sess-0001", "STOPPED")
        wait_for(lambda: len(receiver.requests) == 1)
        server.simulator.reset()  # back to the start: the same settings
        assert server.simulator.webhook_settings.url == receiver.hook_url
    assert signed(receiver.requests[0])


# -- the command line -------------------------------------------------------------------


@pytest.mark.parametrize("entry", [["-m", "supervisor", "simulate"],
                                   ["-m", "supervisor.simulator"]])
def test_help_shows_the_webhook_flags(entry: list[str]) -> None:
    done = subprocess.run([sys.executable, *entry, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=True,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)})
    text = " ".join(done.stdout.split())
    assert "--webhook-url URL" in text and "--webhook-hmac-key KEY" in text
    assert HMAC_KEY_ENV in text


def test_the_command_line_end_to_end(receiver: ScriptedReceiver) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), HMAC_KEY_ENV: KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.simulator", "--port", "0", "--api-key", API_KEY,
         "--sessions", "2", "--webhook-url", receiver.hook_url],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("WASEND_BASE_URL="), first
        base = first.split("=", 1)[1]
        assert httpx.post(f"{base}/sessions/sess-0002/stop", headers=AUTH,
                          timeout=10).status_code == 200
        wait_for(lambda: len(receiver.requests) == 1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert KEY not in err
    request = receiver.requests[0]
    assert request.json()["payload"]["status"] == "STOPPED"
    assert signed(request)


def test_a_bad_webhook_url_on_the_command_line_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.simulator", "--port", "0",
         "--webhook-url", "not-a-url"],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "webhook_url" in done.stderr and "Traceback" not in done.stderr
