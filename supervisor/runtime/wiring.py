"""Builds the running parts from validated settings: gate, client, store, supervisor.

One function, used by ``run``, ``check`` and the demo, so that every mode is put
together the same way. Nothing here talks to the network until a poll is made. The
store is the SQLite state file at ``settings.state_location()`` (``:memory:`` keeps it
in memory); opening it may raise ``StateError``.

The rate gate shares its pause and budget through that store, under a fingerprint of
the API key (``supervisor.api.ratelimit.key_fingerprint``), so that every process on the
same file and key honours a ``Retry-After`` any of them received.
"""

from __future__ import annotations

import contextlib
import random
from functools import partial

import httpx
import msgspec
import structlog
from pydantic import SecretStr

from supervisor.api.client import Observer, WasendClient
from supervisor.api.ratelimit import RateGate, key_fingerprint
from supervisor.clock import Clock, SystemClock
from supervisor.config.settings import Settings
from supervisor.domain import events as ev
from supervisor.domain.secrets import Secrets
from supervisor.runtime.cycle import Supervisor
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import StateError, Store

log = structlog.get_logger("supervisor.wiring")


class Runtime(msgspec.Struct):
    settings: Settings
    client: WasendClient
    gate: RateGate
    store: Store
    supervisor: Supervisor

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.supervisor.poll_interval is not None:  # a daemon: status says it stopped
            with contextlib.suppress(StateError):  # closing goes on; its heartbeat ages
                await self.store.run(partial(self.store.retire, "run",
                                             self.supervisor.clock.now()))
        self.store.close()

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
            self.client.set_api_key(key)  # among the process's secrets from now on
            self.gate.share(self.store, key_fingerprint(key.get_secret_value()))
            if supervisor.auth_blocked_until is not None:  # a new key: try it at the next poll
                supervisor.auth_blocked_until = supervisor.clock.monotonic()
        supervisor.policy = settings.policy()
        supervisor.configured = tuple(dict.fromkeys(settings.sessions))
        supervisor.get_concurrency = settings.get_concurrency
        supervisor.auth_retry_interval = settings.auth_retry_interval
        supervisor.key_reader = lambda: read_key(settings)
        warn_key_exposure(settings)
        if supervisor.poll_interval is not None:  # None: check, which does not back off
            supervisor.poll_interval = settings.poll_interval
        supervisor.in_flight_grace = settings.in_flight_grace
        if supervisor.configured:
            keep = set(supervisor.configured)
            for record in self.store.records():
                if record.session_id not in keep:
                    self.store.delete(record.session_id)
        self.settings = settings


def read_key(settings: Settings) -> SecretStr:
    """The API key, from wherever the settings found it, re-read now (a key file is
    read without ever blocking: see ``settings._read_key``)."""
    source = settings.api_key_source()
    if source is None:
        raise LookupError("no API key configured")
    key = source.read()  # the cycle hands it to the client: a secret from then on
    warn_key_exposure(settings)
    return key


def warn_key_exposure(settings: Settings) -> None:
    """One ``api.key_file_permissions`` warning when the key file can be read by others
    than the supervisor: at start, after a reload, and when a re-read finds its mode
    changed (not at every re-read)."""
    source = settings.api_key_source()
    found = None if source is None else source.unreported_exposure()
    if source is None or found is None:
        return
    mode, who = found
    log.warning(ev.API_KEY_FILE_PERMISSIONS, path=str(source.path), mode=f"{mode:04o}",
                readable_by=who, hint=f"chmod 600 {source.path}")


def open_store(settings: Settings, clock: Clock | None = None) -> SqliteStore:
    """The state file the settings name, opened and migrated (raises StateError)."""
    return SqliteStore.open(
        settings.state_location(),
        clock=clock,
        history_max_age=settings.history_max_age,
        history_max_rows=settings.history_max_rows,
    )


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    store: Store | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    observer: Observer | None = None,
    secrets: Secrets | None = None,
) -> Runtime:
    """The running parts for ``settings``. ``secrets`` are the process's, as handed to
    the log configuration: the client adds its key to them."""
    clock = clock or SystemClock()
    policy = settings.policy()
    key = settings.api_key
    if key is None:
        raise LookupError("no API key configured")
    warn_key_exposure(settings)
    if store is None:
        store = open_store(settings, clock)
    gate = RateGate(
        clock,
        rate_limit=settings.rate_limit,
        max_retry_after=settings.max_retry_after,
        store=store,
        key=key_fingerprint(key.get_secret_value()),
    )
    client = WasendClient(
        settings.base_url,
        key,
        timeout=settings.request_timeout,
        gate=gate,
        clock=clock,
        transport=transport,
        observer=observer,
        secrets=secrets,
    )
    supervisor = Supervisor(
        client,
        store,
        policy,
        clock,
        rng or random.Random(),
        sessions=settings.sessions,
        get_concurrency=settings.get_concurrency,
        auth_retry_interval=settings.auth_retry_interval,
        key_reader=lambda: read_key(settings),
        poll_interval=settings.poll_interval,
        in_flight_grace=settings.in_flight_grace,
    )
    gate.on_pause = lambda until: _waiting(supervisor, until)
    return Runtime(settings, client, gate, supervisor.store, supervisor)


async def _waiting(supervisor: Supervisor, until: float) -> None:
    """A daemon about to wait out a pause says so in its heartbeat (``status`` then sees
    it at work, not gone); the wait goes on if the state file cannot say it."""
    if supervisor.poll_interval is not None:
        with contextlib.suppress(StateError):
            await supervisor.store.run(partial(supervisor.store.waiting, "run", until))
