"""A tiny HTTP/1.1 server on the daemon's own event loop, for health and metrics.

It runs on the loop that runs the scheduler, so an answer from it shows that the loop
turns (``prometheus_client.start_http_server`` answers from a thread of its own, and
every path with 200). HTTP parsing is h11's; this module only moves bytes and routes.

Robustness, because it faces probes and scrapers, not browsers:

* one request per connection (``Connection: close``); GET and HEAD only (405 for other
  methods on a known path, 404 for any unknown path);
* each connection has ``timeout`` seconds to send its request and take its answer,
  then it is dropped (a slow or silent client cannot pin it);
* a request head may not exceed ``max_request_bytes`` (else 431), nor may a body
  (else 413);
* at most ``max_connections`` at once; more are closed at once;
* a route that raises answers 500 and is logged (``http.route_failed``).

Routes are ``path -> callable() -> Reply``; the query string is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import os
import socket
from collections.abc import Callable, Mapping

import h11
import msgspec
import structlog

log = structlog.get_logger("supervisor.listener")

READ_CHUNK = 4096
ALLOWED = (b"GET", b"HEAD")


class Reply(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Route = Callable[[], Reply]


class ListenError(Exception):
    """The listener could not bind its address; the message is one line for people."""


class _TooLarge(Exception):
    pass


class HttpListener:
    def __init__(
        self,
        host: str,
        port: int,
        routes: Mapping[str, Route],
        *,
        timeout: float = 5.0,
        max_request_bytes: int = 8192,
        max_connections: int = 32,
    ) -> None:
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._active: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._active)

    @property
    def address(self) -> tuple[str, int]:
        """The address actually bound (the real port when 0 was asked)."""
        if self._server is None or not self._server.sockets:
            return self.host, self.port
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def describe(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> None:
        """Bind and listen; raises ListenError (one line) when the address cannot be used."""
        try:
            self._server = await asyncio.start_server(self._connection, self.host, self.port)
        except (OSError, UnicodeError) as exc:
            where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            if isinstance(exc, socket.gaierror) or not isinstance(exc, OSError) or not exc.errno:
                detail = getattr(exc, "strerror", None) or str(exc)
            else:  # asyncio's own message repeats the address; the errno's text is enough
                detail = os.strerror(exc.errno)
            raise ListenError(f"cannot listen on {where}: {detail}") from None
        log.info("http.listening", address=self.describe(), paths=sorted(self.routes))

    async def close(self) -> None:
        """Stop listening and drop the connections still open."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in self._active.values():
            writer.transport.abort()  # their handlers see the connection end, and return
        if self._active:
            await asyncio.wait(list(self._active), timeout=self.timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), self.timeout)
        log.info("http.closed")

    # --- one connection ---

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._active) >= self.max_connections:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._active[task] = writer
        try:
            async with asyncio.timeout(self.timeout):
                await self._exchange(reader, writer)
                writer.close()
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            self._active.pop(task, None)
            writer.transport.abort()  # a no-op once closed; drops a connection that hung

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_request_bytes)
        try:
            request = await self._read(conn, reader)
        except h11.RemoteProtocolError as exc:
            await self._send(conn, writer, _text(exc.error_status_hint, "bad request"))
            return
        except _TooLarge:
            await self._send(conn, writer, _text(413, "request body too large"))
            return
        if request is None:
            return  # the client left without asking anything
        reply = self._answer(request)
        await self._send(conn, writer, reply, head=request.method == b"HEAD")
        log.debug("http.request", method=request.method.decode("ascii", "replace"),
                  path=request.target.decode("ascii", "replace"), status=reply.status)

    async def _read(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        request: h11.Request | None = None
        received = body = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:  # (h11 refuses an incomplete head over the bound)
                data = await reader.read(READ_CHUNK)
                received += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                if received - len(conn.trailing_data[0]) > self.max_request_bytes:
                    raise h11.RemoteProtocolError("request head too large", 431)
                request = event
            elif isinstance(event, h11.Data):  # of no use to GET or HEAD; read to stay in step
                body += len(event.data)
                if body > self.max_request_bytes:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # PAUSED cannot happen before our answer; be safe anyway
                return request

    def _answer(self, request: h11.Request) -> Reply:
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        route = self.routes.get(path)
        if route is None:
            return _text(404, "not found")
        if request.method not in ALLOWED:
            return Reply(405, b"method not allowed\n", headers=(("allow", "GET, HEAD"),))
        try:
            return route()
        except Exception:
            log.exception("http.route_failed", path=path)
            return _text(500, "internal error")

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply, *,
        head: bool = False,
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("cache-control", "no-store"),
            ("connection", "close"),
            *reply.headers,
        ]
        out = conn.send(h11.Response(status_code=reply.status, headers=headers,
                                     reason=_reason(reply.status))) or b""
        if not head and reply.body:
            out += conn.send(h11.Data(data=reply.body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        writer.write(out)
        await writer.drain()


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _text(status: int, text: str) -> Reply:
    return Reply(status, (text + "\n").encode("utf-8"))
