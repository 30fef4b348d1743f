"""Builds the running parts from validated settings: gate, client, store, supervisor.

One function, used by ``run``, ``check`` and the demo, so that every mode is put
together the same way. Nothing here talks to the network until a poll is made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from supervisor import logs
from supervisor.client import Observer, WasendClient
from supervisor.clock import Clock, SystemClock
from supervisor.cycle import Supervisor
from supervisor.ratelimit import RateGate
from supervisor.settings import Settings
from supervisor.store import MemoryStore, Store


@dataclass(slots=True)
class Runtime:
    settings: Settings
    client: WasendClient
    gate: RateGate
    store: Store
    supervisor: Supervisor

    async def aclose(self) -> None:
        await self.client.aclose()

    def reconfigure(self, settings: Settings) -> None:
        """Apply reloaded settings to the running parts, keeping every record and the
        gate's pause. Sessions no longer configured are forgotten (their records dropped)."""
        self.gate.set_rate_limit(settings.rate_limit)
        self.gate.set_max_retry_after(settings.max_retry_after)
        self.client.configure(base_url=settings.base_url, timeout=settings.request_timeout)
        supervisor = self.supervisor
        key = settings.api_key
        old_key = self.settings.api_key
        if key is not None and (old_key is None
                                or key.get_secret_value() != old_key.get_secret_value()):
            logs.register_secret(key.get_secret_value())
            self.client.set_api_key(key)
            if supervisor.auth_blocked_until is not None:  # a new key: try it at the next poll
                supervisor.auth_blocked_until = supervisor.clock.monotonic()
        supervisor.policy = settings.policy()
        supervisor.configured = tuple(dict.fromkeys(settings.sessions))
        supervisor.get_concurrency = settings.get_concurrency
        supervisor.auth_retry_interval = settings.auth_retry_interval
        supervisor.key_reader = lambda: read_key(settings)
        if supervisor.configured:
            keep = set(supervisor.configured)
            for record in self.store.records():
                if record.session_id not in keep:
                    self.store.delete(record.session_id)
        self.settings = settings


def read_key(settings: Settings) -> SecretStr:
    """The API key, from wherever the settings found it, re-read now."""
    source = settings.api_key_source()
    if source is None:
        raise LookupError("no API key configured")
    key = source.read()
    logs.register_secret(key.get_secret_value())
    return key


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    store: Store | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    observer: Observer | None = None,
) -> Runtime:
    clock = clock or SystemClock()
    policy = settings.policy()
    gate = RateGate(
        clock,
        rate_limit=settings.rate_limit,
        max_retry_after=settings.max_retry_after,
    )
    key = settings.api_key
    if key is None:
        raise LookupError("no API key configured")
    logs.register_secret(key.get_secret_value())
    client = WasendClient(
        settings.base_url,
        key,
        timeout=settings.request_timeout,
        gate=gate,
        clock=clock,
        transport=transport,
        observer=observer,
    )
    supervisor = Supervisor(
        client,
        store if store is not None else MemoryStore(),
        policy,
        clock,
        rng or random.Random(),
        sessions=settings.sessions,
        get_concurrency=settings.get_concurrency,
        auth_retry_interval=settings.auth_retry_interval,
        key_reader=lambda: read_key(settings),
    )
    return Runtime(settings, client, gate, supervisor.store, supervisor)
