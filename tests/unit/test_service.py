"""The service around the daemon: a reload swapped in while a poll that outlasted the
daemon's wait still runs, and what a stop then closes. On virtual time (tests/fakes.py)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.config.model import Settings
from supervisor.service import Service
from tests.fakes import ManualClock, MaxRandom, VirtualScheduler
from tests.waiting import until

KEY = "sk-service-test-key-0001"
LISTING = [{"uniqueSessionId": "a", "status": "WORKING", "sessionName": "Shop"}]


def settings(host: str, **values: object) -> Settings:
    return Settings(api_key=SecretStr(KEY), base_url=f"https://{host}",
                    state_path=Path(":memory:"), shutdown_grace=4, **values)  # type: ignore[arg-type]


class Held:
    """Every base URL's list; the first request is held until ``release`` (or forever)."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        if len(self.hosts) == 1:
            self.arrived.set()
            await self.release.wait()
        return httpx.Response(200, json=LISTING)


async def start(held: Held, clock: ManualClock) -> tuple[Service, asyncio.Task[int]]:
    service = Service.build(settings("a.example", poll_interval=3600), env={},
                            load=lambda: settings("b.example", poll_interval=3600),
                            scheduler=VirtualScheduler(clock), clock=clock, rng=MaxRandom(),
                            transport=httpx.MockTransport(held))
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(held.arrived.wait(), 5)
    return service, task


async def outlast_the_reloads_wait(service: Service, clock: ManualClock) -> None:
    """SIGHUP while the first poll is held; the reload waits shutdown_grace (4 s of the
    clock) for it, then goes on: the new runtime is swapped in beside the poll."""
    old = service.runtime
    service.daemon.handle_signal(signal.SIGHUP)
    end = clock.monotonic() + 4
    await until(lambda: end in clock.deadlines(), describe=clock.deadlines)
    clock.advance(4)
    await until(lambda: service.runtime is not old, describe="not swapped")


async def test_the_old_client_is_closed_when_the_poll_that_outlasted_the_wait_ends() -> None:
    clock, held = ManualClock(), Held()
    service, task = await start(held, clock)
    old = service.runtime
    try:
        with capture_logs() as events:
            await outlast_the_reloads_wait(service, clock)
            await until(lambda: any(e["event"] == "config.reloaded" for e in events))
        assert not old.client.closed  # the poll in flight still uses it
        held.release.set()
        await until(lambda: service.daemon.polls == 1)
        await until(lambda: old.client.closed, describe="the old client is open")
        assert held.hosts == ["a.example"]
    finally:
        held.release.set()
        service.daemon.request_stop()
        assert await asyncio.wait_for(task, 5) == 0
        await service.aclose()


async def test_a_stop_while_the_old_client_waits_to_close_closes_it() -> None:
    clock, held = ManualClock(), Held()
    service, task = await start(held, clock)
    old = service.runtime
    await outlast_the_reloads_wait(service, clock)
    service.daemon.request_stop()  # the held poll is cancelled at the end of the grace
    end = clock.monotonic() + 4
    await until(lambda: end in clock.deadlines(), describe=clock.deadlines)
    clock.advance(4)
    assert await asyncio.wait_for(task, 5) == 0
    await service.aclose()
    assert old.client.closed and service.runtime.client.closed
