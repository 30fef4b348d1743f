"""The sender: the outbox's rows turned into messages and sent, in the background, each
channel on its own.

One round (``Sender.run_once(now)``):

1. Rows older than ``max_age`` are dropped (an alert an hour late misleads more than it
   helps), then the oldest beyond ``queue_max``; each drop is counted (``alert.dropped``).
2. Every channel, concurrently: its rows, oldest first. While the channel waits out a
   failed send (a row's ``next_try_at`` ahead), nothing of it is sent, so that its messages
   keep their order (an episode's "resolved" never before its "opened").
3. The rows are grouped: rows of one kind and change whose transitions fall within
   ``group_window`` of the group's first are one message (a storm of 500 sessions needing a
   person is one message, not 500). A row starts a new group instead when a later group
   holds a row of the same episode, so an episode's messages stay in order. A group is sent
   once its window has passed, groups in order; the first not ready ends the round.
4. Before a group is sent its rows are claimed (``Outbox.claim``: their ``next_try_at``
   moved ``CLAIM_FOR`` send timeouts ahead, all or none), so that of two senders on one
   store only one sends it; the other logs ``alert.claimed_elsewhere`` and waits.
5. Each send is bounded by ``send_timeout``: a hanging channel never holds the others (nor
   the poll loop, which only enqueues). A failed send is retried with the policy's
   ``Backoff`` (exponential, full jitter, ``rng`` injected), counting the rows' attempts,
   after the store has recorded them (``Outbox.retry``), so a restart keeps the backoff.

``run(stop)`` repeats rounds until ``stop`` is set (a round the store fails is logged,
``alert.failed`` with ``stage`` = ``outbox``, and the next one tries again): after each,
it waits until the next group or retry is due, at most ``idle`` seconds (rows another
process enqueued are found then), or until ``wake()`` is called. Given ``open_episodes``,
it also has the channels that want it (Alertmanager's) post the open episodes again every
``refresh_every``.

``observers`` (the metrics) are handed a ``Delivery`` for each message sent or failed and
each drop; one that raises is logged (``alert.failed``, ``stage`` = ``observer``) and the
sender goes on.

Times: ``now`` and every row's times are wall-clock epoch seconds (the store's), read from
the injected clock; nothing here reads another.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import msgspec
import structlog

from supervisor.alerts.channels import (
    REFRESH_EVERY,
    Channel,
    DeliveryFailed,
    body_limit,
    parts_for,
    routed,
)
from supervisor.alerts.outbox import Outbox, Pending
from supervisor.alerts.text import BODY_LIMIT, render_parts
from supervisor.clock import Clock
from supervisor.domain import events as ev
from supervisor.domain.episodes import Change, Episode, Kind, Transition
from supervisor.domain.policy import Backoff
from supervisor.domain.secrets import Secrets

__all__ = ["BATCH", "CLAIM_FOR", "HORIZON", "SEND_TIMEOUT", "Delivery", "Group", "Refreshing",
           "SendReport", "Sender", "attempt", "groups"]

log = structlog.get_logger("supervisor.alerts")

BATCH: Final = 5_000
"""Rows of one channel read in one round: a storm of this many is one message."""

SEND_TIMEOUT: Final = 30.0
"""The longest one send may take before it counts as failed (a hanging channel)."""

CLAIM_FOR: Final = 2.0
"""A claim on a group's rows lasts this many send timeouts: the send, then its bookkeeping
(a sender that dies holding one delays the rows by that, never loses them)."""

HORIZON: Final = 10 * 365 * 86_400.0
"""How far ahead ``due`` is asked to look to see all of a channel's rows, waiting or not."""


@runtime_checkable
class Refreshing(Protocol):
    """A channel that wants the open episodes posted again now and then (Alertmanager)."""

    async def refresh(self, open: Sequence[Episode], now: float) -> None: ...


class Group(msgspec.Struct, frozen=True):
    """Rows of one channel that go out as one message."""

    kind: Kind
    change: Change
    rows: tuple[Pending, ...]
    first_at: float  # the earliest transition's time: the window counts from it


class Delivery(msgspec.Struct, frozen=True):
    """What became of some rows, for the metrics: ``outcome`` is ``sent`` or ``failed``
    (a message on ``channel`` of ``kind`` and ``change``, with ``count`` transitions), or
    ``dropped`` (``count`` rows, by ``reason``; the store says not which channel or kind)."""

    outcome: str
    count: int
    channel: str = ""
    kind: Kind | None = None
    change: Change | None = None
    reason: str = ""


class SendReport(msgspec.Struct):
    """What one round did. ``next_at``: when something is next due (a group's window
    passing, a channel's retry), or None when nothing waits."""

    sent: int = 0  # messages delivered
    failed: int = 0  # messages that failed (their rows wait for a retry)
    expired: int = 0  # rows dropped as older than max_age
    trimmed: int = 0  # rows dropped beyond queue_max (the oldest)
    next_at: float | None = None

    def due(self, at: float | None) -> None:
        if at is not None and (self.next_at is None or at < self.next_at):
            self.next_at = at


def groups(rows: Sequence[Pending], window: float) -> list[Group]:
    """``rows`` (oldest first) as groups, in the order they are to be sent (see the
    module's docstring, step 3)."""
    built: list[list[Pending]] = []
    first: list[float] = []
    latest: dict[tuple[Kind, Change], int] = {}
    holding: dict[tuple[Kind, str], int] = {}  # an episode's latest group
    for row in rows:
        transition = row.transition
        key = (transition.episode.kind, transition.change)
        episode = (transition.episode.kind, transition.episode.subject)
        index = latest.get(key)
        if (index is None or transition.at - first[index] > window
                or holding.get(episode, -1) > index):
            index = len(built)
            built.append([])
            first.append(transition.at)
            latest[key] = index
        built[index].append(row)
        first[index] = min(first[index], transition.at)
        holding[episode] = index
    return [Group(kind=g[0].transition.episode.kind, change=g[0].transition.change,
                  rows=tuple(g), first_at=at) for g, at in zip(built, first, strict=True)]


async def attempt(channel: str, sending: Coroutine[Any, Any, None],
                  within: float = SEND_TIMEOUT) -> str | None:
    """Await one send (or refresh) of ``channel`` within ``within`` seconds: None once
    done, else why not, in words safe to log (a channel's own exception text is never
    shown). ``alerts test`` reports each channel's result with it, as the sender logs it."""
    try:
        async with asyncio.timeout(within):
            await sending
    except DeliveryFailed as failure:
        return str(failure)
    except TimeoutError:
        return f"{channel}: no answer within {within:g} s"
    except Exception as crash:  # a bug in a channel
        return f"{channel}: the channel raised {type(crash).__name__}"
    return None


class _Tried(msgspec.Struct, frozen=True):
    """One attempt at sending a group on a channel (``Sender._try``)."""

    error: str | None  # None: delivered
    fields: dict[str, Any]
    parts: int  # messages it took
    seconds: float


class Sender:
    """The outbox's background sender (see the module's docstring). ``group_window``,
    ``max_age`` and ``queue_max`` are the settings' (``alerts.*``), which hold their
    defaults; ``host`` is this machine's name unless given."""

    def __init__(
        self,
        outbox: Outbox,
        channels: Sequence[Channel],
        clock: Clock,
        *,
        group_window: float,
        max_age: float,
        queue_max: int,
        send_timeout: float = SEND_TIMEOUT,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        host: str | None = None,
        status_page_url: str = "",
        secrets: Secrets | None = None,
        routes: Mapping[Kind, Collection[str]] | None = None,
        idle: float = 1.0,
        open_episodes: Callable[[], Sequence[Episode]] | None = None,
        refresh_every: float = REFRESH_EVERY,
        observers: Iterable[Callable[[Delivery], None]] = (),
    ) -> None:
        self.outbox = outbox
        self.channels = tuple(channels)
        self.clock = clock
        self.group_window = group_window
        self.max_age = max_age
        self.queue_max = queue_max
        self.send_timeout = send_timeout
        self.rng = rng or random.Random()
        self.backoff = backoff or Backoff()
        self.host = socket.gethostname() if host is None else host
        self.status_page_url = status_page_url
        self.secrets = secrets
        self.routes: Mapping[Kind, Collection[str]] = routes or {}
        self.idle = idle
        self.open_episodes = open_episodes
        self.refresh_every = refresh_every
        self.observers: list[Callable[[Delivery], None]] = list(observers)
        self._wake = asyncio.Event()
        self._refreshed_at: float | None = None
        self._waiting: dict[str, float] = {}  # channel id: until when it waits out a retry

    def _observe(self, delivery: Delivery) -> None:
        for observe in self.observers:
            try:
                observe(delivery)
            except Exception as exc:  # a metrics hook must not stop the sender
                log.warning(ev.ALERT_FAILED, stage="observer", error=type(exc).__name__)

    def wake(self) -> None:
        """Look at the outbox now (rows were just enqueued)."""
        self._wake.set()

    async def run_once(self, now: float) -> SendReport:
        """One round at ``now`` (wall-clock seconds)."""
        report = SendReport()
        outbox = self.outbox
        report.expired = await outbox.run(lambda: outbox.expire(now - self.max_age))
        report.trimmed = await outbox.run(lambda: outbox.trim(self.queue_max))
        for reason, count in (("max_age", report.expired), ("queue_full", report.trimmed)):
            if count:
                log.warning(ev.ALERT_DROPPED, reason=reason, count=count,
                            pending=await outbox.run(outbox.pending_count))
                self._observe(Delivery("dropped", count, reason=reason))
        rounds = await asyncio.gather(*(self._channel(c, now) for c in self.channels),
                                      return_exceptions=True)  # each channel's round ends
        for outcome in rounds:
            if isinstance(outcome, BaseException):
                raise outcome  # the store failed a channel's round (``run`` logs it)
            sent, failed, next_at = outcome
            report.sent += sent
            report.failed += failed
            report.due(next_at)
        return report

    async def _channel(self, channel: Channel, now: float) -> tuple[int, int, float | None]:
        """One channel's round: (messages sent, failed, when it is next due)."""
        outbox = self.outbox
        waiting = self._waiting.get(channel.id, 0.0)
        if waiting > now:  # known to wait out a retry: no need to read its rows again
            return 0, 0, waiting
        rows = await outbox.run(lambda: outbox.due(channel.id, now + HORIZON, BATCH))
        if not rows:
            return 0, 0, None
        waiting = max(row.next_try_at for row in rows)
        if waiting > now:  # as the store says (another process, or before a restart)
            self._waiting[channel.id] = waiting
            return 0, 0, waiting
        skipped = {r.id for r in rows if not routed(channel, r.transition.episode.kind,
                                                    self.routes)}
        if skipped:  # kinds routed elsewhere: done with, for this channel
            await outbox.run(lambda: outbox.delivered(sorted(skipped)))
            rows = [r for r in rows if r.id not in skipped]
        sent = 0
        for group in groups(rows, self.group_window):
            ready = group.first_at + self.group_window
            if ready > now:
                return sent, 0, ready
            lease = await self._claim(channel, group, now)
            if lease is not None:  # another sender is sending it: this one waits
                self._waiting[channel.id] = lease
                return sent, 0, lease
            retry_at = await self._send(channel, group)
            if retry_at is not None:
                self._waiting[channel.id] = retry_at
                return sent, 1, retry_at
            sent += 1
        return sent, 0, None

    async def _claim(self, channel: Channel, group: Group, now: float) -> float | None:
        """Take the group's rows for this send (``Outbox.claim``): None once taken, else
        until when another sender's claim lasts at most (as long as this one's would)."""
        ids = [row.id for row in group.rows]
        lease = now + CLAIM_FOR * self.send_timeout
        if await self.outbox.run(lambda: self.outbox.claim(ids, now, lease)):
            return None
        log.info(ev.ALERT_CLAIMED_ELSEWHERE, channel=channel.id, kind=group.kind.value,
                 change=group.change.value, sessions=len(ids))
        return lease

    async def _send(self, channel: Channel, group: Group) -> float | None:
        """Send one group; None once delivered, else when to try again."""
        ids = [row.id for row in group.rows]
        attempt = max(row.attempts for row in group.rows)
        tried = await self._try(channel, group, attempt + 1)
        if tried.error is None:
            await self.outbox.run(lambda: self.outbox.delivered(ids))
            self._told(channel, group, tried)
            return None
        delay = self.backoff.delay(attempt, self.rng)
        retry_at = self.clock.now() + delay
        await self.outbox.run(lambda: self.outbox.retry(ids, retry_at))
        self._not_told(channel, group, tried, retry_in=round(delay, 3))
        return retry_at

    async def _try(self, channel: Channel, group: Group, attempt: int,
                   **extra: Any) -> _Tried:
        """One attempt at sending the group on ``channel``: what became of it, and the
        fields its ``alert.sent`` or ``alert.failed`` says."""
        started = self.clock.monotonic()
        fields = {"channel": channel.id, "kind": group.kind.value,
                  "change": group.change.value, "sessions": len(group.rows),
                  "attempt": attempt, **extra}
        parts: list[int] = []
        error = await self._attempt(channel.id, self._deliver(channel, group, parts))
        return _Tried(error, fields, len(parts), self.clock.monotonic() - started)

    def _told(self, channel: Channel, group: Group, tried: _Tried) -> None:
        log.info(ev.ALERT_SENT, **tried.fields, parts=tried.parts,
                 duration_ms=round(tried.seconds * 1000))
        self._observe(Delivery("sent", len(group.rows), channel.id, group.kind, group.change))

    def _not_told(self, channel: Channel, group: Group, tried: _Tried,
                  retry_in: float | None) -> None:
        log.warning(ev.ALERT_FAILED, **tried.fields, error=tried.error, retry_in=retry_in)
        self._observe(Delivery("failed", len(group.rows), channel.id, group.kind,
                               group.change))

    async def _deliver(self, channel: Channel, group: Group, parts: list[int]) -> None:
        """The group as one message, or in parts cut to what the channel takes, in order
        (a failure of any part fails the group, which is sent again whole)."""
        limit = body_limit(channel)
        messages = render_parts(
            group.kind, group.change, [r.transition for r in group.rows], host=self.host,
            status_page_url=self.status_page_url, secrets=self.secrets,
            limit=BODY_LIMIT if limit is None else limit,
            max_parts=parts_for(channel, self.send_timeout))
        for message in messages:
            await channel.send(message)
            parts.append(len(message.transitions))

    async def send_now(self, transition: Transition) -> int:
        """Send one transition to every channel routed its kind at once, one attempt
        each, without the outbox (the database that holds it is what failed:
        ``supervision_stopped``); the channels that took it."""
        kind, change = transition.episode.kind, transition.change
        row = Pending(0, "", transition, transition.at, 0, transition.at)
        group = Group(kind=kind, change=change, rows=(row,), first_at=transition.at)
        took = 0
        for channel in self.channels:
            if not routed(channel, kind, self.routes):
                continue
            tried = await self._try(channel, group, 1, direct=True)
            if tried.error is None:
                took += 1
                self._told(channel, group, tried)
            else:
                self._not_told(channel, group, tried, retry_in=None)
        return took

    async def refresh(self, now: float) -> None:
        """Have the channels that want it post the open episodes again."""
        source = self.open_episodes
        refreshing = [c for c in self.channels if isinstance(c, Refreshing)]  # Alertmanager
        if source is None or not refreshing:
            return
        episodes = await self.outbox.run(lambda: list(source()))
        for channel in refreshing:
            error = await self._attempt(channel.id, channel.refresh(episodes, now))
            if error is not None:
                log.warning(ev.ALERT_FAILED, channel=channel.id, refresh=True,
                            sessions=len(episodes), error=error)

    async def _attempt(self, channel: str, sending: Coroutine[Any, Any, None]) -> str | None:
        return await attempt(channel, sending, self.send_timeout)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set (the daemon's background task)."""
        while not stop.is_set():
            self._wake.clear()
            now = self.clock.now()
            try:
                report = await self.run_once(now)
                if self._refreshed_at is None or now - self._refreshed_at >= self.refresh_every:
                    self._refreshed_at = now
                    await self.refresh(now)
            except Exception as error:  # the store unavailable: the next round tries again
                log.warning(ev.ALERT_FAILED, stage="outbox",
                            error=f"{type(error).__name__}: {error}")
                report = SendReport()
            wait = self.idle if report.next_at is None else min(
                self.idle, max(0.0, report.next_at - self.clock.now()))
            await self._pause(wait, stop)

    async def _pause(self, seconds: float, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self.clock.sleep(seconds)),
                 asyncio.ensure_future(self._wake.wait()),
                 asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            for waiting in waits:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
