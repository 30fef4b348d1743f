"""``WasendClient`` against respx routes, one per endpoint: no sockets, no sleeping.

The client is built as the daemon builds it (no transport handed in); respx patches the
transport underneath, so every request goes through the client's real httpx stack and
is recorded on its route (``route.calls``): method, path, headers and timeouts are
asserted from what went out, never from the client's attributes. Transport failures are
side effects (``side_effect=httpx.ConnectError(...)``).
"""

from __future__ import annotations

import email.utils
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
import structlog
from pydantic import SecretStr

import supervisor
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
from supervisor.api.ratelimit import RateGate
from supervisor.domain.models import SessionInfo, SessionList
from tests.fakes import FakeClock
from tests.faults.hostile import bomb

KEY = "sk-TEST-SECRET-KEY-123"
BASE = "https://api.wasend.test"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


# --- helpers -------------------------------------------------------------------------


class RecordingGate(RateGate):
    """A real gate that also writes down, in order, what the client told it."""

    def __init__(self, clock: FakeClock, journal: list[str]) -> None:
        super().__init__(clock, rate_limit=None, max_retry_after=600.0)
        self.journal = journal
        self.told: list[tuple[str, float | None, str]] = []

    async def acquire(self, *, spare: bool = False, fenced: bool = True) -> None:
        self.journal.append("acquire")
        await super().acquire(spare=spare, fenced=fenced)

    async def rate_limited(self, retry_after: float | None, *, call: str = "") -> float:
        self.journal.append("rate_limited")
        self.told.append(("rate_limited", retry_after, call))
        return await super().rate_limited(retry_after, call=call)

    def succeeded(self) -> None:
        self.journal.append("succeeded")
        super().succeeded()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client reads HTTPS_PROXY/ALL_PROXY for an https:// base URL; none here."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """Routes under ``BASE``. A request no route matches fails the test, and so does a
    route that was set up and never called."""
    with respx.mock(base_url=BASE, assert_all_called=True, assert_all_mocked=True) as router:
        yield router


def make_client(
    *,
    key: str = KEY,
    gate: RateGate | None = None,
    clock: FakeClock | None = None,
    base_url: str = BASE,
    **kwargs: Any,
) -> WasendClient:
    return WasendClient(
        base_url, SecretStr(key), timeout=7.5, gate=gate, clock=clock or FakeClock(), **kwargs
    )


def flat(sid: str, status: str = "WORKING", name: str | None = "Shop") -> dict[str, Any]:
    item: dict[str, Any] = {"uniqueSessionId": sid, "status": status}
    if name is not None:
        item["sessionName"] = name
    return item


def nested(sid: str, status: str = "WORKING", name: str = "Shop") -> dict[str, Any]:
    return {
        "session": {"id": 1, "uniqueSessionId": sid, "sessionName": name, "userId": "u1"},
        "downstream": {"name": sid, "status": status, "config": {}, "engine": {}},
    }


CALLS: list[tuple[str, str, str]] = [
    ("list", "GET", "/sessions"),
    ("get", "GET", "/sessions/s1"),
    ("restart", "POST", "/sessions/s1/restart"),
    ("stop", "POST", "/sessions/s1/stop"),
]
ENDPOINTS = {call: (method, path) for call, method, path in CALLS}
ALL_CALLS = [call for call, _, _ in CALLS]


def endpoint(router: respx.MockRouter, call: str) -> respx.Route:
    """The route of one call's endpoint (session "s1")."""
    method, path = ENDPOINTS[call]
    return router.request(method, path, name=call)


async def invoke(client: WasendClient, call: str) -> SessionInfo | SessionList:
    if call == "list":
        return await client.list_sessions()
    if call == "get":
        return await client.get_session("s1")
    if call == "restart":
        return await client.restart("s1")
    return await client.stop("s1")


def good_answer(call: str) -> httpx.Response:
    if call == "list":
        return httpx.Response(200, json={"sessions": [nested("s1")]})
    return httpx.Response(200, json=flat("s1"))


def sent(route: respx.Route) -> httpx.Request:
    """The one request that reached ``route``."""
    assert route.call_count == 1
    return route.calls.last.request


def assert_secret_free(exc: BaseException) -> None:
    assert KEY not in str(exc)
    assert KEY not in repr(exc)
    assert KEY not in getattr(exc, "excerpt", "")
    assert exc.__cause__ is None
    assert exc.__context__ is None  # nothing chained that could hold the request headers


def body_of(content: Callable[[], AsyncIterator[bytes]] | bytes, **kwargs: Any) -> httpx.Response:
    if isinstance(content, bytes):
        return httpx.Response(200, content=content, **kwargs)
    return httpx.Response(200, content=content(), **kwargs)


# --- requests: what goes out ---------------------------------------------------------


@pytest.mark.parametrize(("call", "method", "path"), CALLS)
async def test_every_call_sends_key_accept_user_agent_to_its_path(
    api: respx.MockRouter, call: str, method: str, path: str
) -> None:
    route = api.route().mock(return_value=good_answer(call))  # any request: check where
    async with make_client() as client:
        await invoke(client, call)
    request = sent(route)
    assert request.method == method
    assert request.url.path == path
    assert request.url.host == "api.wasend.test"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"wasend-supervisor/{supervisor.__version__}"


@pytest.mark.parametrize("call", ALL_CALLS)
async def test_timeout_applies_to_connect_read_write_and_pool(
    api: respx.MockRouter, call: str
) -> None:
    route = endpoint(api, call).mock(return_value=good_answer(call))
    async with make_client() as client:
        await invoke(client, call)
    assert sent(route).extensions["timeout"] == {
        "connect": 7.5,
        "read": 7.5,
        "write": 7.5,
        "pool": 7.5,
    }


async def test_set_api_key_changes_the_header_from_the_next_call_on(
    api: respx.MockRouter,
) -> None:
    route = endpoint(api, "get").mock(return_value=httpx.Response(200, json=flat("s1")))
    async with make_client() as client:
        await client.get_session("s1")
        client.set_api_key(SecretStr("sk-NEW-KEY-456"))
        await client.get_session("s1")
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        f"Bearer {KEY}",
        "Bearer sk-NEW-KEY-456",
    ]


async def test_session_ids_are_path_quoted(api: respx.MockRouter) -> None:
    route = api.get().mock(return_value=httpx.Response(200, json=flat("a/b c?d#e")))
    async with make_client() as client:
        await client.get_session("a/b c?d#e")
    assert sent(route).url.raw_path == b"/sessions/a%2Fb%20c%3Fd%23e"


@pytest.mark.parametrize(("sid", "raw"), [("..", b"%2E%2E"), (".", b"%2E")])
async def test_dot_segment_ids_are_not_resolved_away(
    api: respx.MockRouter, sid: str, raw: bytes
) -> None:
    route = api.post().mock(return_value=httpx.Response(200, json=flat(sid)))
    async with make_client() as client:
        await client.restart(sid)
    assert sent(route).url.raw_path == b"/sessions/" + raw + b"/restart"


async def test_empty_session_id_is_refused_before_any_request() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        route = router.route().mock(return_value=httpx.Response(200, json=flat("s1")))
        async with make_client() as client:
            with pytest.raises(ValueError, match="session_id"):
                await client.restart("")
    assert not route.called
    assert router.calls.call_count == 0


async def test_base_url_path_prefix_is_kept() -> None:
    with respx.mock(base_url="https://api.wasend.test/v1") as router:
        route = router.get("/sessions").mock(
            return_value=httpx.Response(200, json={"sessions": []})
        )
        async with make_client(base_url="https://api.wasend.test/v1") as client:
            await client.list_sessions()
    assert sent(route).url.path == "/v1/sessions"


async def test_posts_carry_no_body(api: respx.MockRouter) -> None:
    route = endpoint(api, "restart").mock(return_value=httpx.Response(200, json=flat("s1")))
    async with make_client() as client:
        await client.restart("s1")
    assert sent(route).content == b""


async def test_gzip_and_deflate_are_asked_for_and_nothing_else(api: respx.MockRouter) -> None:
    route = endpoint(api, "list").mock(return_value=good_answer("list"))
    async with make_client() as client:
        await client.list_sessions()
    assert sent(route).headers["Accept-Encoding"] == "gzip, deflate"


# --- status codes: the exception tree ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, AuthFailed),
        (403, AuthFailed),
        (404, SessionGone),
        (409, Conflict),
        (422, Conflict),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (400, UnexpectedResponse),
        (405, UnexpectedResponse),
        (304, UnexpectedResponse),
    ],
)
@pytest.mark.parametrize("call", ALL_CALLS)
async def test_status_codes_map_to_the_exception_tree(
    api: respx.MockRouter, call: str, status: int, expected: type[ApiError]
) -> None:
    endpoint(api, call).mock(return_value=httpx.Response(status, json={"message": "nope"}))
    async with make_client() as client:
        with pytest.raises(ApiError) as caught:
            await invoke(client, call)
    assert type(caught.value) is expected
    assert caught.value.call == call
    assert caught.value.http_status == status


@pytest.mark.parametrize("status", [200, 201, 202])
async def test_every_2xx_is_success(api: respx.MockRouter, status: int) -> None:
    endpoint(api, "restart").mock(return_value=httpx.Response(status, json=flat("s1", "STARTING")))
    async with make_client() as client:
        info = await client.restart("s1")
    assert info == SessionInfo("s1", "Shop", "STARTING")


async def test_error_body_excerpt_goes_into_the_message_redacted(api: respx.MockRouter) -> None:
    body = {"message": "Session is already running", "echo": f"Bearer {KEY}"}
    endpoint(api, "restart").mock(return_value=httpx.Response(409, json=body))
    async with make_client() as client:
        with pytest.raises(Conflict) as caught:
            await client.restart("s1")
    assert "already running" in str(caught.value)
    assert_secret_free(caught.value)


async def test_4xx_body_that_fails_mid_read_still_maps_by_status(api: respx.MockRouter) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b'{"message": "ru'
        raise httpx.ReadError("connection reset")

    endpoint(api, "restart").mock(return_value=httpx.Response(409, content=broken()))
    async with make_client() as client:
        with pytest.raises(Conflict):
            await client.restart("s1")


# --- 429 and the rate gate -----------------------------------------------------------


async def test_429_with_delay_seconds_is_rate_limited_and_pauses_the_gate(
    api: respx.MockRouter,
) -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=600.0)
    endpoint(api, "restart").mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))
    async with make_client(gate=gate, clock=clock) as c:
        with pytest.raises(RateLimited) as caught:
            await c.restart("s1")
    assert caught.value.retry_after == 7.0
    assert caught.value.http_status == 429
    assert gate.paused_until == clock.mono + 7.0
    assert gate.rate_limited_total == 1


async def test_429_with_http_date_is_seconds_from_the_clocks_wall_time(
    api: respx.MockRouter,
) -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=600.0)
    when = email.utils.formatdate(clock.wall + 90, usegmt=True)
    endpoint(api, "list").mock(return_value=httpx.Response(429, headers={"Retry-After": when}))
    async with make_client(gate=gate, clock=clock) as c:
        with pytest.raises(RateLimited) as caught:
            await c.list_sessions()
    assert caught.value.retry_after == 90.0
    assert gate.paused_until == clock.mono + 90.0


@pytest.mark.parametrize("header", [None, "soon", "-5", ""])
async def test_429_without_a_usable_retry_after_lets_the_gate_fall_back(
    api: respx.MockRouter, header: str | None
) -> None:
    clock = FakeClock()
    journal: list[str] = []
    gate = RecordingGate(clock, journal)
    headers = {} if header is None else {"Retry-After": header}
    endpoint(api, "stop").mock(return_value=httpx.Response(429, headers=headers))
    async with make_client(gate=gate, clock=clock) as c:
        with pytest.raises(RateLimited) as caught:
            await c.stop("s1")
    assert caught.value.retry_after is None
    assert gate.told == [("rate_limited", None, "stop")]
    assert gate.paused_until == clock.mono + 1.0  # the gate's own first fallback step


def journalled(
    journal: list[str], *replies: httpx.Response | Exception
) -> Callable[[httpx.Request], httpx.Response]:
    """A side effect that writes each request into ``journal``, then gives the next reply."""
    pending = iter(replies)

    def effect(request: httpx.Request) -> httpx.Response:
        journal.append(f"send {request.method} {request.url.path}")
        reply = next(pending)
        if isinstance(reply, Exception):
            raise reply
        return reply

    return effect


async def test_the_gate_is_awaited_before_each_request_and_told_each_outcome(
    api: respx.MockRouter,
) -> None:
    clock = FakeClock()
    journal: list[str] = []
    gate = RecordingGate(clock, journal)
    endpoint(api, "list").mock(
        side_effect=journalled(journal, httpx.Response(200, json={"sessions": []}))
    )
    restart = endpoint(api, "restart").mock(
        side_effect=journalled(
            journal,
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(500),
            httpx.Response(201, json=flat("s1", "STARTING")),
        )
    )
    async with make_client(gate=gate, clock=clock) as client:
        await client.list_sessions()
        with pytest.raises(RateLimited):
            await client.restart("s1")
        with pytest.raises(ServerError):
            await client.restart("s1")
        await client.restart("s1")
    assert journal == [
        "acquire",
        "send GET /sessions",
        "succeeded",
        "acquire",
        "send POST /sessions/s1/restart",
        "rate_limited",
        "acquire",
        "send POST /sessions/s1/restart",
        "succeeded",
        "acquire",
        "send POST /sessions/s1/restart",
        "succeeded",
    ]
    assert gate.told == [("rate_limited", 3.0, "restart")]
    assert restart.call_count == 3


async def test_after_a_429_the_next_request_leaves_only_when_the_pause_is_over(
    api: respx.MockRouter,
) -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=600.0)
    sent_at: list[float] = []
    replies = iter(
        [httpx.Response(429, headers={"Retry-After": "30"}), httpx.Response(200, json=flat("s1"))]
    )

    def effect(request: httpx.Request) -> httpx.Response:
        sent_at.append(clock.mono)
        return next(replies)

    endpoint(api, "get").mock(side_effect=effect)
    async with make_client(gate=gate, clock=clock) as client:
        with pytest.raises(RateLimited):
            await client.get_session("s1")
        await client.get_session("s1")
    assert clock.sleeps == [30.0]
    assert sent_at[1] - sent_at[0] == 30.0


async def test_a_transport_failure_tells_the_gate_nothing(api: respx.MockRouter) -> None:
    clock = FakeClock()
    journal: list[str] = []
    gate = RecordingGate(clock, journal)
    endpoint(api, "get").mock(side_effect=journalled(journal, httpx.ConnectError("refused")))
    async with make_client(gate=gate, clock=clock) as client:
        with pytest.raises(ApiUnreachable):
            await client.get_session("s1")
    assert journal == ["acquire", "send GET /sessions/s1"]


# --- redirects -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_not_followed_and_the_key_stays_home(
    api: respx.MockRouter, status: int
) -> None:
    endpoint(api, "restart").mock(
        return_value=httpx.Response(status, headers={"Location": "https://evil.example/steal"})
    )
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.restart("s1")
    assert caught.value.http_status == status
    assert "redirect" in str(caught.value)
    # every request the router saw, matched or not: one, to the API's host
    assert [c.request.url.host for c in api.calls] == ["api.wasend.test"]


# --- transport errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc_type", "expected"),
    [
        (httpx.ConnectError, ApiUnreachable),
        (httpx.ReadError, ApiUnreachable),
        (httpx.WriteError, ApiUnreachable),
        (httpx.RemoteProtocolError, ApiUnreachable),
        (httpx.ProxyError, ApiUnreachable),
        (httpx.ReadTimeout, ApiTimeout),
        (httpx.ConnectTimeout, ApiTimeout),
        (httpx.WriteTimeout, ApiTimeout),
        (httpx.PoolTimeout, ApiTimeout),
    ],
)
async def test_transport_errors_map_to_the_exception_tree(
    api: respx.MockRouter, exc_type: type[httpx.RequestError], expected: type[ApiError]
) -> None:
    route = endpoint(api, "restart").mock(side_effect=exc_type(f"failed; sent Bearer {KEY}"))
    async with make_client() as client:
        with pytest.raises(ApiError) as caught:
            await client.restart("s1")
    assert type(caught.value) is expected
    assert caught.value.call == "restart"
    assert caught.value.http_status is None
    assert exc_type.__name__ in str(caught.value)
    assert_secret_free(caught.value)
    assert sent(route).headers["Authorization"] == f"Bearer {KEY}"  # it did go out


@pytest.mark.parametrize(("exc_type", "expected"), [
    (httpx.ConnectError, ApiUnreachable), (httpx.ReadTimeout, ApiTimeout),
])
async def test_a_transport_error_class_as_side_effect_is_mapped_too(
    api: respx.MockRouter, exc_type: type[httpx.RequestError], expected: type[ApiError]
) -> None:
    """respx builds the exception itself, with the request attached."""
    endpoint(api, "list").mock(side_effect=exc_type)
    async with make_client() as client:
        with pytest.raises(ApiError) as caught:
            await client.list_sessions()
    assert type(caught.value) is expected
    assert f"at {BASE}/sessions" in str(caught.value)
    assert_secret_free(caught.value)


async def test_a_2xx_body_that_breaks_mid_read_is_a_transport_error(
    api: respx.MockRouter,
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b'{"sessions": ['
        raise httpx.ReadTimeout("read timed out")

    endpoint(api, "list").mock(return_value=httpx.Response(200, content=broken()))
    async with make_client() as client:
        with pytest.raises(ApiTimeout) as caught:
            await client.list_sessions()
    assert caught.value.http_status == 200
    assert_secret_free(caught.value)


async def test_a_broken_content_encoding_is_an_unexpected_response(
    api: respx.MockRouter,
) -> None:
    """One in-memory piece (respx reads it ahead, and httpx's decoder fails on it)."""
    endpoint(api, "list").mock(
        return_value=httpx.Response(
            200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip")
        )
    )
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.list_sessions()
    assert_secret_free(caught.value)


@pytest.mark.parametrize(("exc_type", "expected"), [
    (httpx.ConnectError, ApiUnreachable), (httpx.ReadTimeout, ApiTimeout),
])
async def test_a_transport_error_names_the_url_tried_without_credentials(
    exc_type: type[httpx.RequestError], expected: type[ApiError]
) -> None:
    base = "http://operator:hunter2@127.0.0.1:8787/v1"
    with respx.mock(base_url="http://127.0.0.1:8787/v1") as router:
        router.get("/sessions/s%201").mock(side_effect=exc_type("nope"))
        async with make_client(base_url=base) as client:
            with pytest.raises(expected) as caught:
                await client.get_session("s 1")
    message = str(caught.value)
    assert "http://127.0.0.1:8787/v1/sessions/s%201" in message
    assert "hunter2" not in message and "operator" not in message
    assert_secret_free(caught.value)


# --- list shapes ---------------------------------------------------------------------


async def list_with(payload: Any) -> SessionList:
    with respx.mock(base_url=BASE) as router:
        router.get("/sessions").mock(return_value=httpx.Response(200, json=payload))
        async with make_client() as client:
            return await client.list_sessions()


async def test_list_reads_the_sdk_shape_of_nested_items() -> None:
    result = await list_with({"sessions": [nested("s1", "WORKING"), nested("s2", "FAILED", "B")]})
    assert result == SessionList(
        (SessionInfo("s1", "Shop", "WORKING"), SessionInfo("s2", "B", "FAILED")), ()
    )


async def test_list_reads_a_bare_array_of_flat_items() -> None:
    result = await list_with([flat("s1", "STOPPED"), flat("s2", "SCAN_QR_CODE", name=None)])
    assert result.sessions == (
        SessionInfo("s1", "Shop", "STOPPED"),
        SessionInfo("s2", None, "SCAN_QR_CODE"),
    )
    assert result.problems == ()


async def test_list_reads_a_data_wrapper() -> None:
    result = await list_with({"data": [flat("s1")]})
    assert result.sessions == (SessionInfo("s1", "Shop", "WORKING"),)


async def test_list_takes_the_name_from_name_when_session_name_is_absent() -> None:
    item = {
        "session": {"uniqueSessionId": "s1", "name": "alt"},
        "downstream": {"status": "WORKING"},
    }
    result = await list_with(
        {"sessions": [item, {"uniqueSessionId": "s2", "status": "X", "name": "n"}]}
    )
    assert [s.name for s in result.sessions] == ["alt", "n"]


async def test_list_status_is_taken_as_given() -> None:
    result = await list_with([flat("s1", "working"), flat("s2", "SOMETHING_NEW")])
    assert [s.status for s in result.sessions] == ["working", "SOMETHING_NEW"]


async def test_an_empty_list_is_fine() -> None:
    assert await list_with({"sessions": []}) == SessionList((), ())


async def test_unreadable_items_are_reported_and_the_rest_is_used() -> None:
    items: list[Any] = [
        nested("s1"),
        "just a string",
        {"something": "else"},
        flat("s2"),
        {"uniqueSessionId": 42, "status": "WORKING"},
        {"uniqueSessionId": "s3", "status": None},
        {"session": {"uniqueSessionId": "s4"}, "downstream": {"status": ["WORKING"]}},
        {"session": {"sessionName": "no id"}, "downstream": {"name": "s5", "status": "WORKING"}},
        {"uniqueSessionId": "", "status": "WORKING"},
        flat("s6", "FAILED"),
    ]
    result = await list_with({"sessions": items})
    assert [s.session_id for s in result.sessions] == ["s1", "s2", "s6"]
    assert [p.split(":")[0] for p in result.problems] == [
        "item 1",
        "item 2",
        "item 4",
        "item 5",
        "item 6",
        "item 7",
        "item 8",
    ]
    assert "not an object" in result.problems[0]
    assert "uniqueSessionId" in result.problems[2]
    assert "status" in result.problems[3]
    assert all(len(p) < 200 and "\n" not in p for p in result.problems)


async def test_the_id_is_never_taken_from_downstream_name() -> None:
    item = {"session": {"sessionName": "x"}, "downstream": {"name": "s5", "status": "WORKING"}}
    result = await list_with({"sessions": [item]})
    assert result.sessions == ()
    assert len(result.problems) == 1


async def test_duplicate_ids_keep_the_first_and_are_reported() -> None:
    result = await list_with([flat("s1", "WORKING"), flat("s2"), flat("s1", "FAILED")])
    assert result.sessions == (
        SessionInfo("s1", "Shop", "WORKING"),
        SessionInfo("s2", "Shop", "WORKING"),
    )
    [problem] = result.problems
    assert problem.startswith("item 2: duplicate")


async def test_a_problem_description_is_redacted_and_short() -> None:
    bad = {"token": KEY, "note": f"Bearer {KEY}", "padding": "x" * 5000}
    result = await list_with([bad, flat("s1")])
    [problem] = result.problems
    assert KEY not in problem
    assert len(problem) <= 150


async def test_the_key_is_in_no_list_problem() -> None:
    result = await list_with([{"uniqueSessionId": KEY}, {"status": KEY}, KEY])
    assert len(result.problems) == 3
    assert all(KEY not in p for p in result.problems)


@pytest.mark.parametrize(
    "payload",
    [
        {"sessions": "none"},
        {"sessions": None},
        {"sessions": {"s1": flat("s1")}},
        {"items": [flat("s1")]},
        42,
        "sessions",
        None,
        True,
    ],
)
async def test_a_list_body_of_the_wrong_form_is_an_unexpected_response(
    api: respx.MockRouter, payload: Any
) -> None:
    body = json.dumps(payload).encode()
    endpoint(api, "list").mock(return_value=body_of(body))
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.list_sessions()
    assert caught.value.http_status == 200
    assert caught.value.excerpt == body.decode()[:EXCERPT_LIMIT]


async def test_ten_thousand_nested_items_are_read() -> None:
    items = [nested(f"sess-{i:05d}", "WORKING" if i % 3 else "FAILED") for i in range(10_000)]
    result = await list_with({"sessions": items})
    assert len(result.sessions) == 10_000
    assert result.problems == ()
    assert result.sessions[3] == SessionInfo("sess-00003", "Shop", "FAILED")


# --- single-session answers ----------------------------------------------------------


async def test_get_reads_a_flat_session(api: respx.MockRouter) -> None:
    endpoint(api, "get").mock(
        return_value=httpx.Response(200, json={**flat("s1", "WORKING"), "phoneNumber": "+49"})
    )
    async with make_client() as client:
        assert await client.get_session("s1") == SessionInfo("s1", "Shop", "WORKING")


async def test_get_tolerates_the_nested_shape(api: respx.MockRouter) -> None:
    endpoint(api, "get").mock(return_value=httpx.Response(200, json=nested("s1", "STOPPED")))
    async with make_client() as client:
        assert await client.get_session("s1") == SessionInfo("s1", "Shop", "STOPPED")


async def test_a_restart_answer_without_an_id_is_about_the_requested_session(
    api: respx.MockRouter,
) -> None:
    endpoint(api, "restart").mock(
        return_value=httpx.Response(201, json={"status": "STARTING", "sessionName": "Shop"})
    )
    async with make_client() as client:
        assert await client.restart("s1") == SessionInfo("s1", "Shop", "STARTING")


@pytest.mark.parametrize("call", ["restart", "stop"])
@pytest.mark.parametrize("status", [200, 201, 204])
async def test_an_empty_restart_or_stop_answer_means_accepted_status_unknown(
    api: respx.MockRouter, call: str, status: int
) -> None:
    endpoint(api, call).mock(return_value=httpx.Response(status))
    async with make_client() as client:
        info = await invoke(client, call)
    assert info == SessionInfo("s1", None, "")


@pytest.mark.parametrize("call", ["list", "get"])
async def test_an_empty_list_or_get_answer_is_unexpected(api: respx.MockRouter, call: str) -> None:
    endpoint(api, call).mock(return_value=body_of(b"  "))
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await invoke(client, call)
    assert "empty body" in str(caught.value)
    assert caught.value.excerpt == ""


@pytest.mark.parametrize("call", ["get", "restart", "stop"])
@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"uniqueSessionId": "s1", "sessionName": "x"}, "status"),
        ({"uniqueSessionId": "s1", "status": 3}, "status"),
        ({"uniqueSessionId": "s1", "status": ""}, "status"),
        ({"uniqueSessionId": 7, "status": "WORKING"}, "uniqueSessionId"),
        ({"uniqueSessionId": "other", "status": "WORKING"}, "another session"),
        ([flat("s1")], "Session object"),
        ("WORKING", "Session object"),
    ],
)
async def test_a_session_answer_of_the_wrong_form_is_unexpected(
    api: respx.MockRouter, call: str, payload: Any, why: str
) -> None:
    endpoint(api, call).mock(return_value=httpx.Response(200, json=payload))
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await invoke(client, call)
    assert why in str(caught.value)
    assert caught.value.call == call


# --- malformed bodies: excerpts ------------------------------------------------------

HTML_PAGE = (
    "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n"
    + "<p>upstream said: Authorization: Bearer "
    + KEY
    + "</p>\n"
    + "<p>key="
    + KEY
    + "</p>\n"
    + ("<div>filler</div>\n" * 500)
    + "</body></html>"
).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"sessions": [',
        HTML_PAGE,
        b"\xff\xfe\x00garbage\x00",
        b"[" * 100_000,  # deeper than the JSON parser will go
        ("not json " + KEY + "\n" * 10 + "tail").encode(),
    ],
)
@pytest.mark.parametrize("call", ALL_CALLS)
async def test_a_body_that_is_not_json_gives_a_short_secret_free_excerpt(
    api: respx.MockRouter, call: str, body: bytes
) -> None:
    endpoint(api, call).mock(return_value=body_of(body))
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await invoke(client, call)
    excerpt = caught.value.excerpt
    assert "not JSON" in str(caught.value)
    assert 0 < len(excerpt) <= EXCERPT_LIMIT
    assert "\n" not in excerpt
    assert excerpt.isprintable()
    assert_secret_free(caught.value)


async def test_an_html_error_page_is_excerpted_from_its_start(api: respx.MockRouter) -> None:
    endpoint(api, "list").mock(return_value=body_of(HTML_PAGE))
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.list_sessions()
    assert caught.value.excerpt.startswith("<!DOCTYPE html> <html> <head><title>502 Bad Gateway")
    assert "[REDACTED]" in caught.value.excerpt


async def test_a_body_over_the_cap_is_not_read_to_the_end(api: respx.MockRouter) -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        yield b'{"sessions": ['
        while produced < 10_000:  # ends, so that a client which reads on fails, not hangs
            produced += 1
            yield b'{"uniqueSessionId": "s", "status": "WORKING"},' * 10

    endpoint(api, "list").mock(return_value=body_of(endless))
    async with make_client(max_body_bytes=4096) as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.list_sessions()
    assert "over 4096 bytes" in str(caught.value)
    assert caught.value.excerpt.startswith('{"sessions": [{"uniqueSessionId"')
    assert len(caught.value.excerpt) <= EXCERPT_LIMIT
    assert produced <= 10


async def test_a_declared_content_length_over_the_cap_is_refused_after_one_chunk(
    api: respx.MockRouter,
) -> None:
    produced = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(100):
            produced += 1
            yield b"[" + b" " * 1000 + b"]"

    endpoint(api, "list").mock(return_value=body_of(chunks, headers={"Content-Length": "100200"}))
    async with make_client(max_body_bytes=10_000) as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.list_sessions()
    assert "over 10000 bytes" in str(caught.value)
    assert produced == 1


async def test_a_body_exactly_at_the_cap_is_read(api: respx.MockRouter) -> None:
    body = json.dumps([flat("s1")]).encode()
    endpoint(api, "list").mock(return_value=body_of(body))
    async with make_client(max_body_bytes=len(body)) as client:
        result = await client.list_sessions()
    assert result.sessions == (SessionInfo("s1", "Shop", "WORKING"),)


async def test_a_list_answer_in_many_small_chunks_is_read_whole(api: respx.MockRouter) -> None:
    body = json.dumps({"sessions": [flat(f"s{i}") for i in range(500)]}).encode()
    endpoint(api, "list").mock(return_value=body_of(pieces(body, 97)))
    async with make_client() as client:
        result = await client.list_sessions()
    assert [s.session_id for s in result.sessions] == [f"s{i}" for i in range(500)]


# --- content codings ----------------------------------------------------------------


def pieces(body: bytes, size: int = 65536) -> Callable[[], AsyncIterator[bytes]]:
    """The body as a stream of ``size``-byte pieces (as a socket would hand it over)."""

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start:start + size]

    return stream


def encoded(body: bytes, coding: str) -> bytes:
    wbits = {"gzip": 31, "deflate": 15, "raw": -15}[coding]
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(body) + packer.flush()


@pytest.mark.parametrize(("coding", "header"), [
    ("gzip", "gzip"), ("gzip", "x-gzip"), ("deflate", "deflate"), ("raw", "deflate"),
    ("gzip", "identity, GZIP"),
])
async def test_a_compressed_list_is_read(api: respx.MockRouter, coding: str, header: str) -> None:
    body = json.dumps({"sessions": [flat(f"s{i}") for i in range(2000)]}).encode()
    stream = pieces(encoded(body, coding), 997)
    endpoint(api, "list").mock(return_value=body_of(stream, headers={"Content-Encoding": header}))
    async with make_client(max_body_bytes=len(body)) as client:  # exactly the cap
        result = await client.list_sessions()
    assert [s.session_id for s in result.sessions] == [f"s{i}" for i in range(2000)]


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw"])
async def test_a_compressed_bomb_is_capped_as_it_inflates(
    api: respx.MockRouter, coding: str
) -> None:
    """32 MiB of zeros in about 32 KB: refused at the 1 MiB cap, and the memory it costs
    stays near the cap (were the piece inflated at once, 32 MiB)."""
    stream = pieces(bomb(coding, 32 * 1024 * 1024))
    header = "gzip" if coding == "gzip" else "deflate"
    endpoint(api, "list").mock(return_value=body_of(stream, headers={"Content-Encoding": header}))
    cap = 1024 * 1024
    async with make_client(max_body_bytes=cap) as client:
        tracemalloc.start()
        try:
            with pytest.raises(UnexpectedResponse) as caught:
                await client.list_sessions()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert f"body over {cap} bytes" in str(caught.value)
    assert peak < 2 * cap, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "gzip, gzip", "gzip, br"])
async def test_a_content_coding_not_asked_for_is_an_unexpected_response(
    api: respx.MockRouter, header: str
) -> None:
    """Even when the body would read as JSON as it is: its label says it is not."""
    endpoint(api, "list").mock(
        return_value=body_of(pieces(b'{"sessions": []}'), headers={"Content-Encoding": header})
    )
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.list_sessions()
    assert f"content-encoding '{header}' is not supported" in str(caught.value)
    assert_secret_free(caught.value)


async def test_a_body_that_is_not_what_its_coding_says_is_an_unexpected_response(
    api: respx.MockRouter,
) -> None:
    endpoint(api, "list").mock(
        return_value=body_of(pieces(b'{"sessions": []}'), headers={"Content-Encoding": "gzip"})
    )
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse, match="body could not be decoded"):
            await client.list_sessions()


async def test_a_compressed_error_body_still_gives_its_excerpt(api: respx.MockRouter) -> None:
    stream = pieces(encoded(b"upstream exploded", "gzip"))
    endpoint(api, "list").mock(
        return_value=httpx.Response(503, headers={"Content-Encoding": "gzip"}, content=stream())
    )
    async with make_client() as client:
        with pytest.raises(ServerError, match="upstream exploded"):
            await client.list_sessions()


# --- the key never leaks -------------------------------------------------------------

Reply = Callable[[], httpx.Response | httpx.RequestError]
LEAKY: list[Reply] = [
    lambda: httpx.Response(401, json={"error": f"invalid key {KEY}", "header": f"Bearer {KEY}"}),
    lambda: httpx.Response(404, json={"message": KEY}),
    lambda: httpx.Response(409, json={"message": KEY}),
    lambda: httpx.Response(500, json={"trace": f"Authorization: Bearer {KEY}"}),
    lambda: httpx.Response(429, json={"message": KEY}, headers={"Retry-After": KEY}),
    lambda: httpx.Response(400, json={"echo": KEY}),
    lambda: httpx.Response(302, headers={"Location": f"https://evil.example/?key={KEY}"}),
    lambda: httpx.Response(200, content=f"<html>{KEY}</html>".encode()),
    lambda: httpx.Response(200, json={"uniqueSessionId": KEY, "status": 5}),
    lambda: httpx.ConnectError(f"refused: Authorization: Bearer {KEY}"),
    lambda: httpx.ReadTimeout(f"timed out, key {KEY}"),
    lambda: httpx.RemoteProtocolError(f"bad {KEY}"),
]


@pytest.mark.parametrize("reply", LEAKY)
@pytest.mark.parametrize("call", ALL_CALLS)
async def test_the_key_is_in_no_exception_and_no_log_event(
    api: respx.MockRouter, reply: Reply, call: str
) -> None:
    def observer(c: str, status: int | None, duration: float) -> None:
        seen.append((c, status, duration))

    seen: list[tuple[str, int | None, float]] = []
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=600.0)
    route = endpoint(api, call).mock(side_effect=[reply()])
    with structlog.testing.capture_logs() as events:
        async with make_client(gate=gate, clock=clock, observer=observer) as client:
            with pytest.raises(ApiError) as caught:
                await invoke(client, call)
    assert sent(route).headers["Authorization"] == f"Bearer {KEY}"  # the key did go out
    assert_secret_free(caught.value)
    assert events, "at least the api.request event"
    assert KEY not in repr(events)
    assert KEY not in repr(seen)
    assert KEY not in repr(client)


async def test_set_api_key_refuses_an_unusable_key_and_keeps_the_old_one(
    api: respx.MockRouter,
) -> None:
    route = endpoint(api, "get").mock(return_value=httpx.Response(200, json=flat("s1")))
    async with make_client() as client:
        with pytest.raises(ValueError, match="API key"):
            client.set_api_key(SecretStr("two words"))
        await client.get_session("s1")
    assert sent(route).headers["Authorization"] == f"Bearer {KEY}"


# --- logs and the observer -----------------------------------------------------------


async def test_each_call_logs_one_api_request_debug_event(api: respx.MockRouter) -> None:
    clock = FakeClock()

    def effect(request: httpx.Request) -> httpx.Response:
        clock.advance(0.25)
        return httpx.Response(201, json=flat("s1", "STARTING"))

    endpoint(api, "restart").mock(side_effect=effect)
    with structlog.testing.capture_logs() as events:
        async with make_client(clock=clock) as client:
            await client.restart("s1")
    assert events == [
        {
            "event": "api.request",
            "log_level": "debug",
            "call": "restart",
            "method": "POST",
            "path": "/sessions/s1/restart",
            "http_status": 201,
            "duration_ms": 250.0,
            "error": None,
        }
    ]


async def test_a_failed_call_logs_its_error_kind_and_no_status(api: respx.MockRouter) -> None:
    endpoint(api, "list").mock(side_effect=httpx.ConnectTimeout)
    with structlog.testing.capture_logs() as events:
        async with make_client() as client:
            with pytest.raises(ApiTimeout):
                await client.list_sessions()
    [event] = events
    assert event["http_status"] is None
    assert event["error"] == "timeout"


async def test_the_observer_hears_every_request(api: respx.MockRouter) -> None:
    clock = FakeClock()
    heard: list[tuple[str, int | None, float]] = []

    def taking(seconds: float, reply: httpx.Response | Exception) -> Callable[
        [httpx.Request], httpx.Response
    ]:
        def effect(request: httpx.Request) -> httpx.Response:
            clock.advance(seconds)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return effect

    endpoint(api, "list").mock(side_effect=taking(0.5, httpx.Response(200, json={"sessions": []})))
    endpoint(api, "get").mock(side_effect=taking(0.5, httpx.Response(404)))
    endpoint(api, "stop").mock(side_effect=taking(0.5, httpx.ConnectError("refused")))

    def observer(call: str, status: int | None, duration: float) -> None:
        heard.append((call, status, duration))

    async with make_client(clock=clock, observer=observer) as client:
        await client.list_sessions()
        with pytest.raises(SessionGone):
            await client.get_session("s1")
        with pytest.raises(ApiUnreachable):
            await client.stop("s1")
    assert heard == [("list", 200, 0.5), ("get", 404, 0.5), ("stop", None, 0.5)]


async def test_a_failing_observer_does_not_break_the_call(api: respx.MockRouter) -> None:
    def observer(call: str, status: int | None, duration: float) -> None:
        raise RuntimeError("metrics are down")

    endpoint(api, "get").mock(return_value=httpx.Response(200, json=flat("s1")))
    with structlog.testing.capture_logs() as events:
        async with make_client(observer=observer) as client:
            assert await client.get_session("s1") == SessionInfo("s1", "Shop", "WORKING")
    assert [e["event"] for e in events] == ["api.request", "api.observer_failed"]


# --- closing -------------------------------------------------------------------------


async def test_the_context_manager_closes_the_client(api: respx.MockRouter) -> None:
    route = endpoint(api, "get").mock(return_value=httpx.Response(200, json=flat("s1")))
    async with make_client() as client:
        await client.get_session("s1")
    with pytest.raises(RuntimeError):
        await client.get_session("s1")
    assert route.call_count == 1  # the second call never went out
