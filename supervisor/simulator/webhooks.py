"""Webhooks: WAHA-shaped ``session.status`` events, posted to one URL, with retries and faults.

:class:`WebhookHub` (thread-safe, owned by the :class:`~.simulator.Simulator`) turns each
status change into an event: its ``evt_<ULID>`` id, its timestamp and its body are fixed
when the change happens, and the webhook faults are drawn then, from the simulator's
seeded random source. Events wait in a bounded queue (the oldest is dropped, and counted,
when it is full). Every delivery attempt is kept in the webhook log.

:class:`Dispatcher` (run by :class:`~.server.SimulatorServer` on the server's own event
loop) takes events from the queue and posts them (:mod:`.hookclient`), a bounded number
at a time (one keep-alive connection each), signing each body with its own HMAC code
(``hmac`` and ``hashlib``), and retries failed deliveries (a non-2xx answer or a
transport error) as WAHA does. At most one attempt per session is in flight, so that a
session's events arrive in order (unless the ``reorder`` fault says otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from . import render
from .clock import Clock
from .faults import WebhookFaults, WebhookSettings
from .hookclient import Connection, PostError

QUEUE_SIZE: Final = 100_000
LOG_SIZE: Final = 100_000
CONCURRENCY: Final = 32
TIMEOUT: Final = 5.0
HISTORY: Final = 5
"""How many statuses ``payload.statuses`` carries (the new one last)."""
REORDER_HOLD: Final = 1.0
"""Seconds a ``reorder`` event waits for the next event of its session before it goes
alone."""
EVENT: Final = "session.status"
ENGINE: Final = "GOWS"
ENVIRONMENT: Final = {"version": "2025.x-sim", "engine": ENGINE, "tier": "PLUS"}
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_HEALTHY: Final = frozenset({"WORKING", "CONNECTED"})

Random = Callable[[], float]


def ulid(ms: int, randomness: bytes | None = None) -> str:
    """A 26-character ULID (Crockford base32): 48 bits of milliseconds, 80 random bits."""
    rand = randomness if randomness is not None else secrets.token_bytes(10)
    value = (ms & (2**48 - 1)) << 80 | int.from_bytes(rand[:10], "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def event_id(ms: int) -> str:
    return f"evt_{ulid(ms)}"


def signature(key: str, body: bytes, algorithm: str) -> str:
    """The hex HMAC of ``body`` with ``key``, as ``X-Webhook-Hmac`` carries it."""
    return hmac.new(key.encode(), body, getattr(hashlib, algorithm)).hexdigest()


def envelope(
    *,
    evt: str,
    ms: int,
    session: str,
    status: str,
    statuses: Iterable[tuple[str, int]],
    phone: str,
    push_name: str,
) -> dict[str, Any]:
    """WAHA's envelope of a ``session.status`` event (``me`` only while logged in)."""
    body: dict[str, Any] = {
        "id": evt,
        "timestamp": ms,
        "event": EVENT,
        "session": session,
        "metadata": {},
    }
    if status.upper() in _HEALTHY:
        digits = "".join(c for c in phone if c.isdigit())
        body["me"] = {"id": f"{digits}@c.us", "pushName": push_name}
    body["payload"] = {
        "status": status,
        "statuses": [{"status": s, "timestamp": t} for s, t in statuses],
    }
    body["engine"] = ENGINE
    body["environment"] = dict(ENVIRONMENT)
    return body


def legacy(session: str, status: str) -> dict[str, Any]:
    """The older form: ``payload`` is ``{name, status}``."""
    return {"event": EVENT, "session": session, "payload": {"name": session, "status": status}}


@dataclass(slots=True)
class Outgoing:
    """One event on its way: the body is fixed, the attempts count up."""

    evt: str
    session: str
    status: str
    body: bytes
    generation: int
    fault: str | None = None
    bad_signature: bool = False
    delay: float = 0.0
    attempt: int = 0

    def copy(self, fault: str) -> Outgoing:
        return Outgoing(self.evt, self.session, self.status, self.body, self.generation,
                        fault, self.bad_signature, self.delay)


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """One delivery attempt (or a dropped event: ``attempt`` 0, never sent).

    ``sent_wall`` and ``sent_monotonic`` are when the attempt began (the simulator's
    clocks); ``http_status`` the receiver's answer, or ``error`` the transport error's
    name; ``fault`` the webhook fault that shaped the event (``drop``, ``duplicate``,
    ``delay``, ``reorder``, ``bad_signature``) or None; ``seq`` counts from 1.
    """

    seq: int
    id: str
    session: str
    status: str
    attempt: int
    sent_wall: float | None
    sent_monotonic: float | None
    http_status: int | None
    error: str | None
    fault: str | None
    duration: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Held:
    item: Outgoing
    since: float


@dataclass
class _Counters:
    events: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    given_up: int = 0
    overflowed: int = 0
    by_fault: Counter[str] = field(default_factory=Counter)


class WebhookHub:
    """Events, their queue and the webhook log, behind one lock."""

    def __init__(self, clock: Clock, settings: WebhookSettings, *,
                 queue_size: int = QUEUE_SIZE, log_size: int = LOG_SIZE) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._settings = settings
        self._queue: deque[Outgoing] = deque()
        self._queue_size = queue_size
        self._held: dict[str, _Held] = {}
        # One attempt at a time per session, in order: a session's later events wait
        # (parked) while one of its attempts is in flight.
        self._busy: set[str] = set()
        self._parked: dict[str, deque[Outgoing]] = {}
        self._log: deque[WebhookRecord] = deque(maxlen=log_size)
        self._seq = 0
        self._counters = _Counters()
        self._generation = 0
        self._wake: Callable[[], None] | None = None

    # -- settings -------------------------------------------------------------------

    @property
    def settings(self) -> WebhookSettings:
        return self._settings

    @property
    def enabled(self) -> bool:
        """Whether events are made at all (a URL is set)."""
        return self._settings.url is not None

    @property
    def generation(self) -> int:
        return self._generation

    def configure(self, settings: WebhookSettings) -> None:
        with self._lock:
            self._settings = settings
            if settings.url is None:  # nothing more goes out
                self._queue.clear()
                self._held.clear()
                self._parked.clear()
                self._generation += 1

    def reset(self, settings: WebhookSettings) -> None:
        """Back to ``settings`` with an empty queue and log; retries under way are dropped."""
        with self._lock:
            self._settings = settings
            self._queue.clear()
            self._held.clear()
            self._parked.clear()
            self._log.clear()
            self._counters = _Counters()
            self._generation += 1

    def attach(self, wake: Callable[[], None] | None) -> None:
        """``wake`` is called (from any thread) whenever an event is queued."""
        self._wake = wake

    # -- making events ----------------------------------------------------------------

    def body(self, *, evt: str, ms: int, session: str, status: str,
             statuses: Iterable[tuple[str, int]], phone: str, push_name: str) -> bytes:
        data = (legacy(session, status) if self._settings.legacy else
                envelope(evt=evt, ms=ms, session=session, status=status, statuses=statuses,
                         phone=phone, push_name=push_name))
        return render.dumps(data).encode()

    def emit(self, item: Outgoing, faults: WebhookFaults, draw: Random) -> None:
        """Queue a new event, after drawing its faults (in a fixed order, and only those
        with a non-zero probability, so that without webhook faults nothing is drawn)."""

        def hit(p: float) -> bool:
            return p > 0 and draw() < p

        dropped = hit(faults.drop)
        duplicate = not dropped and hit(faults.duplicate)
        delayed = not dropped and hit(faults.delay.rate)
        reorder = not dropped and hit(faults.reorder)
        item.bad_signature = not dropped and hit(faults.bad_signature)
        with self._lock:
            self._counters.events += 1
            if dropped:
                self._count_fault("drop")
                self._append(item.evt, item.session, item.status, 0, None, None, None, None,
                             "drop", None)
                return
            held = self._held.pop(item.session, None)
            reorder = reorder and held is None  # one that waits already: this one passes it
            for name, on in (("delay", delayed), ("reorder", reorder),
                             ("bad_signature", item.bad_signature)):
                if on:
                    self._count_fault(name)
                    item.fault = item.fault or name
            if delayed:
                item.delay = faults.delay.seconds
            ready = [] if reorder else [item]
            if duplicate:
                self._count_fault("duplicate")
                ready.append(item.copy("duplicate"))
            if held is not None:  # the event it waited for: this one goes first
                ready.append(held.item)
            if reorder:
                self._held[item.session] = _Held(item, self._clock.monotonic())
            for one in ready:
                self._push(one)
        self._notify()

    def burst(self, items: Iterable[Outgoing]) -> int:
        """Queue ready-made events (no faults drawn); returns how many were queued."""
        count = 0
        with self._lock:
            for item in items:
                self._counters.events += 1
                if item.bad_signature:
                    self._count_fault("bad_signature")
                self._push(item)
                count += 1
        self._notify()
        return count

    def release_held(self, now: float | None = None) -> None:
        """Send alone the ``reorder`` events that waited ``REORDER_HOLD`` s in vain."""
        if not self._held:
            return
        now = self._clock.monotonic() if now is None else now
        with self._lock:
            stale = [k for k, h in self._held.items() if now - h.since >= REORDER_HOLD]
            for key in stale:
                self._push(self._held.pop(key).item)
        if stale:
            self._notify()

    def _push(self, item: Outgoing, *, front: bool = False) -> None:
        if len(self._queue) >= self._queue_size:
            self._queue.popleft()
            self._counters.overflowed += 1
        if front:
            self._queue.appendleft(item)
        else:
            self._queue.append(item)

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None:
            wake()

    def _count_fault(self, name: str) -> None:
        self._counters.by_fault[name] += 1

    # -- the dispatcher's side --------------------------------------------------------

    def take(self) -> Outgoing | None:
        """The next event to send, its session now busy until :meth:`done`."""
        with self._lock:
            while self._queue:
                item = self._queue.popleft()
                if item.session in self._busy:
                    self._parked.setdefault(item.session, deque()).append(item)
                    continue
                self._busy.add(item.session)
                return item
            return None

    def done(self, item: Outgoing) -> None:
        """``item`` (from :meth:`take`) is handled: its session's next event may go."""
        with self._lock:
            self._busy.discard(item.session)
            parked = self._parked.get(item.session)
            if not parked:
                return
            self._queue.appendleft(parked.popleft())
            if not parked:
                del self._parked[item.session]
        self._notify()

    def requeue(self, item: Outgoing) -> None:
        """Put back an event whose wait (a delay fault, a retry) is over; it goes first."""
        with self._lock:
            if item.generation != self._generation:
                return
            self._push(item, front=True)
        self._notify()

    def record(self, item: Outgoing, *, wall: float, monotonic: float,
               http_status: int | None, error: str | None, duration: float) -> None:
        with self._lock:
            self._counters.sent += 1
            if http_status is not None and 200 <= http_status < 300:
                self._counters.delivered += 1
            else:
                self._counters.failed += 1
            self._append(item.evt, item.session, item.status, item.attempt, wall, monotonic,
                         http_status, error, item.fault, duration)

    def gave_up(self) -> None:
        with self._lock:
            self._counters.given_up += 1

    def _append(self, evt: str, session: str, status: str, attempt: int, wall: float | None,
                monotonic: float | None, http_status: int | None, error: str | None,
                fault: str | None, duration: float | None) -> None:
        self._seq += 1
        self._log.append(WebhookRecord(self._seq, evt, session, status, attempt, wall,
                                       monotonic, http_status, error, fault, duration))

    # -- the log ----------------------------------------------------------------------

    def records(self, after: int | None = None) -> list[WebhookRecord]:
        with self._lock:
            return [r for r in self._log if after is None or r.seq > after]

    def clear(self) -> None:
        """Forget the log and zero the counters (sequence numbers keep counting)."""
        with self._lock:
            self._log.clear()
            self._counters = _Counters()

    def counters(self) -> dict[str, Any]:
        with self._lock:
            c = self._counters
            return {
                "enabled": self._settings.url is not None,
                "events": c.events,
                "sent": c.sent,
                "delivered": c.delivered,
                "failed": c.failed,
                "given_up": c.given_up,
                "dropped": c.by_fault["drop"],
                "duplicated": c.by_fault["duplicate"],
                "delayed": c.by_fault["delay"],
                "reordered": c.by_fault["reorder"],
                "bad_signature": c.by_fault["bad_signature"],
                "overflowed": c.overflowed,
                "queued": len(self._queue) + sum(len(p) for p in self._parked.values()),
                "held": len(self._held),
                "logged": len(self._log),
                "last_seq": self._seq,
            }


class Dispatcher:
    """Posts the hub's events from the running event loop until cancelled."""

    def __init__(self, hub: WebhookHub, clock: Clock, *, concurrency: int = CONCURRENCY,
                 timeout: float = TIMEOUT) -> None:
        self.hub = hub
        self.clock = clock
        self.concurrency = concurrency
        self.timeout = timeout
        self._ready: asyncio.Event | None = None
        self._pending: set[asyncio.TimerHandle] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ready = self._ready = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(ready.set)

        self.hub.attach(wake)
        connections = [Connection(self.timeout) for _ in range(self.concurrency)]
        tasks = [asyncio.create_task(self._worker(c, ready)) for c in connections]
        tasks.append(asyncio.create_task(self._release_held()))
        try:
            await asyncio.gather(*tasks)
        finally:
            self.hub.attach(None)
            for handle in self._pending:
                handle.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for connection in connections:
                connection.close()

    async def _release_held(self) -> None:
        while True:
            await asyncio.sleep(REORDER_HOLD / 10)
            self.hub.release_held()

    async def _worker(self, connection: Connection, ready: asyncio.Event) -> None:
        while True:
            item = self.hub.take()
            if item is None:
                ready.clear()
                item = self.hub.take()  # one more look: a wake may have come before clear
                if item is None:
                    await ready.wait()
                    continue
            try:
                if item.generation != self.hub.generation:
                    continue
                if item.attempt == 0 and item.delay > 0:
                    wait, item.delay = item.delay, 0.0
                    self._later(wait, item)
                    continue
                await self._deliver(connection, item)
            finally:
                self.hub.done(item)

    def _later(self, seconds: float, item: Outgoing) -> None:
        loop = asyncio.get_running_loop()

        def due() -> None:
            self._pending.discard(handle)
            self.hub.requeue(item)

        handle = loop.call_later(seconds, due)
        self._pending.add(handle)

    async def _deliver(self, connection: Connection, item: Outgoing) -> None:
        settings = self.hub.settings
        if settings.url is None:
            return
        item.attempt += 1
        body = item.body
        wall, start = self.clock.now(), self.clock.monotonic()
        headers = {
            "Content-Type": "application/json",
            "X-Webhook-Request-Id": secrets.token_hex(16),
            "X-Webhook-Timestamp": str(int(wall * 1000)),
        }
        if settings.hmac_key is not None or item.bad_signature:
            key = settings.hmac_key or ""
            if item.bad_signature:
                key += "-not-the-key"
            headers["X-Webhook-Hmac"] = signature(key, body, settings.hmac_algorithm)
            headers["X-Webhook-Hmac-Algorithm"] = settings.hmac_algorithm
        http_status: int | None = None
        error: str | None = None
        try:
            http_status = await connection.post(settings.url, body, headers)
        except PostError as exc:  # a short name, never the URL
            error = str(exc)
        self.hub.record(item, wall=wall, monotonic=start, http_status=http_status, error=error,
                        duration=max(0.0, self.clock.monotonic() - start))
        if http_status is not None and 200 <= http_status < 300:
            return
        retries = settings.retries
        if item.attempt >= retries.attempts:
            self.hub.gave_up()
            return
        self._later(retries.wait(item.attempt), item)
