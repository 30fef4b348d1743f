"""The HTTP listener over real sockets on 127.0.0.1: routing, methods, bounds, deadlines,
and the connection policy (the oldest idle connection makes room; one being answered never
does)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from supervisor.ops.listener import (
    HttpListener,
    ListenError,
    Reply,
    connection_limits,
)
from tests.waiting import until

BIG = b"x" * (32 << 20)  # more than the kernel's buffers hold: its answer takes a while
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def listener() -> AsyncIterator[HttpListener]:
    server = HttpListener("127.0.0.1", 0, {
        "/ok": lambda: Reply(200, b"fine\n"),
        "/json": lambda: Reply(503, b'{"a":1}\n', "application/json"),
        "/boom": lambda: Reply(200, str(1 / 0).encode()),
    }, header_timeout=0.5, timeout=1.0, max_request_bytes=1024, max_connections=4)
    await server.start()
    yield server
    await server.close()


def url(server: HttpListener, path: str) -> str:
    host, port = server.address
    return f"http://{host}:{port}{path}"


async def raw(server: HttpListener, data: bytes) -> bytes:
    """Send bytes as they are; read the answer until the server closes."""
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_routes_methods_and_unknown_paths(listener: HttpListener) -> None:
    async with httpx.AsyncClient() as client:
        ok = await client.get(url(listener, "/ok?verbose=1"))
        assert (ok.status_code, ok.text) == (200, "fine\n")
        assert ok.headers["connection"] == "close"
        assert ok.headers["cache-control"] == "no-store"
        js = await client.get(url(listener, "/json"))
        assert js.status_code == 503 and js.json() == {"a": 1}
        assert js.headers["content-type"] == "application/json"
        head = await client.head(url(listener, "/ok"))
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "5"
        assert (await client.get(url(listener, "/"))).status_code == 404
        assert (await client.get(url(listener, "/okay"))).status_code == 404
        assert (await client.post(url(listener, "/nope"))).status_code == 404
        post = await client.post(url(listener, "/ok"), content=b"x" * 100)
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_a_failing_route_answers_500_and_the_listener_goes_on(
    listener: HttpListener,
) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(listener, "/boom"))).status_code == 500
        assert (await client.get(url(listener, "/ok"))).status_code == 200


async def test_garbage_gets_400(listener: HttpListener) -> None:
    answer = await raw(listener, b"HELLO THERE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_an_oversized_head_gets_431_and_body_413(listener: HttpListener) -> None:
    answer = await raw(listener, b"GET /ok HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 4000
                       + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    answer = await raw(listener, b"POST /ok HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n"
                       + b"a" * 5000)
    assert answer.startswith(b"HTTP/1.1 413 ")


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True once the server has closed or reset the connection; False if it is open."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


OPENED: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_what_was_opened() -> AsyncIterator[None]:
    yield
    while OPENED:
        writer = OPENED.pop()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def connect(server: HttpListener, source: str = "127.0.0.1") -> Stream:
    """A connection the server has taken (counted), from ``source``; closed after the test."""
    before = server.connections
    stream = await asyncio.open_connection(*server.address, local_addr=(source, 0))
    OPENED.append(stream[1])
    await until(lambda: server.connections > before or server.dropped["evicted"] > 0)
    return stream


async def ask(stream: Stream, path: str = "/ok") -> bytes:
    reader, writer = stream
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    await writer.drain()
    return await asyncio.wait_for(reader.read(), 5)


async def test_a_silent_client_is_reset_at_the_header_deadline(listener: HttpListener) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection(*listener.address)
    writer.write(b"GET /ok HTTP/1.1\r\n")  # and never the rest
    await writer.drain()
    assert await closed_by_server(reader)
    assert 0.4 < loop.time() - started < listener.timeout  # the header deadline, 0.5 s
    assert listener.dropped["header_timeout"] == 1
    writer.close()
    async with httpx.AsyncClient() as client:  # others are still served
        assert (await client.get(url(listener, "/ok"))).status_code == 200


async def test_an_answer_not_taken_is_reset_at_the_deadline() -> None:
    server = HttpListener("127.0.0.1", 0, {"/big": lambda: Reply(200, BIG)},
                          header_timeout=0.2, timeout=0.6)
    await server.start()
    try:
        _, writer = await connect(server)
        writer.write(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")  # and never read
        await until(lambda: server.dropped["response_timeout"] == 1)
        assert server.dropped["header_timeout"] == 0
        assert server.connections == 0
        writer.close()
    finally:
        await server.close()


async def test_the_oldest_idle_connection_makes_room_for_a_new_one(
    listener: HttpListener,
) -> None:
    with capture_logs() as events:
        idle = [await connect(listener) for _ in range(4)]
        assert listener.connections == 4 == listener.max_connections
        newest = await connect(listener)  # the pool is full: the oldest goes
        assert await closed_by_server(idle[0][0])
        assert listener.dropped["evicted"] == 1
        for stream in idle[1:]:  # the others are still open, and served
            assert not await closed_by_server(stream[0], timeout=0.05)
        assert (await ask(idle[1])).startswith(b"HTTP/1.1 200 ")
        assert (await ask(newest)).startswith(b"HTTP/1.1 200 ")
    shed = [e for e in events if e["event"] == "http.connections_shed"]
    assert len(shed) == 1
    assert shed[0]["evicted"] == 1 and shed[0]["refused"] == 0
    assert shed[0]["log_level"] == "warning"
    assert shed[0]["busiest_peer"] == "127.0.0.1"
    for _, writer in [*idle, newest]:
        writer.close()


async def test_a_probe_is_answered_while_the_pool_is_full_of_idle_connections(
    listener: HttpListener,
) -> None:
    idle = [await connect(listener) for _ in range(4)]
    async with httpx.AsyncClient() as client:
        for _ in range(6):
            assert (await client.get(url(listener, "/ok"))).status_code == 200
    assert listener.dropped["evicted"] == 1  # then each probe, answered, left room
    for _, writer in idle:
        writer.close()


@pytest.mark.parametrize("many_addresses", [True, False],
                         ids=["pool-full", "address-at-its-cap"])
async def test_a_connection_being_answered_is_never_evicted(many_addresses: bool) -> None:
    server = HttpListener("127.0.0.1", 0, {"/big": lambda: Reply(200, BIG),
                                           "/ok": lambda: Reply(200, b"fine\n")},
                          header_timeout=5, timeout=10, max_connections=3)

    def source(n: int) -> str:  # each from an address of its own: the pool fills first
        return f"127.0.0.{n + 2}" if many_addresses else "127.0.0.1"

    await server.start()
    try:
        reader, writer = await connect(server)
        writer.write(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")  # its answer waits for it
        await until(lambda: server.idle_connections == 0)
        others = [await connect(server, source(n)) for n in range(2)]
        for n in range(2, 7):  # each new one displaces an idle one, never the one answered
            others.append(await connect(server, source(n)))
        assert server.dropped["evicted"] == 5
        received = await asyncio.wait_for(reader.read(), 10)
        assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(BIG)
        for _, other in others:
            other.close()
    finally:
        await server.close()


async def test_when_every_connection_is_being_answered_a_new_one_is_refused() -> None:
    server = HttpListener("127.0.0.1", 0, {"/big": lambda: Reply(200, BIG)},
                          header_timeout=5, timeout=10, max_connections=2)
    await server.start()
    try:
        busy = [await connect(server) for _ in range(2)]
        for _, writer in busy:
            writer.write(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        await until(lambda: server.idle_connections == 0)
        reader, writer = await asyncio.open_connection(*server.address)
        assert await closed_by_server(reader)
        assert server.dropped["refused"] == 1 and server.dropped["evicted"] == 0
        assert server.connections == 2
        writer.close()
        for _, w in busy:
            w.close()
    finally:
        await server.close()


async def test_one_address_at_its_cap_gives_up_its_own_oldest_idle_connection() -> None:
    server = HttpListener("127.0.0.1", 0, {"/ok": lambda: Reply(200, b"fine\n")},
                          max_connections=10, max_per_peer=2)
    await server.start()
    try:
        first = await connect(server, "127.0.0.2")
        other = await connect(server, "127.0.0.3")
        second = await connect(server, "127.0.0.2")
        third = await connect(server, "127.0.0.2")  # 127.0.0.2 is at its cap: its oldest goes
        assert await closed_by_server(first[0])
        assert server.dropped["evicted"] == 1
        assert server.connections == 3
        for stream in (other, second, third):
            assert (await ask(stream)).startswith(b"HTTP/1.1 200 ")
    finally:
        await server.close()


ASKED = b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n"


@pytest.mark.parametrize(("second_asked", "evicted"), [(False, 1), (True, 0)],
                         ids=["the-one-asking-is-passed-over", "all-asking-the-oldest-goes"])
async def test_a_request_waiting_in_the_kernel_is_passed_over(
    second_asked: bool, evicted: int,
) -> None:
    """Three connections that arrive together, the first with its request already sent
    (as a probe's, accepted with its request): the loop takes all three before it reads
    any, so when the third finds the pool full, the first is the oldest idle one with
    bytes waiting. The next oldest makes room; if it too has asked, the oldest does."""
    server = HttpListener("127.0.0.1", 0, {"/ok": lambda: Reply(200, b"fine\n")},
                          max_connections=2, backlog=8)
    await server.start()
    sockets: list[socket.socket] = []
    try:
        for asked in (True, second_asked, False):  # the loop does not run meanwhile
            sockets.append(socket.create_connection(server.address))
            if asked:
                sockets[-1].sendall(ASKED)
        await until(lambda: server.dropped["evicted"] == 1)
        streams: list[Stream] = []
        while sockets:  # each closed with its stream, after the test
            streams.append(await asyncio.open_connection(sock=sockets.pop(0)))
            OPENED.append(streams[-1][1])
        answered = 1 - evicted
        assert await closed_by_server(streams[evicted][0])
        assert (await asyncio.wait_for(streams[answered][0].read(), 5)).startswith(
            b"HTTP/1.1 200 ")
        assert not await closed_by_server(streams[2][0], timeout=0.05)
        assert server.dropped["evicted"] == 1
    finally:
        for sock in sockets:
            sock.close()
        await server.close()


async def test_the_shed_event_comes_at_most_once_an_interval_with_the_counts() -> None:
    server = HttpListener("127.0.0.1", 0, {}, max_connections=1, shed_log_interval=0.3)
    await server.start()
    try:
        with capture_logs() as events:
            streams = [await connect(server) for _ in range(4)]  # 3 evictions
            assert server.dropped["evicted"] == 3

            def shed() -> list[Any]:
                return [e for e in events if e["event"] == "http.connections_shed"]

            assert [e["evicted"] for e in shed()] == [1]  # at once; the rest held back
            await until(lambda: len(shed()) == 2)
            assert shed()[1]["evicted"] == 2
        for _, writer in streams:
            writer.close()
    finally:
        await server.close()


def test_connection_limits_stay_well_below_the_open_file_limit() -> None:
    assert connection_limits(20_000) == (1024, 4096)
    assert connection_limits(1024) == (224, 336)
    assert connection_limits(64) == (8, 8)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert HttpListener("127.0.0.1", 0, {}).max_connections == connection_limits(soft)[0]


async def test_a_port_in_use_is_one_line(listener: HttpListener) -> None:
    host, port = listener.address
    second = HttpListener(host, port, {})
    with pytest.raises(ListenError) as caught:
        await second.start()
    assert str(caught.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert caught.value.__cause__ is None


async def test_close_drops_open_connections(listener: HttpListener) -> None:
    reader, writer = await asyncio.open_connection(*listener.address)
    writer.write(b"GET /ok HTTP/1.1\r\n")
    await writer.drain()
    await asyncio.wait_for(listener.close(), 5)
    with contextlib.suppress(ConnectionResetError):  # dropped: as good as closed
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(listener.address, timeout=1).close()


def test_metrics_read_the_listeners_counts_when_scraped() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from supervisor.ops.metrics import Metrics

    server = HttpListener("127.0.0.1", 0, {})
    metrics = Metrics()
    metrics.watch_listener(server)
    server.dropped["evicted"] += 3
    server.dropped["header_timeout"] += 1
    found = {(s.name, tuple(s.labels.items())): s.value
             for family in text_string_to_metric_families(metrics.render().decode())
             for s in family.samples}
    dropped = "wasend_supervisor_http_connections_dropped_total"
    assert found[(dropped, (("reason", "evicted"),))] == 3
    assert found[(dropped, (("reason", "header_timeout"),))] == 1
    assert found[(dropped, (("reason", "refused"),))] == 0
    assert found[(dropped, (("reason", "response_timeout"),))] == 0
    assert found[("wasend_supervisor_http_connections", ())] == 0
