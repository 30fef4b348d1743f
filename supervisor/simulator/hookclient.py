"""A small HTTP/1.1 client for posting webhooks: one keep-alive connection, asyncio streams.

The simulator must send events faster than the supervisor is asked to take them (2,000 a
second and more), on a machine of two cores. ``httpx.AsyncClient`` posts about 1,300 a
second there with 32 connections; these connections post above 15,000 (measured against
the same asyncio receiver), because a POST is a few writes and a read of the status line
and the headers. It speaks only what webhooks need: ``POST`` with a body, an answer with
``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the connection; ``https``
through :mod:`ssl`. No proxy is used, whatever the environment says. Failures raise
:class:`PostError` whose message is a short name (``ConnectError``, ``ConnectTimeout``,
``ReadTimeout``, ``WriteError``, ``RemoteProtocolError``), never the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 1024 * 1024  # an answer's body is read and thrown away; no more than this
_NO_BODY: Final = frozenset({204, 304})


class PostError(Exception):
    """A delivery attempt failed before an answer came; ``str()`` is its short name."""


@dataclass(frozen=True)
class Target:
    """Where a URL points: the connection's key and the request line's target."""

    host: str
    port: int
    tls: bool
    path: str
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Target:
        return _target(url)


@lru_cache(maxsize=64)
def _target(url: str) -> Target:
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    default = port == (443 if tls else 80)
    return Target(host, port, tls, path, shown if default else f"{shown}:{port}")


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One context for every connection (making one costs tens of milliseconds)."""
    return ssl.create_default_context()


class Connection:
    """One connection, opened on first use and kept alive while the server allows it."""

    def __init__(self, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self._tls_context = tls  # None: the system's trust store
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._to: Target | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body`` to ``url``; the answer's status code (raises :class:`PostError`)."""
        target = Target.parse(url)
        head = self._head(target, body, headers)
        for _ in range(2):
            reused = self._writer is not None and self._to == target
            if not reused:
                await self._open(target)
            try:
                return await asyncio.wait_for(self._exchange(head, body), self.timeout)
            except TimeoutError:
                self.close()
                raise PostError("ReadTimeout") from None
            except (ConnectionError, asyncio.IncompleteReadError, EOFError) as exc:
                self.close()
                if not reused:  # a fresh connection failed: that is the answer
                    raise PostError(_name(exc)) from None
                # A kept-alive connection the server had closed: once more, afresh.
            except PostError:
                self.close()
                raise
        raise PostError("RemoteProtocolError")

    def close(self) -> None:
        writer, self._reader, self._writer, self._to = self._writer, None, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    async def _open(self, target: Target) -> None:
        self.close()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    target.host, target.port,
                    ssl=(self._tls_context or _tls()) if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                    limit=MAX_HEAD),
                self.timeout)
        except TimeoutError:
            raise PostError("ConnectTimeout") from None
        except (OSError, ssl.SSLError):
            raise PostError("ConnectError") from None
        self._to = target

    @staticmethod
    def _head(target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}",
                 f"Content-Length: {len(body)}", "User-Agent: wasend-simulator",
                 "Accept: */*"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _exchange(self, head: bytes, body: bytes) -> int:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise BrokenPipeError
        try:
            writer.write(head + body)
            await writer.drain()
        except (ConnectionError, OSError):
            raise BrokenPipeError from None
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise PostError("RemoteProtocolError") from None
        status, version, fields = _parse_head(raw)
        keep = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
        if status in _NO_BODY or 100 <= status < 200:
            pass
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            await _read_chunked(reader)
        elif "content-length" in fields:
            try:
                length = int(fields["content-length"])
            except ValueError:
                raise PostError("RemoteProtocolError") from None
            if not 0 <= length <= MAX_BODY:
                raise PostError("RemoteProtocolError")
            await reader.readexactly(length)
        else:  # the body runs to the end of the connection
            await reader.read(MAX_BODY)
            keep = False
        if not keep:
            self.close()
        return status


def _parse_head(raw: bytes) -> tuple[int, str, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise PostError("RemoteProtocolError")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(code), version, fields


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise PostError("RemoteProtocolError") from None
        total += size
        if total > MAX_BODY:
            raise PostError("RemoteProtocolError")
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return
        await reader.readexactly(size + 2)


def _name(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return "RemoteProtocolError"
    return "WriteError" if isinstance(exc, BrokenPipeError) else "ReadError"
