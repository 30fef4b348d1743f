"""Property-based tests (hypothesis): whatever the API answers, only the typed API errors
come out of the client, and whatever sequence of sightings and outcomes the cycle meets,
the supervision records stay sound."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import defaultdict
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.api.client import EXCERPT_LIMIT, WasendClient
from supervisor.api.errors import (
    ApiError,
    ApiTimeout,
    ApiUnreachable,
    AuthFailed,
    Conflict,
    RateLimited,
    ServerError,
    SessionGone,
    UnexpectedResponse,
)
from supervisor.domain.models import Phase, SessionInfo, SessionList, StatusClass
from supervisor.domain.policy import Backoff, Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.state.schema import decode, encode
from supervisor.state.sqlite import SqliteStore
from tests.e2e.conftest import API_KEY
from tests.fakes import FakeApi, FakeClock

pytestmark = pytest.mark.faults

STATUSES = ["WORKING", "CONNECTED", "STARTING", "CREATED", "STOPPED", "ERROR", "FAILED",
            "SCAN_QR_CODE", "working", "stopped"]
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from([*STATUSES, API_KEY]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
ids = st.one_of(st.sampled_from(["s1", "s2", ""]), st.text(max_size=6), st.integers(), st.none())
session_items = st.fixed_dictionaries(
    {"uniqueSessionId": ids,
     "status": st.one_of(st.sampled_from([*STATUSES, API_KEY]), st.text(max_size=6),
                         st.integers(), st.none())},
    optional={"sessionName": json_values, "name": json_values,
              "session": st.dictionaries(st.sampled_from(["uniqueSessionId", "status"]), ids),
              "downstream": st.dictionaries(st.just("status"), json_values)},
)
bodies = st.one_of(
    json_values.map(json.dumps),
    st.lists(session_items, max_size=5).map(lambda xs: json.dumps({"sessions": xs})),
    st.lists(session_items, max_size=5).map(json.dumps),
    session_items.map(json.dumps),
    st.just(""), st.just("   "),
    st.text(max_size=200),
    st.just(f'<html><body>key {API_KEY} rejected</body></html>'),
    st.just(json.dumps({"sessions": [{"uniqueSessionId": "s1", "status": "STOPPED"}] * 300})),
).map(str.encode)
raw_bodies = st.one_of(bodies, st.binary(max_size=300))
http_statuses = st.sampled_from(
    [200, 201, 202, 204, 301, 302, 400, 401, 403, 404, 409, 418, 422, 429, 500, 502, 503, 504,
     599])
retry_afters = st.one_of(
    st.none(), st.text(PRINTABLE, max_size=30),
    st.integers(-10, 10**13).map(str),
    st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "1.5",
                     "inf", "nan", "1e3", API_KEY]),
)
calls = st.sampled_from(["list", "get", "restart", "stop"])


def check_error(exc: ApiError, status: int) -> None:
    assert API_KEY not in str(exc) and API_KEY not in repr(exc)
    if isinstance(exc, UnexpectedResponse):
        assert len(exc.excerpt) <= EXCERPT_LIMIT and API_KEY not in exc.excerpt
    if isinstance(exc, RateLimited):
        assert exc.retry_after is None or (
            math.isfinite(exc.retry_after) and exc.retry_after >= 0)
    assert 200 <= (exc.http_status or 200) < 300 or status == exc.http_status


ENDPOINTS = {"list": ("GET", "/sessions"), "get": ("GET", "/sessions/s1"),
             "restart": ("POST", "/sessions/s1/restart"), "stop": ("POST", "/sessions/s1/stop")}


async def one_call(call: str, status: int, body: bytes, retry_after: str | None) -> object:
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    with respx.mock(base_url="https://api.wasend.test") as api:
        api.request(*ENDPOINTS[call], name=call).mock(
            return_value=httpx.Response(status, headers=headers, content=body))
        client = WasendClient("https://api.wasend.test", SecretStr(API_KEY), timeout=1.0,
                              clock=FakeClock(), max_body_bytes=4096)
        try:
            if call == "list":
                return await client.list_sessions()
            method = {"get": client.get_session, "restart": client.restart, "stop": client.stop}
            return await method[call]("s1")
        finally:
            await client.aclose()


@given(call=calls, status=http_statuses, body=raw_bodies, retry_after=retry_afters)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_client_turns_any_answer_into_a_result_or_a_typed_error(
    call: str, status: int, body: bytes, retry_after: str | None,
) -> None:
    """Expectation: any status, body and ``Retry-After`` gives either a well-formed
    result (every session with a string id and a non-empty string status) or one of the
    typed ``ApiError``s, whose text and excerpt never hold the API key; a 429's delay is
    None or a finite number >= 0."""
    try:
        result = asyncio.run(one_call(call, status, body, retry_after))
    except ApiError as exc:
        check_error(exc, status)
        return
    assert 200 <= status < 300
    if call == "list":
        assert isinstance(result, SessionList)
        for info in result.sessions:
            assert isinstance(info.session_id, str) and info.session_id
            assert isinstance(info.status, str) and info.status
        assert len({i.session_id for i in result.sessions}) == len(result.sessions)
        assert all(API_KEY not in problem for problem in result.problems)
    else:
        assert isinstance(result, SessionInfo) and result.session_id == "s1"
        assert isinstance(result.status, str)
        assert result.status or call in ("restart", "stop")


# ------------------------------------------------------------------- the cycle

POLICY = Policy(backoff=Backoff(initial=5, max=40, multiplier=2), max_restarts=3,
                restart_window=300, stable_after=30, starting_timeout=20,
                gave_up_retry_interval=120)
SESSIONS = ("a", "b", "c")
ERRORS: dict[str, Callable[[], ApiError]] = {
    "conflict": lambda: Conflict("x", call="restart", http_status=409),
    "gone": lambda: SessionGone("x", call="restart", http_status=404),
    "rate_limited": lambda: RateLimited("x", call="restart", retry_after=1.0),
    "auth": lambda: AuthFailed("x", call="restart", http_status=401),
    "server": lambda: ServerError("x", call="restart", http_status=503),
    "timeout": lambda: ApiTimeout("x", call="restart"),
    "garbage": lambda: UnexpectedResponse("x", call="restart", http_status=200, excerpt="<"),
}
sightings = st.dictionaries(
    st.sampled_from(SESSIONS),
    st.one_of(st.sampled_from(STATUSES), st.sampled_from(["???", "BANNED", "paused"])),
)
cycles = st.lists(
    st.fixed_dictionaries({
        "statuses": sightings,
        "list_fails": st.booleans(),
        "restart_errors": st.lists(st.sampled_from(sorted(ERRORS)), max_size=3),
        "after_restart": st.sampled_from(["STARTING", "WORKING", "FAILED", "", "???"]),
        "advance": st.sampled_from([0.0, 1.0, 5.0, 19.0, 21.0, 45.0, 130.0, 400.0]),
    }),
    min_size=1, max_size=12,
)
OUTCOMES = {"restart.succeeded", "restart.failed", "restart.conflict", "restart.deferred"}


def check_alternation(events: list[MutableMapping[str, Any]]) -> None:
    """At most one restart in flight per session: after ``restart.requested``, the next
    one for the same session comes only after that attempt's outcome event."""
    in_flight: dict[str, bool] = defaultdict(bool)
    for logged in events:
        sid = str(logged.get("session_id"))
        if logged["event"] == "restart.requested":
            assert not in_flight[sid], f"two restarts in flight for {sid}"
            in_flight[sid] = True
        elif logged["event"] in OUTCOMES:
            in_flight[sid] = False


@given(script=cycles)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_sequence_of_sightings_and_outcomes_breaks_a_record(script: list[dict[str, Any]],
                                                               ) -> None:
    """Expectation: for any sequence of listed statuses (garbage ones included), failed
    lists, restart answers and errors, and times between polls: the cycle never raises;
    attempt counts are never negative; after a successful poll, no waiting session has
    its next attempt in the past (it was due, so it was acted on); at most one restart is
    in flight per session; a session listed with an unknown status is never restarted in
    that cycle; every record survives the state file's encoding unchanged."""
    asyncio.run(run_script(script))


async def run_script(script: list[dict[str, Any]]) -> None:
    clock = FakeClock()
    api = FakeApi()
    store = SqliteStore.open(":memory:", clock=clock)
    sup = Supervisor(api, store, POLICY, clock, random.Random(7), auth_retry_interval=60)
    with capture_logs() as events:
        for step in script:
            api.statuses = dict(step["statuses"])
            api.after_restart = step["after_restart"]
            api.errors = {"restart": [ERRORS[name]() for name in step["restart_errors"]]}
            if step["list_fails"]:
                api.errors["list"] = [ApiUnreachable("refused", call="list")]
            api.calls.clear()
            result = await sup.poll()
            event(f"restarts: {min(sum(c == 'restart' for c, _ in api.calls), 2)}")
            now = clock.now()
            for record in store.records():
                assert record.attempt >= 0
                assert decode(record.session_id, encode(record)) == record
                if result.ok and record.phase in (Phase.UNHEALTHY, Phase.GAVE_UP):
                    assert record.next_attempt_at is None or record.next_attempt_at >= now, (
                        record, now)
            if result.ok:
                restarted = {sid for call, sid in api.calls if call == "restart"}
                reread = {sid for call, sid in api.calls if call == "get"}
                for sid in restarted - reread:
                    klass = POLICY.classes.classify(step["statuses"][sid])
                    assert klass in (StatusClass.RESTARTABLE, StatusClass.TRANSITIONAL), (
                        sid, step["statuses"][sid])
            clock.advance(step["advance"])
    check_alternation(events)
    assert API_KEY not in repr(events)
