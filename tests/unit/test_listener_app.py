"""The listener's second door: the status page's application, for every path that is no
probe's, over real sockets on 127.0.0.1. The probes' routes are answered as before; the
application gets the peer, the body (bounded), and no more than the response deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from supervisor.domain import events as ev
from supervisor.ops.listener import HttpListener, Reply
from tests.waiting import until

Scope = dict[str, Any]


class Echo:
    """An ASGI application that says what it was asked; ``/hang`` never answers."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.started = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/boom":
            raise RuntimeError("the page broke")
        if scope["path"] == "/hang":
            self.started += 1
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        said = {"method": scope["method"], "path": scope["path"],
                "query": scope["query_string"].decode(), "client": list(scope["client"]),
                "body": body.decode(), "host": dict(scope["headers"]).get(b"host", b"").decode()}
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json"),
                                (b"x-page", b"yes"), (b"content-length", b"999")]})
        await send({"type": "http.response.body", "body": json.dumps(said).encode()})


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpListener, Echo]]:
    app = Echo()

    server = HttpListener("127.0.0.1", 0, {
        "/livez": lambda: Reply(200, b"alive\n"),
        "/metrics": lambda: Reply(200, b"metrics\n"),
    }, header_timeout=0.5, timeout=1.0, max_request_bytes=1024, app=app)
    await server.start()
    yield server, app
    await server.close()


def url(server: HttpListener, path: str) -> str:
    host, port = server.address
    return f"http://{host}:{port}{path}"


async def test_the_application_answers_what_is_no_route(
        served: tuple[HttpListener, Echo]) -> None:
    server, _ = served
    async with httpx.AsyncClient() as client:
        answer = await client.post(url(server, "/sessions/a/pause?x=1"), data={"csrf": "t"})
        said = answer.json()
    local_port = said["client"][1]  # the client's port, as the application saw it
    assert answer.status_code == 201
    assert answer.headers["x-page"] == "yes"
    assert answer.headers["content-length"] == str(len(answer.content))  # the listener's
    assert answer.headers["connection"] == "close"
    assert said["method"] == "POST" and said["path"] == "/sessions/a/pause"
    assert said["query"] == "x=1" and said["body"] == "csrf=t"
    assert said["client"][0] == "127.0.0.1" and isinstance(local_port, int) and local_port > 0
    assert said["host"] == f"127.0.0.1:{server.address[1]}"


async def test_the_probes_keep_their_own_answers(served: tuple[HttpListener, Echo]) -> None:
    server, _ = served
    async with httpx.AsyncClient() as client:
        live = await client.get(url(server, "/livez"))
        assert (live.status_code, live.text) == (200, "alive\n")
        post = await client.post(url(server, "/livez"))
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        head = await client.head(url(server, "/"))
        assert head.status_code == 201 and head.content == b""


async def test_a_body_over_the_bound_is_413(served: tuple[HttpListener, Echo]) -> None:
    server, _ = served
    async with httpx.AsyncClient() as client:
        answer = await client.post(url(server, "/login"), content=b"x" * 2000)
    assert answer.status_code == 413


async def test_a_failing_application_answers_500(served: tuple[HttpListener, Echo]) -> None:
    server, _ = served
    with capture_logs() as logs:
        async with httpx.AsyncClient() as client:
            assert (await client.get(url(server, "/boom"))).status_code == 500
            assert (await client.get(url(server, "/livez"))).status_code == 200
    assert [e["path"] for e in logs if e["event"] == ev.HTTP_ROUTE_FAILED] == ["/boom"]


async def test_an_application_past_the_deadline_is_cut_off(
        served: tuple[HttpListener, Echo]) -> None:
    server, app = served
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.TransportError):
            await client.get(url(server, "/hang"))
        assert (await client.get(url(server, "/livez"))).status_code == 200
    await until(lambda: app.cancelled == 1)
    assert server.dropped["response_timeout"] == 1
    assert server.app_requests == 0
    assert server.connections == 0


async def test_at_most_so_many_application_answers_at_once(
        served: tuple[HttpListener, Echo]) -> None:
    server, app = served
    server.max_app_requests = 2
    async with httpx.AsyncClient() as client:
        hanging = [asyncio.ensure_future(client.get(url(server, "/hang"))) for _ in range(2)]
        await until(lambda: app.started == 2)
        busy = await client.get(url(server, "/"))
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert (await client.get(url(server, "/livez"))).status_code == 200
        for task in hanging:
            with pytest.raises(httpx.TransportError):
                await task


async def test_without_an_application_every_other_path_is_404() -> None:
    server = HttpListener("127.0.0.1", 0, {"/livez": lambda: Reply(200, b"alive\n")})
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            for method in ("GET", "POST"):
                answer = await client.request(method, url(server, "/"))
                assert answer.status_code == 404
    finally:
        await server.close()
