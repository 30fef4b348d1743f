"""The webhook sender's HTTP/1.1 client against scripted servers on 127.0.0.1: the ways an
answer can end, kept-alive connections, a server that closes one, timeouts, TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from supervisor.simulator.hookclient import Connection, PostError, Target

Answer = Callable[[bytes], bytes | None]  # the request's head: the bytes to send (None: close)


class Scripted:
    """A server that answers each request with what ``answer`` says, and counts
    connections and requests."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.close_after = False  # close the connection after each answer

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                out = self.answer(head)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer, tls: ssl.SSLContext | None = None) -> Scripted:
        scripted = Scripted(answer)
        scripted.server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0, ssl=tls)
        servers.append(scripted.server)
        return scripted

    yield start
    for server in servers:
        server.close()


Serve = Callable[..., Awaitable[Scripted]]
OK_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


async def test_a_kept_alive_connection_serves_many_posts(serve: Serve) -> None:
    server = await serve(lambda head: OK_LENGTH)
    connection = Connection(5.0)
    url = f"http://127.0.0.1:{server.port}/hook?x=1"
    for n in range(3):
        assert await connection.post(url, b'{"n": %d}' % n, {"X-Webhook-Hmac": "ab"}) == 200
    connection.close()
    assert server.connections == 1
    assert server.bodies == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    first = server.heads[0].decode()
    assert first.startswith("POST /hook?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in first and "X-Webhook-Hmac: ab\r\n" in first


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 500 Oops\r\nContent-Length: 4\r\n\r\noops",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
])
async def test_each_way_an_answer_ends(serve: Serve, answer: bytes) -> None:
    server = await serve(lambda head: answer)
    connection = Connection(5.0)
    url = f"http://127.0.0.1:{server.port}/"
    code = int(answer.split(b" ")[1])
    assert await connection.post(url, b"{}", {}) == code
    assert await connection.post(url, b"{}", {}) == code
    connection.close()
    closes = b"HTTP/1.0" in answer or b"close" in answer
    assert server.connections == (2 if closes else 1)


async def test_an_answer_to_the_end_of_the_connection(
    serve: Serve,
) -> None:
    server = await serve(lambda head: b"HTTP/1.1 200 OK\r\n\r\nthe body runs to the end")
    server.close_after = True
    connection = Connection(5.0)
    url = f"http://127.0.0.1:{server.port}/"
    assert await connection.post(url, b"{}", {}) == 200
    assert await connection.post(url, b"{}", {}) == 200
    assert server.connections == 2


async def test_a_closed_kept_alive_connection_is_opened_again(serve: Serve) -> None:
    count = 0

    def answer(head: bytes) -> bytes | None:
        nonlocal count
        count += 1
        return None if count == 2 else OK_LENGTH  # the second request: closed, unanswered

    server = await serve(answer)
    connection = Connection(5.0)
    url = f"http://127.0.0.1:{server.port}/"
    assert await connection.post(url, b"{}", {}) == 200
    assert await connection.post(url, b"{}", {}) == 200  # sent again on a new connection
    assert server.connections == 2 and count == 3
    connection.close()


async def test_failures_have_short_names_without_the_url(serve: Serve) -> None:
    silent = await serve(lambda head: b"")  # reads the request, never answers
    with pytest.raises(PostError) as refused:
        await Connection(1.0).post("http://127.0.0.1:9/secret-path", b"{}", {})
    assert str(refused.value) == "ConnectError"
    with pytest.raises(PostError, match=r"^ReadTimeout$"):
        await Connection(0.2).post(f"http://127.0.0.1:{silent.port}/secret-path", b"{}", {})
    garbage = await serve(lambda head: b"SPDY/9 what\r\n\r\n")
    with pytest.raises(PostError, match=r"^RemoteProtocolError$"):
        await Connection(1.0).post(f"http://127.0.0.1:{garbage.port}/", b"{}", {})
    closing = await serve(lambda head: None)
    with pytest.raises(PostError, match=r"^RemoteProtocolError$"):
        await Connection(1.0).post(f"http://127.0.0.1:{closing.port}/", b"{}", {})


def test_targets() -> None:
    assert Target.parse("https://hooks.example/a/b?c=d") == Target(
        "hooks.example", 443, True, "/a/b?c=d", "hooks.example")
    assert Target.parse("http://[::1]:8080") == Target("::1", 8080, False, "/", "[::1]:8080")


async def test_https_verifies_the_certificate(
    serve: Serve, tmp_path: Path,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server = await serve(lambda head: OK_LENGTH, server_tls)
    url = f"https://127.0.0.1:{server.port}/hook"
    with pytest.raises(PostError, match=r"^ConnectError$"):  # not in the system's trust store
        await Connection(5.0).post(url, b"{}", {})
    trusting = ssl.create_default_context(cafile=str(cert))
    connection = Connection(5.0, trusting)
    assert await connection.post(url, b"{}", {}) == 200
    connection.close()
