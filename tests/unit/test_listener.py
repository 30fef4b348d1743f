"""The HTTP listener over real sockets on 127.0.0.1: routing, methods, bounds, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from supervisor.listener import HttpListener, ListenError, Reply


@pytest.fixture
async def listener() -> AsyncIterator[HttpListener]:
    server = HttpListener("127.0.0.1", 0, {
        "/ok": lambda: Reply(200, b"fine\n"),
        "/json": lambda: Reply(503, b'{"a":1}\n', "application/json"),
        "/boom": lambda: Reply(200, str(1 / 0).encode()),
    }, timeout=0.5, max_request_bytes=1024, max_connections=4)
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


async def test_a_silent_client_is_dropped_after_the_timeout(listener: HttpListener) -> None:
    reader, writer = await asyncio.open_connection(*listener.address)
    writer.write(b"GET /ok HTTP/1.1\r\n")  # and never the rest
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()
    async with httpx.AsyncClient() as client:  # others are still served
        assert (await client.get(url(listener, "/ok"))).status_code == 200


async def test_connections_beyond_the_limit_are_closed_at_once(listener: HttpListener) -> None:
    idle = [await asyncio.open_connection(*listener.address) for _ in range(4)]
    deadline = asyncio.get_running_loop().time() + 5
    while listener.connections < 4:  # the server has taken all four
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection(*listener.address)
    writer.write(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
    try:
        extra = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        extra = b""
    writer.close()
    assert extra == b""  # dropped, not served and not left hanging
    for _, w in idle:
        w.close()


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
