"""Answers that cannot be read: malformed JSON, wrong types, missing fields, huge bodies,
HTML error pages, empty 200s. Served over real HTTP by a small garbage server (the
simulator only cuts JSON short), and the simulator's own malformed JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.api.client import EXCERPT_LIMIT
from supervisor.runtime.wiring import build
from tests.e2e.conftest import API_KEY, Running, SimFactory
from tests.fakes import MaxRandom
from tests.faults.conftest import GarbageServer, Reply, settings_at
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

HTML = {"Content-Type": "text/html"}
STOPPED = {"uniqueSessionId": "s", "status": "STOPPED"}
HUGE_ITEMS = 33 * 1024 * 1024 // len(json.dumps(STOPPED))  # a list over the 32 MiB cap


def huge_list() -> list[bytes]:
    """A valid list of STOPPED sessions, over 32 MiB, sent in chunks (no length given):
    were it read whole, every one of them would be restarted."""
    item = json.dumps(STOPPED).encode() + b","
    chunk = item * 4096
    chunks = [b'{"sessions": [']
    chunks += [chunk] * (HUGE_ITEMS // 4096 + 1)
    chunks.append(json.dumps(STOPPED).encode() + b"]}")
    return chunks


# A whole list answer that cannot be read: the poll fails, nothing is restarted.
UNREADABLE_LISTS: dict[str, Reply] = {
    "malformed_json": Reply(body=b'{"sessions": [{"uniqueSessionId": "s", "status": "STOP'),
    "wrong_type_sessions": Reply(body=b'{"sessions": "all of them, STOPPED"}'),
    "number": Reply(body=b"42"),
    "missing_sessions": Reply(body=b'{"data": null, "status": "STOPPED"}'),
    "html_200": Reply(body=b"<html><body><h1>Maintenance</h1>STOPPED</body></html>",
                      headers=HTML),
    "html_502": Reply(status=502, body=b"<html><head><title>502 Bad Gateway</title></head>"
                      b"<body>nginx</body></html>", headers=HTML),
    "empty_200": Reply(body=b""),
    "binary": Reply(body=bytes(range(256)) * 4, headers={"Content-Type": "image/png"}),
    "huge_chunked": Reply(body=huge_list()),
}

# A list whose items are garbage: the items are reported, the rest is supervised.
BAD_ITEMS = [
    {"uniqueSessionId": 17, "status": "STOPPED"},
    {"uniqueSessionId": "no-status"},
    {"uniqueSessionId": "list-status", "status": ["STOPPED"]},
    {"session": {"uniqueSessionId": "nested"}, "downstream": "STOPPED"},
    "STOPPED",
    None,
    {"uniqueSessionId": "ok", "status": "WORKING"},
    {"uniqueSessionId": "down", "status": "STOPPED"},
]


async def run_against(server: GarbageServer, lists: int, **overrides: Any) -> list[Any]:
    """Run the daemon until the server has answered ``lists`` list requests."""
    runtime = build(settings_at(server.base_url, **overrides), rng=MaxRandom())
    with capture_logs() as events:
        running = Running(runtime)
        await until(lambda: sum(s.method == "GET" for s in server.seen) >= lists, timeout=20)
        assert await running.stop() == 0
    return events


@pytest.mark.parametrize("case", sorted(UNREADABLE_LISTS))
async def test_an_unreadable_list_fails_the_poll_with_an_excerpt_and_restarts_nothing(
    garbage_server: Any, case: str,
) -> None:
    """Expectation: each poll ends in one ``poll.failed`` (``unexpected_response``, or
    ``server_error`` for the 502) with a short, single-line excerpt of what came back;
    no restart request is ever sent on the strength of it; the daemon keeps polling."""
    reply = UNREADABLE_LISTS[case]
    server = await garbage_server(lambda method, path: reply)
    events = await run_against(server, 3)
    failed = [e for e in events if e["event"] == "poll.failed"]
    assert len(failed) >= 3
    assert server.posts() == []
    assert not any(e["event"] in ("poll.crashed", "restart.requested") for e in events)
    if case == "html_502":
        assert {e["error"] for e in failed} == {"server_error"}
        assert "Bad Gateway" in failed[0]["detail"]
    else:
        assert {e["error"] for e in failed} == {"unexpected_response"}
        if case != "empty_200":
            excerpt = failed[0]["excerpt"]
            assert excerpt and len(excerpt) <= EXCERPT_LIMIT and "\n" not in excerpt
    if case == "huge_chunked":
        assert "over 33554432 bytes" in failed[0]["detail"]
    assert API_KEY not in repr(events)


async def test_unreadable_items_are_reported_and_the_readable_ones_supervised(
    garbage_server: Any,
) -> None:
    """Expectation: a list with some unreadable items is used: each bad item gives one
    ``poll.item_unreadable`` with an excerpt, the readable STOPPED session is restarted,
    and no request names any of the bad items."""
    body = json.dumps({"sessions": BAD_ITEMS}).encode()

    def answer(method: str, path: str) -> Reply:
        if method == "POST":
            return Reply(body=b'{"uniqueSessionId": "down", "status": "STARTING"}')
        return Reply(body=body)

    server = await garbage_server(answer)
    events = await run_against(server, 2)
    unreadable = [e for e in events if e["event"] == "poll.item_unreadable"]
    assert len(unreadable) >= 6
    assert all(len(e["problem"]) < 200 for e in unreadable)
    assert [s.path for s in server.posts()] == ["/sessions/down/restart"]


@pytest.mark.parametrize("reply", [
    Reply(body=b"<html>Bad Gateway</html>", headers=HTML),
    Reply(body=b'{"uniqueSessionId": "down", "status": 7}'),
    Reply(body=b'{"uniqueSessionId": "someone-else", "status": "STARTING"}'),
    Reply(status=500, body=b"upstream exploded"),
], ids=["html", "wrong_type", "other_session", "500"])
async def test_garbage_in_answer_to_a_restart_is_a_failed_attempt_with_backoff(
    garbage_server: Any, reply: Reply,
) -> None:
    """Expectation: an unreadable answer to a restart is one ``restart.failed`` (with
    an ``api.unexpected_response`` excerpt where the body was unreadable), backoff
    follows, and the daemon goes on; the restart is not retried before its backoff."""
    listing = Reply(body=json.dumps({"sessions": [{"uniqueSessionId": "down",
                                                   "status": "STOPPED"}]}).encode())
    server = await garbage_server(lambda method, path: reply if method == "POST" else listing)
    events = await run_against(server, 6, backoff={"initial": 60.0, "max": 60.0})
    failed = [e for e in events if e["event"] == "restart.failed"]
    assert len(failed) == 1 and len(server.posts()) == 1
    assert failed[0]["reason"] in ("unexpected_response", "server_error")
    if failed[0]["reason"] == "unexpected_response":
        [said] = [e for e in events if e["event"] == "api.unexpected_response"]
        assert said["call"] == "restart" and said["session_id"] == "down"
    assert not any(e["event"] == "poll.crashed" for e in events)


async def test_the_simulators_cut_json_is_never_acted_on(simulator: SimFactory) -> None:
    """Expectation: with half the answers cut short, the STOPPED session is restarted
    only on a readable list, restarts are verified on readable lists, and nothing
    crashes."""
    server = simulator({"sessions": [{"id": "a"}, {"id": "b", "status": "STOPPED"}],
                        "session_count": 0, "malformed_json": {"rate": 0.5}})
    runtime = build(settings_at(server.base_url), rng=MaxRandom())
    with capture_logs() as events:
        running = Running(runtime)
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events), timeout=20)
        await running.stop()
    log = server.simulator.requests()
    restarts = [r for r in log if r.kind == "restart"]
    lists = [r for r in log if r.kind == "list"]
    assert restarts and all(r.session == "b" for r in restarts)
    # The restart followed a list answered in full (not one cut short).
    before = [r for r in lists if r.seq < restarts[0].seq]
    assert before[-1].fault is None
    assert not any(e["event"] == "poll.crashed" for e in events)
