"""Builds the running parts from validated settings: gate, client, store, supervisor.

One function, used by ``run``, ``check`` and the demo, so that every mode is put
together the same way; a reload (SIGHUP) is the same function again (``rebuild``), handed
what must survive, so that no running part is ever changed field by field. Nothing here
talks to the network until a poll is made, but for the state in PostgreSQL. The store is
the PostgreSQL database of ``settings.state_dsn()`` when set, else the SQLite state file
at ``settings.state_location()`` (``:memory:`` keeps it in memory); opening it may raise
``StateError``.

The rate gate shares its pause and budget through that store, under a fingerprint of
the API key (``supervisor.api.ratelimit.key_fingerprint``), so that every process on the
same file and key honours a ``Retry-After`` any of them received.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

import httpx
import msgspec
import structlog
from pydantic import SecretStr

from supervisor.api.client import Observer, WasendClient
from supervisor.api.ratelimit import GateState, RateGate, key_fingerprint
from supervisor.clock import Clock, SystemClock
from supervisor.config.model import Settings
from supervisor.domain import events as ev
from supervisor.domain.models import Event
from supervisor.domain.secrets import Secrets
from supervisor.runtime.cycle import Continuity, Supervisor
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import StateError, Store

if TYPE_CHECKING:
    from supervisor.state.postgres import PostgresStore

log = structlog.get_logger("supervisor.wiring")


class Runtime(msgspec.Struct):
    """The running parts, built by ``build`` from one ``Settings``; a reload builds a new
    one (``rebuild``) instead of changing these."""

    settings: Settings
    client: WasendClient
    gate: RateGate
    store: Store
    supervisor: Supervisor
    # What ``build`` was handed besides the settings, for ``rebuild`` to hand on.
    clock: Clock
    rng: random.Random
    transport: httpx.AsyncBaseTransport | None = None
    observer: Observer | None = None
    secrets: Secrets | None = None
    replica: str = ""  # among replicas (``ha``), this one's name; "" none

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.supervisor.poll_interval is not None:  # a daemon: status says it stopped
            with contextlib.suppress(StateError):  # closing goes on; its heartbeat ages
                await self.store.run(partial(self.store.retire, "run",
                                             self.supervisor.clock.now()))
        self.store.close()

    async def forget_unconfigured(self) -> None:
        """Drop the records of sessions no longer configured (none when every session is
        supervised), on the store's worker thread."""
        keep = set(self.supervisor.configured)
        if not keep:
            return
        store = self.store

        def forget() -> None:
            for record in store.records():
                if record.session_id not in keep:
                    store.delete(record.session_id)

        await store.run(forget)


def rebuild(old: Runtime, settings: Settings) -> Runtime:
    """The runtime for reloaded settings, built by ``build`` as the first one was and
    handed what must survive: the same store (records, backoff, give-ups, the shared
    pause), the gate's state (its pause and counters, ``GateState``), the supervisor's
    continuity (auth block, poll backoff, last success) and its event observers, and the
    request observer. A new API key lifts an auth block (it is tried at the next poll);
    an unchanged one keeps it. Nothing of ``old`` changes: the caller swaps it for the
    new one between polls, then closes ``old.client``; ``forget_unconfigured`` drops the
    records of sessions no longer configured."""
    carried = old.supervisor.continuity()
    if _key_changed(old.settings, settings):
        carried = msgspec.structs.replace(carried, auth=carried.auth.new_key(old.clock.monotonic()))
    return build(
        settings,
        clock=old.clock,
        rng=old.rng,
        store=old.store,
        transport=old.transport,
        observer=old.observer,
        gate_state=old.gate.state(),
        carried=carried,
        observers=old.supervisor.observers,
        check=old.supervisor.poll_interval is None,
        max_wait=old.gate.max_wait,
        secrets=old.secrets,
        replica=old.replica,
        permit=old.gate.permit,
    )


def _key_changed(old: Settings, new: Settings) -> bool:
    if new.api_key is None:
        return False
    return old.api_key is None or (
        new.api_key.get_secret_value() != old.api_key.get_secret_value())


def read_key(settings: Settings) -> SecretStr:
    """The API key, from wherever the settings found it, re-read now (a key file is
    read without ever blocking: see ``config.key``)."""
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


def open_store(settings: Settings, clock: Clock | None = None) -> SqliteStore | PostgresStore:
    """The state the settings name, opened and migrated (raises StateError): the
    PostgreSQL database of ``state_url`` (psycopg is loaded only then), else the SQLite
    file of ``state_path``."""
    dsn = settings.state_dsn()
    if dsn is not None:
        from supervisor.state.postgres import PostgresStore  # noqa: PLC0415 (with state_url only)

        return PostgresStore.open(
            dsn.get_secret_value(),
            clock=clock,
            history_max_age=settings.history_max_age,
            history_max_rows=settings.history_max_rows,
            prepare=settings.state_prepared_statements,
        )
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
    gate_state: GateState | None = None,
    carried: Continuity | None = None,
    observers: Iterable[Callable[[Event], None]] = (),
    check: bool = False,
    max_wait: float | None = None,
    secrets: Secrets | None = None,
    replica: str = "",
    permit: Callable[[], None] | None = None,
) -> Runtime:
    """The running parts for ``settings``: for the first start, and (handed what must
    survive, see ``rebuild``) for a reload. ``check``: one pass, not a daemon (no poll
    backoff: ``--wait`` polls every second; its heartbeat says check); ``max_wait``: a
    longer Retry-After pause is refused, not waited out (``check --wait``). ``secrets``:
    the process's, as handed to the log configuration: the client adds its key to them.
    ``replica``: this replica's name among replicas (``ha``; its requests name it), whose
    gate asks ``permit`` (``Leadership.permit``) as each request leaves. A restart that
    another replica recorded as in flight is then not left to it: only the leader acts,
    and a replica that lost the lease sends nothing more."""
    clock = clock or SystemClock()
    rng = rng or random.Random()
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
        max_wait=max_wait,
        state=gate_state,
        permit=permit,
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
        replica=replica,
    )
    supervisor = Supervisor(
        client,
        store,
        policy,
        clock,
        rng,
        sessions=settings.sessions,
        get_concurrency=settings.get_concurrency,
        auth_retry_interval=settings.auth_retry_interval,
        key_reader=lambda: read_key(settings),
        poll_interval=None if check else settings.poll_interval,
        in_flight_grace=0.0 if replica else settings.in_flight_grace,
        carried=carried,
        observers=observers,
    )
    gate.on_pause = lambda until: _waiting(supervisor, until)
    return Runtime(settings, client, gate, store, supervisor, clock, rng, transport, observer,
                   secrets, replica)


async def _waiting(supervisor: Supervisor, until: float) -> None:
    """A daemon about to wait out a pause says so in its heartbeat (``status`` then sees
    it at work, not gone); the wait goes on if the state file cannot say it."""
    if supervisor.poll_interval is not None:
        with contextlib.suppress(StateError):
            await supervisor.store.run(partial(supervisor.store.waiting, "run", until))
