"""End-to-end fixtures: the simulator over real HTTP on 127.0.0.1, and the real
supervisor (client, gate, cycle, daemon) built from settings against it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from supervisor.config.model import BackoffSettings, Settings
from supervisor.runtime.daemon import Daemon
from supervisor.runtime.wiring import Runtime, build
from supervisor.service import Service
from supervisor.simulator import SimulatorServer, parse_scenario
from tests.fakes import MaxRandom

API_KEY = "sk-E2E-RECOGNISABLE-KEY-5f3a9c"  # grep-able: it must appear in no log line
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

SimFactory = Callable[..., SimulatorServer]


@pytest.fixture
def simulator() -> Iterator[SimFactory]:
    """Start simulators from scenario dicts; every one is stopped at the end."""
    started: list[SimulatorServer] = []

    def start(scenario: dict[str, Any] | None = None, **kw: Any) -> SimulatorServer:
        data = {"start_delay": 0.2, "seed": 1, **(scenario or {})}
        server = SimulatorServer(scenario=parse_scenario(data, "test"), api_key=API_KEY, **kw)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def settings_for(server: SimulatorServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": SecretStr(server.api_key),
        "poll_interval": 0.1,
        "poll_jitter": 0.0,
        "request_timeout": 2.0,
        "backoff": BackoffSettings(initial=0.2, max=1.0, multiplier=2.0),
        "max_restarts": 3,
        "restart_window": 60.0,
        "stable_after": 5.0,
        "starting_timeout": 2.0,
        "rate_limit": 50.0,
        "max_retry_after": 10.0,
        "shutdown_grace": 2.0,
        "state_path": ":memory:",
    }
    values.update(overrides)
    return Settings(**values)


def runtime_for(server: SimulatorServer, **overrides: Any) -> Runtime:
    return build(settings_for(server, **overrides), rng=MaxRandom())


class Running:
    """A daemon running in the test's event loop; stop() ends it and returns its status."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.daemon = Daemon(runtime.supervisor, poll_interval=settings.poll_interval,
                             shutdown_grace=settings.shutdown_grace)
        self.task: asyncio.Task[int] = asyncio.create_task(self.daemon.run())

    async def stop(self) -> int:
        self.daemon.request_stop("test")
        status = await asyncio.wait_for(self.task, 10)
        await self.runtime.aclose()
        return status


class Served:
    """A Service (daemon, listener, hooks) built from ``settings_for(server, **overrides)``
    (a listener on a free loopback port unless told otherwise) and run in the test's
    event loop: ``served = await Served(server, ...).start()``; ``stop()`` ends it and
    says its exit status. ``reloadable``: a SIGHUP loads the same settings again."""

    def __init__(self, server: SimulatorServer, env: dict[str, str] | None = None, *,
                 reloadable: bool = False, **overrides: Any) -> None:
        overrides.setdefault("http_listen", "127.0.0.1:0")
        settings = settings_for(server, **overrides)
        self.service = Service.build(settings, env=env or {}, rng=MaxRandom(),
                                     load=(lambda: settings) if reloadable else None)
        self.http = httpx.AsyncClient(trust_env=False, timeout=5, follow_redirects=False)
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> Served:
        await self.service.open()
        self.task = asyncio.create_task(self.service.run())
        return self

    def url(self, path: str, *, listener: Any = None) -> str:
        listener = listener or self.service.listener
        assert listener is not None
        host, port = listener.address
        return f"http://{host}:{port}{path}"

    async def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        return await self.http.get(self.url(path), headers=headers)

    async def status(self, path: str) -> int:
        return (await self.get(path)).status_code

    async def stop(self) -> int:
        assert self.task is not None
        self.service.daemon.request_stop("test")
        status = await asyncio.wait_for(self.task, 10)
        await self.service.aclose()
        await self.http.aclose()
        return status


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30,
        ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m supervisor`` as a user would, with a clean environment."""
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                "HOME": os.environ.get("HOME", "/tmp")}
    full_env.update(env or {})
    if not {"WASEND_SUPERVISOR_STATE_PATH", "STATE_DIRECTORY", "XDG_STATE_HOME",
            "WASEND_SUPERVISOR_STATE_URL"} & set(full_env):
        full_env["WASEND_SUPERVISOR_STATE_PATH"] = ":memory:"  # each run starts afresh
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT, check=False,
    )
