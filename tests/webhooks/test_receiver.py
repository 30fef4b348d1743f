"""The endpoint's answers: 202 queued, 200 ignored or a replay, 400 malformed, 401 not
believed, 403 a peer not allowed, 503 full; refusals counted and logged at most once per
reason per interval, never with the key."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.domain import events as ev
from supervisor.webhooks.nudges import Nudges
from supervisor.webhooks.receiver import Receiver
from supervisor.webhooks.signature import Checker
from tests.fakes import FakeClock
from tests.waiting import until

KEY = "whk-9f8e7d6c5b4a3928-secret"
NOW = 1_764_590_400.0


async def _read(session: str) -> str | None:
    return None


def event(session: str = "s1", status: str = "FAILED", evt: str = "evt_1") -> bytes:
    return json.dumps({"id": evt, "timestamp": int(NOW * 1000), "event": "session.status",
                       "session": session, "payload": {"status": status}}).encode()


def headers(body: bytes, key: str = KEY) -> dict[str, str]:
    return {"x-webhook-hmac": hmac.new(key.encode(), body, hashlib.sha512).hexdigest(),
            "x-webhook-hmac-algorithm": "sha512", "x-webhook-timestamp": str(int(NOW * 1000)),
            "x-webhook-request-id": "req-1"}


def receiver(clock: FakeClock | None = None, **nudging: int) -> Receiver:
    clock = clock or FakeClock(NOW)
    return Receiver(Checker(SecretStr(KEY), clock), Nudges(_read, clock, **nudging), clock)


def test_a_signed_status_event_is_queued() -> None:
    got = receiver()
    body = event()
    assert got.handle(headers(body), body, "203.0.113.9") == (202, b"queued\n")
    assert got.nudges.waiting == 1 and got.counts["accepted"] == 1


def test_a_replay_is_acknowledged_and_not_queued_again() -> None:
    got = receiver()
    body = event()
    got.handle(headers(body), body, "203.0.113.9")
    status, _ = got.handle(headers(body), body, "203.0.113.9")
    assert status == 200 and got.counts["duplicate"] == 1 and got.nudges.offered == 1


def test_other_events_are_acknowledged_and_ignored() -> None:
    got = receiver()
    body = json.dumps({"event": "message", "session": "s1", "payload": {}}).encode()
    assert got.handle(headers(body), body, "203.0.113.9")[0] == 200
    assert got.counts["ignored"] == 1 and got.nudges.waiting == 0


def test_refusals_answer_as_they_should() -> None:
    got = receiver()
    body = event()
    assert got.handle(headers(body, "whk-wrong-key-0000000000"), body, "p")[0] == 401
    assert got.handle({}, body, "p")[0] == 401
    bad = b"not json"
    assert got.handle(headers(bad), bad, "p")[0] == 400
    assert got.counts["signature"] == 2 and got.counts["malformed"] == 1
    assert got.nudges.waiting == 0


async def test_a_full_queue_answers_503_and_the_event_may_come_again() -> None:
    got = receiver(queue_max=1)
    first, second = event("a", evt="evt_a"), event("b", evt="evt_b")
    assert got.handle(headers(first), first, "p")[0] == 202
    assert got.handle(headers(second), second, "p")[0] == 503
    stop = asyncio.Event()
    task = asyncio.create_task(got.nudges.run(stop))  # the first is read meanwhile
    await until(lambda: got.nudges.reads == 1 and not got.nudges.waiting)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert got.handle(headers(second), second, "p")[0] == 202  # its retry is no duplicate


def test_a_flood_of_forgeries_is_one_line_per_interval_with_its_count() -> None:
    clock = FakeClock(NOW)
    got = receiver(clock)
    with capture_logs() as logs:
        for _ in range(1000):
            got.handle({"x-webhook-hmac": "00"}, event(), "203.0.113.9")
        clock.advance(10.0)
        got.handle({"x-webhook-hmac": "00"}, event(), "203.0.113.9")
    lines = [e for e in logs if e["event"] == ev.WEBHOOK_REJECTED]
    assert [(e["reason"], e["count"]) for e in lines] == [("signature", 1), ("signature", 1000)]
    assert got.counts["signature"] == 1001
    assert all(KEY not in repr(e) for e in logs)


def test_unsigned_events_from_a_peer_not_allowed_are_403() -> None:
    clock = FakeClock(NOW)
    got = Receiver(Checker(None, clock), Nudges(_read, clock), clock)
    body = json.dumps({"session": "s1", "status": "FAILED"}).encode()
    assert got.handle({}, body, "203.0.113.9")[0] == 403
    assert got.handle({}, body, "127.0.0.1")[0] == 202
