"""Fault-injection fixtures: the simulator (from the end-to-end fixtures), a server that
answers whatever garbage a test asks for over real HTTP, settings for either, and a
check that the API key was written to no file a test left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from supervisor.config.model import BackoffSettings, Settings
from supervisor.simulator import SimulatorServer
from tests.e2e.conftest import API_KEY, ROOT, simulator

__all__ = ["GarbageServer", "Reply", "settings_at", "simulator"]  # simulator: the fixture

KEY_FILE_SUFFIX = ".key"  # files that hold a key on purpose


@pytest.fixture(autouse=True)
def _key_written_nowhere(tmp_path: Path) -> Iterator[None]:
    """After each test: no file it left in tmp_path (state files, their WAL, logs)
    holds the API key, except key files themselves."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.name.endswith(KEY_FILE_SUFFIX):
            assert API_KEY.encode() not in path.read_bytes(), f"the API key is in {path}"


def settings_at(base_url: str, **overrides: Any) -> Settings:
    """Fast settings against a local server, state in memory unless told otherwise."""
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": SecretStr(API_KEY),
        "poll_interval": 0.1,
        "poll_jitter": 0.0,
        "request_timeout": 2.0,
        "backoff": BackoffSettings(initial=0.2, max=1.0, multiplier=2.0),
        "max_restarts": 5,
        "restart_window": 60.0,
        "stable_after": 5.0,
        "starting_timeout": 2.0,
        "rate_limit": 50.0,
        "max_retry_after": 2.0,
        "shutdown_grace": 2.0,
        "state_path": ":memory:",
    }
    values.update(overrides)
    return Settings(**values)


# ---------------------------------------------------------------- a garbage server


@dataclass
class Reply:
    """What the garbage server answers: a status, headers and a body (bytes, or chunks
    sent with chunked transfer encoding)."""

    status: int = 200
    body: bytes | list[bytes] = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    at: float  # time.monotonic()


_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class GarbageServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 in the test's event loop. ``answer(method,
    path)`` gives the reply to each request; every request is remembered in ``seen``."""

    def __init__(self, answer: Callable[[str, str], Reply]) -> None:
        self.answer = answer
        self.seen: list[Seen] = []
        self.base_url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> GarbageServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            self.seen.append(Seen(method, path, time.monotonic()))
            reply = self.answer(method, path)
            status_line = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Whatever')}"
            headers = {**reply.headers, "Connection": "close"}
            if isinstance(reply.body, list):
                headers["Transfer-Encoding"] = "chunked"
            else:
                headers["Content-Length"] = str(len(reply.body))
            lines = [status_line, *(f"{k}: {v}" for k, v in headers.items()), "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            if isinstance(reply.body, list):
                for chunk in reply.body:
                    writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(reply.body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client hung up (as it should, past its read cap)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest.fixture
async def garbage_server() -> AsyncIterator[Callable[[Callable[[str, str], Reply]], Any]]:
    servers: list[GarbageServer] = []

    async def start(answer: Callable[[str, str], Reply]) -> GarbageServer:
        server = await GarbageServer(answer).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def start_run(server: SimulatorServer, state: Path, log: Path,
              **settings: str) -> subprocess.Popen[bytes]:
    """A real ``run`` (``python -m supervisor run``) against ``server`` on the state file
    ``state``, polling every 0.1 s, logging JSON at debug level to ``log``; ``settings``
    are further ``WASEND_SUPERVISOR_<NAME>`` values (``BACKOFF__MAX="1"``, ...)."""
    env = {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(state.parent),
        "WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
        "WASEND_SUPERVISOR_STATE_PATH": str(state),
        "WASEND_SUPERVISOR_POLL_INTERVAL": "0.1", "WASEND_SUPERVISOR_POLL_JITTER": "0",
        "WASEND_SUPERVISOR_REQUEST_TIMEOUT": "2", "WASEND_SUPERVISOR_RATE_LIMIT": "50",
        "WASEND_SUPERVISOR_STARTING_TIMEOUT": "2",
        "WASEND_SUPERVISOR_LOG_FORMAT": "json", "WASEND_SUPERVISOR_LOG_LEVEL": "debug",
        **{f"WASEND_SUPERVISOR_{name}": value for name, value in settings.items()},
    }
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "supervisor", "run"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
