"""What a webhook body says: WAHA's envelope, its older form, a flat form; other events
ignored; anything else malformed, in words of ours."""

from __future__ import annotations

import json

import pytest

from supervisor.webhooks.envelope import Hint, Ignored, Malformed, read


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


WAHA = {"id": "evt_01JABCDEFGHJKMNPQRSTVWXYZ0", "timestamp": 1764590400123,
        "event": "session.status", "session": "sess-0001", "metadata": {},
        "me": {"id": "15550100@c.us", "pushName": "Shop"},
        "payload": {"status": "FAILED", "statuses": [{"status": "WORKING", "timestamp": 1},
                                                     {"status": "FAILED", "timestamp": 2}]},
        "engine": "GOWS", "environment": {"version": "2025.1", "engine": "GOWS",
                                          "tier": "PLUS"}}


def test_wahas_envelope_names_the_session_its_status_id_and_time() -> None:
    assert read(body(WAHA)) == Hint("sess-0001", "FAILED", "evt_01JABCDEFGHJKMNPQRSTVWXYZ0",
                                    1764590400123)


def test_the_older_form_names_the_session_in_its_payload() -> None:
    old = {"event": "session.status", "payload": {"name": "default", "status": "STOPPED"}}
    assert read(body(old)) == Hint("default", "STOPPED")


@pytest.mark.parametrize("key", ["session", "sessionId", "session_id"])
def test_a_flat_form_is_read_too(key: str) -> None:
    assert read(body({key: "s1", "status": "WORKING"})) == Hint("s1", "WORKING")


@pytest.mark.parametrize("event", ["message", "message.any", "presence.update", "call"])
def test_other_events_are_ignored(event: str) -> None:
    assert read(body({"event": event, "session": "s1", "payload": {"body": "hi"}})) == (
        Ignored(event))


@pytest.mark.parametrize(("raw", "why"), [
    (b"", "not JSON"), (b"{", "not JSON"), (b"[1, 2]", "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (body({"event": "session.status", "payload": {"status": "FAILED"}}), "no session name"),
    (body({"event": "session.status", "session": "s1", "payload": {}}), "no status"),
    (body({"session": "s1", "status": 7}), "no status"),
    (body({"session": "x" * 201, "status": "FAILED"}), "no session name"),
    (body({"session": "a\nb", "status": "FAILED"}), "no session name"),
    (body({"event": ["session.status"], "session": "s1", "status": "F"}), "event is not"),
])
def test_anything_else_is_malformed_in_words_of_ours(raw: bytes, why: str) -> None:
    with pytest.raises(Malformed) as caught:
        read(raw)
    assert str(caught.value).startswith(why)
    assert "s1" not in str(caught.value)  # never the body
