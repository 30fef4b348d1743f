"""Servers that are slow on purpose, compressed bombs and proxies, over real sockets on
127.0.0.1: every call ends at ``request_timeout``, a compressed body is capped as it
inflates, and the key never goes to an HTTP proxy."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr

from supervisor.api.client import WasendClient
from supervisor.api.errors import ApiTimeout, ApiUnreachable, UnexpectedResponse
from supervisor.api.ratelimit import RateGate
from supervisor.clock import SystemClock
from supervisor.runtime.wiring import build, rebuild
from tests.e2e.conftest import API_KEY, cli
from tests.faults.conftest import settings_at
from tests.faults.hostile import Handler, RawServer, bomb, drip_body, drip_headers

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

CAP = 32 * 1024 * 1024  # the client's default body cap
LISTING = json.dumps({"sessions": [{"uniqueSessionId": "a", "status": "WORKING"}]}).encode()

Servers = Callable[[Handler], RawServer]


@pytest.fixture
def raw_server() -> Iterator[Servers]:
    started: list[RawServer] = []

    def start(handle: Handler) -> RawServer:
        server = RawServer(handle).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def answer(body: bytes, *headers: str) -> Handler:
    def handle(sock: socket.socket, head: bytes, stopping: threading.Event) -> None:
        lines = ["HTTP/1.1 200 OK", "Content-Type: application/json",
                 f"Content-Length: {len(body)}", "Connection: close", *headers, "", ""]
        sock.sendall("\r\n".join(lines).encode() + body)

    return handle


def hang_up(sock: socket.socket, head: bytes, stopping: threading.Event) -> None:
    """A stand-in proxy: remembers the request (RawServer does) and answers nothing."""


def client(base_url: str, timeout: float = 5.0, **kwargs: object) -> WasendClient:
    return WasendClient(base_url, SecretStr(API_KEY), timeout=timeout, **kwargs)  # type: ignore[arg-type]


# --- dripping servers ----------------------------------------------------------------


@pytest.mark.parametrize("drip", [drip_body, drip_headers], ids=["body", "headers"])
async def test_a_dripping_server_is_cut_off_at_request_timeout(
    raw_server: Servers, drip: Callable[[float], Handler]
) -> None:
    """Expectation: a byte every 0.2 s keeps each read alive, but the call as a whole
    ends at its 1 s ``request_timeout`` with ``ApiTimeout`` naming the URL."""
    server = raw_server(drip(0.2))
    async with client(server.base_url, timeout=1.0) as api:
        started = time.monotonic()
        with pytest.raises(ApiTimeout) as caught:
            await asyncio.wait_for(api.list_sessions(), 5)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.5
    message = str(caught.value)
    assert f"{server.base_url}/sessions" in message and "request_timeout (1s)" in message
    assert caught.value.__context__ is None and API_KEY not in message


async def test_a_reloaded_request_timeout_is_the_next_calls_deadline(
    raw_server: Servers,
) -> None:
    """Expectation: a reload (the runtime rebuilt from the new settings) sets the next
    call's deadline; a call cut off by its deadline leaves the supervisor able to ask
    again (the next reload's client)."""
    server = raw_server(drip_body(0.1))
    good = raw_server(answer(LISTING))
    first = build(settings_at(server.base_url, request_timeout=30.0))
    reloaded = rebuild(first, settings_at(server.base_url, request_timeout=0.5))
    again = rebuild(reloaded, settings_at(good.base_url, request_timeout=0.5))
    try:
        started = time.monotonic()
        with pytest.raises(ApiTimeout, match=r"request_timeout \(0.5s\)"):
            await asyncio.wait_for(reloaded.client.list_sessions(), 5)
        assert time.monotonic() - started < 1.0
        listing = await asyncio.wait_for(again.client.list_sessions(), 5)
    finally:
        await reloaded.client.aclose()
        await again.client.aclose()
        await first.aclose()
    assert [s.session_id for s in listing.sessions] == ["a"]


async def test_waiting_at_the_rate_gate_is_not_part_of_a_calls_deadline(
    raw_server: Servers,
) -> None:
    """Expectation: a gate that holds the call for longer than ``request_timeout`` (as a
    ``Retry-After`` may) does not make the call time out: the deadline starts after it."""

    class SlowGate(RateGate):
        async def acquire(self, *, spare: bool = False, fenced: bool = True) -> None:
            await asyncio.sleep(0.6)

    server = raw_server(answer(LISTING))
    gate = SlowGate(SystemClock(), rate_limit=None, max_retry_after=1.0)
    async with client(server.base_url, timeout=0.4, gate=gate) as api:
        listing = await api.list_sessions()
    assert [s.session_id for s in listing.sessions] == ["a"]


def test_check_ends_at_its_request_timeout_against_a_dripping_server(
    raw_server: Servers,
) -> None:
    """Expectation: ``check --request-timeout 2`` against a server dripping a byte every
    0.5 s exits 3 (the API could not be asked) within a few seconds, not never."""
    server = raw_server(drip_body(0.5))
    started = time.monotonic()
    done = cli("check", "--request-timeout", "2",
               env={"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": API_KEY}, timeout=15)
    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert elapsed < 6
    assert "timeout" in done.stdout
    assert API_KEY not in done.stdout + done.stderr


# --- compressed bombs ----------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "raw"], ids=["gzip", "raw_deflate"])
async def test_a_compressed_bomb_is_capped_as_it_inflates(
    raw_server: Servers, coding: str
) -> None:
    """Expectation: a 200 KB body that inflates to 200 MB is refused as over the 32 MiB
    cap, and the memory it costs while being read stays near the cap (well under 2x)."""
    body = bomb(coding)
    header = "gzip" if coding == "gzip" else "deflate"
    server = raw_server(answer(body, f"Content-Encoding: {header}"))
    tracemalloc.start()
    try:
        async with client(server.base_url, timeout=20.0) as api:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            with pytest.raises(UnexpectedResponse) as caught:
                await api.list_sessions()
            peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert f"body over {CAP} bytes" in str(caught.value)
    assert peak < 1.5 * CAP, f"peak {peak / 2**20:.0f} MiB"


# --- proxies -------------------------------------------------------------------------

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                   "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"])
async def test_a_loopback_http_base_url_is_asked_directly_whatever_the_proxy_variables(
    raw_server: Servers, no_proxy_env: pytest.MonkeyPatch, variable: str
) -> None:
    """Expectation: with a proxy in the environment, a plain http:// (loopback) base URL
    is still asked directly: the proxy sees no request, so never the key."""
    proxy = raw_server(hang_up)
    api_server = raw_server(answer(LISTING))
    no_proxy_env.setenv(variable, proxy.base_url)
    async with client(api_server.base_url) as api:
        listing = await api.list_sessions()
    assert [s.session_id for s in listing.sessions] == ["a"]
    assert proxy.heads == []
    [head] = api_server.heads
    assert head.startswith(b"GET /sessions ") and f"Bearer {API_KEY}".encode() in head


async def test_an_https_base_url_goes_through_https_proxy_in_a_tunnel(
    raw_server: Servers, no_proxy_env: pytest.MonkeyPatch
) -> None:
    """Expectation: ``HTTPS_PROXY`` is used for an https:// base URL, by CONNECT: the
    proxy is told the host and port, never the key (that travels inside TLS)."""
    proxy = raw_server(hang_up)
    no_proxy_env.setenv("HTTPS_PROXY", proxy.base_url)
    no_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # never for https://
    async with client("https://api.wasend.test", timeout=3.0) as api:
        with pytest.raises(ApiUnreachable):
            await api.list_sessions()
    [head] = proxy.heads
    assert head.startswith(b"CONNECT api.wasend.test:443 ")
    assert API_KEY.encode() not in head


async def test_no_proxy_sends_an_https_base_url_directly(
    raw_server: Servers, no_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = raw_server(hang_up)
    no_proxy_env.setenv("HTTPS_PROXY", proxy.base_url)
    no_proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
    async with client("https://127.0.0.1:9", timeout=3.0) as api:  # nothing listens there
        with pytest.raises(ApiUnreachable) as caught:
            await api.list_sessions()
    assert proxy.heads == []
    assert "https://127.0.0.1:9/sessions" in str(caught.value)


async def test_a_reload_from_http_to_https_gets_tls_and_the_https_proxy(
    raw_server: Servers, no_proxy_env: pytest.MonkeyPatch
) -> None:
    """Expectation: a base URL reloaded from loopback http:// to https:// is asked with
    a real certificate store and through ``HTTPS_PROXY``, as if the client began so."""
    proxy = raw_server(hang_up)
    api_server = raw_server(answer(LISTING))
    no_proxy_env.setenv("HTTPS_PROXY", proxy.base_url)
    first = build(settings_at(api_server.base_url, request_timeout=3.0))
    https = rebuild(first, settings_at("https://api.wasend.test", request_timeout=3.0))
    back = rebuild(https, settings_at(api_server.base_url, request_timeout=3.0))
    try:
        await first.client.list_sessions()
        with pytest.raises(ApiUnreachable):
            await https.client.list_sessions()
        await back.client.list_sessions()
    finally:
        await https.client.aclose()
        await back.client.aclose()
        await first.aclose()
    [head] = proxy.heads
    assert head.startswith(b"CONNECT api.wasend.test:443 ")
    assert len(api_server.heads) == 2
