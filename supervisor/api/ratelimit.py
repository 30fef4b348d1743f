"""The rate gate: every request on the API key passes through one ``RateGate``.

Two rules, both about *when* a request may be sent:

* After a 429 the whole key pauses until the server's ``Retry-After`` has passed
  (capped at ``max_retry_after``; a missing or unusable value falls back to our own
  exponential backoff over consecutive 429s). Not one request leaves early.
* Our own budget: at most ``rate_limit`` requests in any one-second window, bursts
  included, so that a restart storm does not cause the 429s in the first place.

Both hold for every process on the key that shares a state file (``store``): the pause
is written to the store in wall-clock time (epoch seconds) when the 429 arrives, and
before each request the gate honours the later of its own pause and the stored one, so a
``check`` a second after another one's 429, or a daemon started again, waits too (a
stored pause is honoured for at most ``max_retry_after`` from now, whatever the clock
did). With a budget, each request's send time is counted in the store too, in one small
transaction, so the budget is shared by all of them. The store row is named by
``key_fingerprint(api_key)``, never by the key.

A state file that cannot be read or written stops requests (``StateError`` from
``acquire``: nothing is sent), as it stops the cycle; a 429's pause that cannot be
stored is still kept by this process.

A request may be sent as ``spare`` (``acquire(spare=True)``: a webhook's read): it goes only
while no other request of this process waits at the gate, so that reads asked for by a
flood of webhooks never hold up a poll's list or a restart by more than the one request
already let through.

``max_wait`` (``check`` builds its gate with its ``--wait``): a pause longer than that is not
waited out; the request is refused with ``RateLimited`` (``http_status`` None) and
nothing is sent.

Deadlines inside the process use the clock's monotonic time; waiting goes through
``clock.sleep`` so tests with a fake clock never sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Protocol, TypeVar

import msgspec
import structlog

from supervisor.api.errors import RateLimited
from supervisor.clock import Clock
from supervisor.domain import events as ev
from supervisor.domain.policy import Backoff
from supervisor.state.store import GateRow, StateError

log = structlog.get_logger("supervisor.ratelimit")

_FINGERPRINT_CONTEXT = b"wasend-supervisor rate gate v1"
_T = TypeVar("_T")


class GateStore(Protocol):
    """What the gate needs of a store (``supervisor.state.store.Store`` has it). The gate does
    its reads and writes through ``run``, so that waiting for the state file's lock never
    stalls the event loop."""

    async def run(self, work: Callable[[], _T]) -> _T: ...

    def gate_row(self, key: str) -> GateRow | None: ...

    def update_gate_row(
        self, key: str, change: Callable[[GateRow | None], GateRow | None]
    ) -> GateRow | None: ...


def key_fingerprint(api_key: str) -> str:
    """A name for the API key's row in the state file: 16 hex digits of an HMAC-SHA256
    of the key, from which the key cannot be recovered."""
    digest = hmac.new(_FINGERPRINT_CONTEXT, api_key.encode(), hashlib.sha256).hexdigest()
    return digest[:16]


def admit(
    sends: Sequence[float], now: float, budget: int, window: float
) -> tuple[float, tuple[float, ...]]:
    """The budget rule: at most ``budget`` requests in any ``window`` seconds.

    ``sends`` are the times of recent requests. Returns ``(0.0, sends)`` with ``now``
    counted (and those out of the window dropped) when a request may go now, else the
    seconds to wait and ``sends`` unchanged. A wait is never longer than ``window`` (times
    ahead of ``now``, from a clock set back, do not hold requests up for longer).
    """
    recent = sorted(t for t in sends if t > now - window)
    if len(recent) >= budget:
        wait = recent[-budget] + window - now
        return min(window, max(wait, 0.0)), tuple(sends)
    return 0.0, (*recent, now)


def _budget(rate_limit: float | None) -> tuple[int, float]:
    """At most ``rate_limit`` requests in any one-second window (None: no budget), as
    ``(budget, window)``: fewer than one a second is one request per 1/rate seconds."""
    if rate_limit is None:
        return 0, 0.0
    if rate_limit >= 1.0:
        return int(rate_limit), 1.0
    return 1, 1.0 / rate_limit


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GateState(msgspec.Struct, frozen=True):
    """What a gate has learnt, handed to the gate that replaces it (a reload builds a new
    one from the new settings): its pause, the fallback's count of 429s in a row, the
    recent sends (when no store is shared), the latest stored pause it saw (``wall_pause``,
    under ``key``; a gate on another key starts that over) and its counters."""

    paused_until: float = -math.inf  # monotonic
    consecutive_429: int = 0
    sent: tuple[float, ...] = ()
    key: str = ""
    wall_pause: float = -math.inf
    paused_seconds_total: float = 0.0
    rate_limited_total: int = 0


class RateGate:
    """Its configuration is fixed at construction (a reload builds a new gate, handed the
    old one's ``state()``)."""

    def __init__(
        self,
        clock: Clock,
        *,
        rate_limit: float | None,
        max_retry_after: float,
        fallback: Backoff | None = None,
        store: GateStore | None = None,
        key: str = "",
        max_wait: float | None = None,
        state: GateState | None = None,
        permit: Callable[[], None] | None = None,
    ) -> None:
        state = state or GateState()
        self._clock = clock
        self._max_retry_after = max_retry_after
        self._fallback = fallback or Backoff(initial=1.0, max=max_retry_after, multiplier=2.0)
        self._budget, self._window = _budget(rate_limit)
        # Honour and record the pause and the budget in ``store``, under ``key`` (a
        # ``key_fingerprint``).
        self._store = store
        self._key = key
        self._paused_until = state.paused_until
        self._consecutive_429 = state.consecutive_429
        self._sent = state.sent  # monotonic; when no store is shared
        # The latest stored pause seen or written (epoch), for this key's row.
        self._wall_pause = state.wall_pause if state.key == self._key else -math.inf
        self._max_wait = max_wait
        # Asked last, as a request is let through: raises (``Fenced``) when this process
        # may not act now (a replica that does not lead; ``runtime.leadership``).
        self.permit = permit
        # Told the wall-clock end of a pause this process is about to wait out (wiring
        # records it in the daemon's heartbeat, which is not written while it waits).
        self.on_pause: Callable[[float], Awaitable[None]] | None = None
        self.paused_seconds_total = state.paused_seconds_total
        self.rate_limited_total = state.rate_limited_total
        self._urgent = 0  # requests of this process waiting that are not spare
        self._no_urgent = asyncio.Event()
        self._no_urgent.set()

    def state(self) -> GateState:
        """What this gate has learnt, for the gate that replaces it."""
        return GateState(self._paused_until, self._consecutive_429, self._sent, self._key,
                         self._wall_pause, self.paused_seconds_total, self.rate_limited_total)

    @property
    def max_wait(self) -> float | None:
        """The longest pause waited out (None: any); a longer one is refused."""
        return self._max_wait

    @property
    def paused_until(self) -> float:
        """Monotonic time until which every request waits (-inf when not paused)."""
        return self._paused_until

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock.monotonic())

    async def acquire(self, *, spare: bool = False, fenced: bool = True) -> None:
        """Wait until a request may be sent, then count it as sent. ``spare``: only while
        no request that is not spare waits here (see the module). ``fenced``: only if
        ``permit`` lets it (a person's read, the status page's QR code, is not fenced: any
        replica may make it).

        Raises RateLimited, sending nothing, if a pause is longer than ``max_wait``;
        whatever ``permit`` raises (``Fenced``: this process may not act now), last of
        all, after any wait.
        """
        if spare:
            await self._acquire(spare=True, fenced=fenced)
            return
        self._urgent += 1
        self._no_urgent.clear()
        try:
            await self._acquire(spare=False, fenced=fenced)
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._no_urgent.set()

    async def _acquire(self, *, spare: bool, fenced: bool) -> None:
        while True:
            if spare and self._urgent:
                await self._no_urgent.wait()
                continue
            # With a budget, counting the request reads the stored pause in the same write
            # (``_take``): reading it first as well would be a second trip to the store.
            wait = await self._pause_left(stored=not self._budget)
            if wait > 0:
                if self.max_wait is not None and wait > self.max_wait:
                    raise self._refusal(wait)
                await self._waiting(wait)
                await self._clock.sleep(wait)
                continue
            if self._budget:
                wait, paused = await self._take()
                if paused:  # a stored pause: another process's 429
                    if self.max_wait is not None and wait > self.max_wait:
                        raise self._refusal(wait)
                    await self._waiting(wait)
                if wait > 0:
                    await self._clock.sleep(wait)
                    continue
            if fenced and self.permit is not None:
                self.permit()
            return

    async def _waiting(self, wait: float) -> None:
        self.paused_seconds_total += wait
        if self.on_pause is not None:
            await self.on_pause(self._clock.now() + wait)

    async def rate_limited(self, retry_after: float | None, *, call: str = "") -> float:
        """A 429 arrived: pause every request (of every process sharing the store).
        Returns the pause in seconds."""
        self._consecutive_429 += 1
        self.rate_limited_total += 1
        capped = False
        if retry_after is None or not math.isfinite(retry_after) or retry_after < 0:
            delay = self._fallback.cap(self._consecutive_429 - 1)
            source = "fallback"
        elif retry_after > self._max_retry_after:
            delay, capped, source = self._max_retry_after, True, "server_capped"
        else:
            delay, source = retry_after, "server"
        now = self._clock.monotonic()
        self._paused_until = max(self._paused_until, now + delay)
        if capped:
            log.warning(
                ev.API_RETRY_AFTER_CAPPED,
                call=call,
                retry_after=retry_after,
                max_retry_after=self._max_retry_after,
            )
        log.warning(
            ev.API_RATE_LIMITED,
            call=call,
            http_status=429,
            retry_after=retry_after,
            paused_for=round(self._paused_until - now, 3),
            pause_source=source,
        )
        await self._store_pause(self._clock.now() + (self._paused_until - now))
        return delay

    def succeeded(self) -> None:
        """A request went through: the fallback backoff starts over."""
        self._consecutive_429 = 0

    # ------------------------------------------------------------ the shared row

    async def _pause_left(self, *, stored: bool = True) -> float:
        """Seconds until a request may go, by our pause and (``stored``) the stored one."""
        if stored and self._store is not None:
            row = await self._store.run(partial(self._store.gate_row, self._key))
            if row is not None:
                self._adopt(row.paused_until)
        return max(0.0, self._paused_until - self._clock.monotonic())

    def _adopt(self, until: float) -> None:
        """Honour a stored pause (epoch seconds) another process wrote, for at most
        ``max_retry_after`` from now."""
        if until <= self._wall_pause:
            return
        self._wall_pause = until
        left = min(until - self._clock.now(), self._max_retry_after)
        if left <= 0:
            return
        deadline = self._clock.monotonic() + left
        if deadline > self._paused_until:
            self._paused_until = deadline
            log.info(ev.API_PAUSE_ADOPTED, paused_for=round(left, 3), until=_iso(until))

    async def _store_pause(self, until: float) -> None:
        if self._store is None:
            return
        self._wall_pause = max(self._wall_pause, until)

        def later(row: GateRow | None) -> GateRow | None:
            if row is None:
                return GateRow(paused_until=until)
            if row.paused_until >= until:
                return None
            return GateRow(until, row.sends)

        try:
            stored = await self._store.run(partial(self._store.update_gate_row, self._key,
                                                   later))
        except StateError as exc:  # the 429 is still the answer; the next request says it
            log.error(ev.STATE_UNAVAILABLE, problem=str(exc))
            return
        if stored is not None:
            self._adopt(stored.paused_until)

    async def _take(self) -> tuple[float, bool]:
        """Count one request in the budget if it may go now (0 s); else the seconds to
        wait, and whether that is a pause (a stored one, found inside the write)."""
        if self._store is None:
            wait, self._sent = admit(self._sent, self._clock.monotonic(), self._budget,
                                     self._window)
            return wait, False
        now = self._clock.now()
        wait, paused = 0.0, False

        def count(row: GateRow | None) -> GateRow | None:
            nonlocal wait, paused
            row = row or GateRow()
            if row.paused_until > now:
                wait, paused = min(row.paused_until - now, self._max_retry_after), True
                return None
            wait, sends = admit(row.sends, now, self._budget, self._window)
            return None if wait > 0 else GateRow(row.paused_until, sends)

        stored = await self._store.run(partial(self._store.update_gate_row, self._key, count))
        if paused and stored is not None:
            self._adopt(stored.paused_until)
        return wait, paused

    def _refusal(self, wait: float) -> RateLimited:
        until = self._clock.now() + wait
        return RateLimited(
            f"the API key is paused by a Retry-After for {math.ceil(wait)} s more "
            f"(until {_iso(until)}); nothing was sent",
            http_status=None,
            retry_after=wait,
        )
