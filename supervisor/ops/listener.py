"""A tiny HTTP/1.1 server on the daemon's own event loop, for health and metrics.

It runs on the loop that runs the scheduler, so an answer from it shows that the loop
turns (``prometheus_client.start_http_server`` answers from a thread of its own, and
every path with 200). HTTP parsing is h11's; this module only moves bytes and routes.
Each connection is an :class:`asyncio.Protocol` fed by the loop: a request is parsed and
answered in the callback that brings its last bytes, with no task per connection.

Robustness, because it faces probes and scrapers (and, in a container listening on
0.0.0.0, anything else on the pod network), not browsers:

* one request per connection (``Connection: close``); GET and HEAD only (405 for other
  methods on a known path, 404 for any unknown path);
* a header deadline: the request (its head, and any body) must arrive within
  ``header_timeout`` seconds (2) of the connection being accepted, and the answer must be
  taken within ``timeout`` seconds (5) of it, else the connection is reset;
* a request head may not exceed ``max_request_bytes`` (else 431), nor may a body
  (else 413);
* at most ``max_connections`` connections at once (1,024, fewer under a low open-file
  limit: see :func:`connection_limits`), and at most ``max_per_peer`` (64) from one
  address. A new connection is always taken: when its address has ``max_per_peer``
  already, that address's oldest idle connection is reset; when the pool is full, the
  oldest idle connection is. *Idle* means its request is not complete (bytes already
  waiting in the kernel count as a request under way, so a probe that has just sent its
  request is passed over). A connection being answered is never reset for another; if
  none is idle, the new one is refused. So a flood of idle connections costs each of
  them its place, oldest first, and the probes, which send their request at once, are
  still answered;
* what is reset or refused is counted (:attr:`HttpListener.dropped`, by reason, for
  ``/metrics``) and told in an ``http.connections_shed`` warning, at most one per
  ``shed_log_interval`` seconds (10), with the counts since the last one;
* a route that raises answers 500 and is logged (``http.route_failed``).

The status page (``app``, when ``http_auth_file`` is set): every path that is not one of
the routes goes to an ASGI application (``supervisor.web.app``), called through
``httpx.ASGITransport`` with the peer's address. Only those paths take POST (a body of at
most ``max_request_bytes``). The complete request is handed to the application in a task,
once the connection is no longer idle; the answer must still be written within
``timeout`` of the connection being accepted (the task is cancelled and the connection
reset otherwise), and at most ``max_app_requests`` (64) are answered at once (503 beyond).
The probes and ``/metrics`` never go through it: their routes are answered as before, in
the callback. Without ``app`` an unknown path is 404, as before.

POST endpoints (``posts``: path -> callable(headers, body, peer) -> Reply): the
provider's webhooks. A POST to one of them (a body of at most ``max_request_bytes``) is
answered in the callback that brings its last bytes, like a probe: the endpoint only
checks and queues (``supervisor.webhooks``), it never waits. Another method on its path
is 405.

Shed and timed-out connections are reset (``SO_LINGER`` 0), not closed: the client
learns at once, and no ``TIME_WAIT`` state is left behind for each one of a flood.

Routes are ``path -> callable() -> Reply``; the query string is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import http
import os
import resource
import socket
import struct
import termios
from collections.abc import Callable, Mapping
from typing import Any

import h11
import httpx
import msgspec
import structlog

from supervisor.domain import events as ev

log = structlog.get_logger("supervisor.listener")

ALLOWED = (b"GET", b"HEAD")
APP_ALLOWED = (b"GET", b"HEAD", b"POST")
MAX_APP_REQUESTS = 64
# Not copied from the application's answer: the listener writes its own.
_HOP_HEADERS = frozenset({b"content-length", b"connection", b"transfer-encoding",
                          b"keep-alive"})
HEADER_TIMEOUT = 2.0
TIMEOUT = 5.0
MAX_CONNECTIONS = 1024
MAX_PER_PEER = 64
MAX_BACKLOG = 4096
MIN_CONNECTIONS = 8
RESERVED_FILES = 128  # descriptors left for everything else: the state file, the API client...
SHED_LOG_INTERVAL = 10.0
VICTIM_SCAN = 32  # idle connections looked at for one without bytes waiting
DROP_REASONS = ("evicted", "refused", "header_timeout", "response_timeout")
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_INT = struct.pack("i", 0)


def connection_limits(open_files: int | None = None) -> tuple[int, int]:
    """The pool size and the listen backlog for a process allowed ``open_files`` descriptors
    (default: the soft ``RLIMIT_NOFILE``).

    Each connection is a descriptor, and the loop may accept up to a backlog's worth at once
    before it resets the ones they displace. So, after ``RESERVED_FILES`` for the rest of
    the daemon: a quarter for the pool (at most 1,024), half of what remains for the backlog
    (at most 4,096; the kernel caps it at ``net.core.somaxconn``). With 20,000 descriptors:
    1,024 and 4,096; with a container's usual 1,024: 224 and 336. Never below 8.
    """
    if open_files is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        open_files = 1 << 20 if soft == resource.RLIM_INFINITY else soft
    budget = max(0, open_files - RESERVED_FILES)
    pool = max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, budget // 4))
    backlog = max(MIN_CONNECTIONS, min(MAX_BACKLOG, (budget - pool) // 2))
    return pool, backlog


class Reply(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Route = Callable[[], Reply]
# A POST endpoint answered in the callback: (headers, lower-case names; the body; the peer).
Post = Callable[[Mapping[str, str], bytes, str], Reply]
App = Callable[..., Any]  # an ASGI application (typed loosely: no Starlette import here)


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
        header_timeout: float = HEADER_TIMEOUT,
        timeout: float = TIMEOUT,
        max_request_bytes: int = 8192,
        max_connections: int | None = None,
        max_per_peer: int = MAX_PER_PEER,
        backlog: int | None = None,
        shed_log_interval: float = SHED_LOG_INTERVAL,
        app: App | None = None,
        max_app_requests: int = MAX_APP_REQUESTS,
        posts: Mapping[str, Post] | None = None,
    ) -> None:
        pool, default_backlog = connection_limits()
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self.posts = dict(posts or {})
        self.header_timeout = header_timeout
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.max_connections = pool if max_connections is None else max_connections
        self.max_per_peer = min(max_per_peer, self.max_connections)
        self.backlog = default_backlog if backlog is None else backlog
        self.shed_log_interval = shed_log_interval
        self.app = app
        self.max_app_requests = max_app_requests
        self.app_requests = 0
        """Requests being answered by the application now."""
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        """Connections reset or refused since the start, by reason (for ``/metrics``)."""
        self._server: asyncio.Server | None = None
        # Insertion-ordered, so the first key is the oldest: every open connection; the
        # idle ones; and per peer address, its open count and its idle ones.
        self._open: dict[_Connection, None] = {}
        self._idle: dict[_Connection, None] = {}
        self._peer_open: dict[str, int] = {}
        self._peer_idle: dict[str, dict[_Connection, None]] = {}
        self._unlogged: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._last_shed_log = float("-inf")
        self._shed_log: asyncio.TimerHandle | None = None
        self._sweep: asyncio.TimerHandle | None = None  # the header deadline of the oldest idle

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    @property
    def idle_connections(self) -> int:
        """Open connections whose request is not complete yet."""
        return len(self._idle)

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
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), self.host, self.port, backlog=self.backlog)
        except (OSError, UnicodeError) as exc:
            where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            if isinstance(exc, socket.gaierror) or not isinstance(exc, OSError) or not exc.errno:
                detail = getattr(exc, "strerror", None) or str(exc)
            else:  # asyncio's own message repeats the address; the errno's text is enough
                detail = os.strerror(exc.errno)
            raise ListenError(f"cannot listen on {where}: {detail}") from None
        page = {} if self.app is None else {"status_page": True}
        log.info(ev.HTTP_LISTENING, address=self.describe(),
                 paths=sorted([*self.routes, *self.posts]),
                 max_connections=self.max_connections, max_per_peer=self.max_per_peer, **page)

    async def close(self) -> None:
        """Stop listening and drop the connections still open."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._open):
            self._forget(connection)
            connection.transport.abort()
        for handle in (self._sweep, self._shed_log):
            if handle is not None:
                handle.cancel()
        if any(self._unlogged.values()):
            self._log_shed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), self.timeout)
        log.info(ev.HTTP_CLOSED)

    # --- the connection policy ---

    def _admit(self, connection: _Connection) -> bool:
        """Take a new connection, resetting an idle one to make room; False: refused."""
        peer = connection.peer
        if self._peer_open.get(peer, 0) >= self.max_per_peer:
            victim = _oldest_idle(self._peer_idle.get(peer, {}))
        elif len(self._open) >= self.max_connections:
            victim = _oldest_idle(self._idle)
        else:
            victim = connection  # room enough
        if victim is None:
            self._shed("refused")
            return False
        if victim is not connection:
            self._drop(victim, "evicted")
        self._open[connection] = None
        self._idle[connection] = None
        self._peer_open[peer] = self._peer_open.get(peer, 0) + 1
        self._peer_idle.setdefault(peer, {})[connection] = None
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_at(
                connection.accepted + self.header_timeout, self._sweep_idle)
        return True

    def _sweep_idle(self) -> None:
        """Reset the idle connections past their header deadline. They are in the order they
        were taken, so the deadlines are too: one timer, for the oldest, is enough."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            oldest = next(iter(self._idle))
            deadline = oldest.accepted + self.header_timeout
            if deadline > now:
                self._sweep = loop.call_at(deadline, self._sweep_idle)
                return
            self._drop(oldest, "header_timeout")

    def _busy(self, connection: _Connection) -> None:
        """Its request is complete: it is being answered, and no longer idle."""
        self._idle.pop(connection, None)
        idle = self._peer_idle.get(connection.peer)
        if idle is not None:
            idle.pop(connection, None)
            if not idle:
                del self._peer_idle[connection.peer]

    def _forget(self, connection: _Connection) -> None:
        """It is closed (or about to be): out of every count. Safe to call twice."""
        connection.stop_timer()
        if connection in self._open:
            del self._open[connection]
            left = self._peer_open[connection.peer] - 1
            if left:
                self._peer_open[connection.peer] = left
            else:
                del self._peer_open[connection.peer]
        self._busy(connection)

    def _drop(self, connection: _Connection, reason: str) -> None:
        self._forget(connection)
        connection.reset()
        self._shed(reason)

    def _shed(self, reason: str) -> None:
        self.dropped[reason] += 1
        self._unlogged[reason] += 1
        if self._shed_log is None:
            loop = asyncio.get_running_loop()
            wait = self._last_shed_log + self.shed_log_interval - loop.time()
            if wait <= 0:
                self._log_shed()
            else:
                self._shed_log = loop.call_later(wait, self._log_shed)

    def _log_shed(self) -> None:
        self._shed_log = None
        self._last_shed_log = asyncio.get_running_loop().time()
        counts, self._unlogged = self._unlogged, dict.fromkeys(DROP_REASONS, 0)
        busiest = max(self._peer_open.items(), key=lambda item: item[1], default=(None, 0))
        log.warning(ev.HTTP_CONNECTIONS_SHED, **counts, connections=len(self._open),
                    max_connections=self.max_connections, busiest_peer=busiest[0],
                    busiest_peer_connections=busiest[1])

    # --- answers ---

    def _for_app(self, request: h11.Request) -> bool:
        """Whether the application answers this request (a path that is no route's)."""
        if self.app is None:
            return False
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        return path not in self.routes and path not in self.posts

    def _post(self, request: h11.Request, body: bytes, peer: str) -> Reply | None:
        """The answer of a POST endpoint (None: the path is none of theirs)."""
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        post = self.posts.get(path)
        if post is None:
            return None
        if request.method != b"POST":
            return Reply(405, b"method not allowed\n", headers=(("allow", "POST"),))
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in request.headers}
        try:
            return post(headers, body, peer)
        except Exception:
            log.exception(ev.HTTP_ROUTE_FAILED, path=path)
            return _text(500, "internal error")

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
            log.exception(ev.HTTP_ROUTE_FAILED, path=path)
            return _text(500, "internal error")

    async def _ask_app(self, request: h11.Request, body: bytes, peer: str, port: int,
                       ) -> httpx.Response | Reply:
        """The application's answer to a complete request (its body read), or a Reply
        when it cannot be asked."""
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        if request.method not in APP_ALLOWED:
            return Reply(405, b"method not allowed\n", headers=(("allow", "GET, HEAD, POST"),))
        if not request.target.startswith(b"/"):
            return _text(400, "bad request")
        if self.app_requests >= self.max_app_requests:
            return Reply(503, b"busy\n", headers=(("retry-after", "1"),))
        host, bound = self.address
        origin = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        self.app_requests += 1
        try:
            asked = httpx.Request(request.method.decode("ascii"),
                                  origin + request.target.decode("ascii", "replace"),
                                  headers=list(request.headers), content=body)
            transport = httpx.ASGITransport(self.app, client=(peer, port))  # type: ignore[arg-type]
            response = await transport.handle_async_request(asked)
            await response.aread()
            return response
        except Exception:
            log.exception(ev.HTTP_ROUTE_FAILED, path=path)
            return _text(500, "internal error")
        finally:
            self.app_requests -= 1


class _Connection(asyncio.Protocol):
    """One connection: h11 fed from ``data_received``; answered as soon as it has asked."""

    transport: asyncio.Transport

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.peer = ""
        self.h11: h11.Connection | None = None  # made when the first bytes come
        self.request: h11.Request | None = None
        self.received = 0
        self.body = 0
        self.done = False  # answered, refused or reset: further bytes are ignored
        self.accepted = 0.0
        self.timer: asyncio.TimerHandle | None = None  # the answer's deadline
        self.port = 0
        self.chunks: list[bytes] = []  # the body, for the application
        self.task: asyncio.Task[None] | None = None  # the application answering

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        self.port = int(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else 0
        self.accepted = asyncio.get_running_loop().time()
        if not self.listener._admit(self):
            self.reset()

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.received += len(data)
        if self.h11 is None:
            self.h11 = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self.listener.max_request_bytes)
        self.h11.receive_data(data)
        self._advance(self.h11)

    def eof_received(self) -> bool | None:
        if not self.done and self.h11 is not None:
            self.h11.receive_data(b"")
            self._advance(self.h11)
        return None  # the transport closes itself (also when nothing was asked)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self.listener._forget(self)

    # --- the exchange ---

    def _advance(self, conn: h11.Connection) -> None:
        try:
            while not self.done:
                event = conn.next_event()
                if event is h11.NEED_DATA:  # (h11 refuses an incomplete head over the bound)
                    return
                if isinstance(event, h11.Request):
                    if self.received - len(conn.trailing_data[0]) > \
                            self.listener.max_request_bytes:
                        raise h11.RemoteProtocolError("request head too large", 431)
                    self.request = event
                elif isinstance(event, h11.Data):  # of no use to GET or HEAD; read to stay in step
                    self.body += len(event.data)
                    if self.body > self.listener.max_request_bytes:
                        raise _TooLarge
                    if self.listener.app is not None or self.listener.posts:
                        self.chunks.append(bytes(event.data))
                elif isinstance(event, h11.ConnectionClosed):
                    self.done = True  # the client left without asking anything
                    self.transport.close()
                elif self.request is None:  # EndOfMessage or PAUSED without a request: be safe
                    self._send(conn, _text(400, "bad request"))
                elif self.listener._for_app(self.request):
                    self._hand_to_app(conn, self.request)
                elif (posted := self.listener._post(self.request, b"".join(self.chunks),
                                                    self.peer)) is not None:
                    self.chunks = []
                    self._send(conn, posted)
                    log.debug(ev.HTTP_REQUEST, method="POST", path=self.request.target.decode(
                        "ascii", "replace"), status=posted.status)
                else:
                    request = self.request
                    reply = self.listener._answer(request)
                    self._send(conn, reply, head=request.method == b"HEAD")
                    log.debug(ev.HTTP_REQUEST, method=request.method.decode("ascii", "replace"),
                              path=request.target.decode("ascii", "replace"),
                              status=reply.status)
        except h11.RemoteProtocolError as exc:
            self._send(conn, _text(exc.error_status_hint, "bad request"))
        except _TooLarge:
            self._send(conn, _text(413, "request body too large"))

    def _send(self, conn: h11.Connection, reply: Reply, *, head: bool = False) -> None:
        self._taken()
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("cache-control", "no-store"),
            ("connection", "close"),
            *reply.headers,
        ]
        self._write(conn, reply.status, headers, reply.body, head=head)

    def _taken(self) -> None:
        """The request is complete: no longer idle, and answered within the deadline."""
        self.done = True
        self.listener._busy(self)
        self.timer = asyncio.get_running_loop().call_at(
            self.accepted + self.listener.timeout, self._expired)

    def _write(self, conn: h11.Connection, status: int,
               headers: list[tuple[str, str]] | list[tuple[bytes, bytes]], body: bytes, *,
               head: bool) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.close()
            return
        try:
            out = conn.send(h11.Response(status_code=status, headers=headers,
                                         reason=_reason(status))) or b""
            if not head and body:
                out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self.transport.close()
            return
        self.transport.write(out)
        self.transport.close()  # once written: the loop sends the rest, then closes

    def _hand_to_app(self, conn: h11.Connection, request: h11.Request) -> None:
        """Ask the application in a task; write its answer when it comes (unless the
        deadline reset the connection first: that cancels the task)."""
        self._taken()
        body, self.chunks = b"".join(self.chunks), []
        self.task = asyncio.get_running_loop().create_task(self._app_answer(conn, request, body))

    async def _app_answer(self, conn: h11.Connection, request: h11.Request, body: bytes,
                          ) -> None:
        answer = await self.listener._ask_app(request, body, self.peer, self.port)
        if self.transport.is_closing():
            return
        head = request.method == b"HEAD"
        headers: list[tuple[bytes, bytes]]
        if isinstance(answer, Reply):
            headers = [(b"content-type", answer.content_type.encode("latin-1")),
                       (b"cache-control", b"no-store"),
                       *((k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers)]
            status, content = answer.status, answer.body
        else:
            headers = [(k, v) for k, v in answer.headers.raw if k.lower() not in _HOP_HEADERS]
            status, content = answer.status_code, answer.content
        headers += [(b"content-length", str(len(content)).encode("ascii")),
                    (b"connection", b"close")]
        self._write(conn, status, headers, content, head=head)
        log.debug(ev.HTTP_REQUEST, method=request.method.decode("ascii", "replace"),
                  path=request.target.decode("ascii", "replace"), status=status)

    def _expired(self) -> None:
        self.timer = None
        self.listener._drop(self, "response_timeout")

    # --- helpers ---

    def stop_timer(self) -> None:
        """Stop the answer's deadline, and the application's answering if under way."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def reset(self) -> None:
        """Close at once with an RST: no lingering, no TIME_WAIT."""
        self.done = True
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()

    def bytes_waiting(self) -> bool:
        """Whether bytes have arrived that the loop has not handed over yet."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, _INT)
        except OSError:
            return False
        return bool(struct.unpack("i", waiting)[0])


def _oldest_idle(idle: Mapping[_Connection, None]) -> _Connection | None:
    """The oldest idle connection without bytes waiting (among the oldest few), else the
    oldest; None if there is none."""
    oldest = None
    for seen, connection in enumerate(idle):
        if seen >= VICTIM_SCAN:
            break
        if oldest is None:
            oldest = connection
        if not connection.bytes_waiting():
            return connection
    return oldest


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _text(status: int, text: str) -> Reply:
    return Reply(status, (text + "\n").encode("utf-8"))
