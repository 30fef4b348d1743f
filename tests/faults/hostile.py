"""Servers that misbehave at the socket level, in threads of their own on 127.0.0.1 (so
that a test can talk to them from its event loop or from a subprocess): one that drips
its answer a byte at a time, one that records whatever reaches it (a stand-in proxy),
and a compressed body that inflates to far more than the client's cap."""

from __future__ import annotations

import functools
import socket
import socketserver
import threading
import zlib
from collections.abc import Callable

from tests.serving import Serving

__all__ = ["BOMB_SIZE", "RawServer", "bomb", "drip_body", "drip_headers", "read_head"]

BOMB_SIZE = 200 * 1024 * 1024  # what the bomb inflates to


@functools.cache
def bomb(coding: str = "gzip", size: int = BOMB_SIZE) -> bytes:
    """``size`` zero bytes (a whole number of MiB; 200 MiB: about 200 KB compressed),
    compressed: gzip, deflate (the zlib wrapper) or raw deflate ("raw")."""
    wbits = {"gzip": 31, "deflate": 15, "raw": -15}[coding]
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    parts.append(packer.flush())
    return b"".join(parts)


def read_head(sock: socket.socket) -> bytes:
    """The request line and headers (up to the blank line), or what came before EOF."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(65536)
        if not data:
            break
        head += data
    return head


Handler = Callable[[socket.socket, bytes, threading.Event], None]


class RawServer:
    """Calls ``handle(sock, request_head, stopping)`` for each connection, in a thread.
    ``heads`` keeps every request head received, in order."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.heads: list[bytes] = []
        self.stopping = threading.Event()
        outer = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                try:
                    sock.settimeout(10)
                    head = read_head(sock)
                    outer.heads.append(head)
                    outer.handle(sock, head, outer.stopping)
                except OSError:
                    pass  # the client hung up, as it should

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._serving: Serving | None = None
        port = self._server.server_address[1]
        self.address = f"127.0.0.1:{port}"
        self.base_url = f"http://{self.address}"

    def start(self) -> RawServer:
        self._serving = Serving(self._server)
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._serving is not None:
            self._serving.stop()
        else:
            self._server.server_close()


def drip_body(interval: float) -> Handler:
    """A 200 with chunked JSON whose body comes one byte every ``interval`` seconds,
    forever: each read gets its byte well inside any per-read timeout."""

    def handle(sock: socket.socket, head: bytes, stopping: threading.Event) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
        while not stopping.wait(interval):
            sock.sendall(b"1\r\n \r\n")

    return handle


def drip_headers(interval: float) -> Handler:
    """A status line, then a header byte every ``interval`` seconds, forever."""

    def handle(sock: socket.socket, head: bytes, stopping: threading.Event) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not stopping.wait(interval):
            sock.sendall(b"a")

    return handle
