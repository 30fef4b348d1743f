"""The re-reads webhooks ask for: a bounded queue of sessions, read a few at a time.

``offer(session, status, at)`` (from the listener's callback, on the event loop, never
blocking) queues one read of that session. Many events for one session make one read:
while it is queued they are merged into it; while its read is in flight they are noted,
and once it is answered the session is read again only if one of them claimed a status
other than the one read (the change came after the read was sent); and an event that
happened (``at``, the provider's timestamp) before the session's last read was sent is
no news, as that read saw what came of it. When ``queue_max`` sessions wait, ``offer``
says no (the endpoint answers 503; the next poll catches up).

``run(stop)`` reads them: at most ``concurrency`` at once, each through ``read(session)``
(the supervisor's own path: one GET through the rate gate, then the decision core, as
after a poll), which says the status it read (None when there was none to read). A
``read`` that raises is logged and the next goes on.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

from supervisor.clock import Clock
from supervisor.domain import events as ev

__all__ = ["CONCURRENCY", "QUEUE_MAX", "Nudges"]

log = structlog.get_logger("supervisor.webhooks")

CONCURRENCY: Final = 8
QUEUE_MAX: Final = 10_000
READS_KEPT: Final = 100_000  # sessions whose last read's time is remembered, at most


class Nudges:
    def __init__(
        self,
        read: Callable[[str], Awaitable[str | None]],
        clock: Clock,
        *,
        concurrency: int = CONCURRENCY,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        self._read = read
        self._clock = clock
        self._read_at: OrderedDict[str, float] = OrderedDict()  # wall time of the last read
        self.concurrency = concurrency
        self.queue_max = queue_max
        self._queued: dict[str, None] = {}  # in arrival order
        self._inflight: dict[str, set[str]] = {}  # session: statuses claimed meanwhile
        self._ready = asyncio.Event()
        self.offered = 0  # events offered and taken (merged ones included)
        self.merged = 0  # of those, merged into a read already queued or in flight
        self.refused = 0  # offers refused, the queue full
        self.reads = 0  # reads made

    @property
    def waiting(self) -> int:
        return len(self._queued)

    def offer(self, session: str, status: str, at: float | None = None) -> bool:
        """Queue a read of ``session`` (claimed ``status``, at ``at``: epoch seconds, when
        the event says); False when the queue is full."""
        claimed = self._inflight.get(session)
        last = self._read_at.get(session)
        if at is not None and last is not None and at < last and claimed is None:
            pass  # it happened before the last read was sent: that read saw it
        elif claimed is not None:
            claimed.add(status)
        elif session in self._queued:
            pass
        elif len(self._queued) >= self.queue_max:
            self.refused += 1
            return False
        else:
            self._queued[session] = None
            self._ready.set()
            self.offered += 1
            return True
        self.offered += 1
        self.merged += 1
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Read what is queued until ``stop`` is set (reads in flight then finish)."""
        limit = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if not self._queued:
                    self._ready.clear()
                    waiting = asyncio.ensure_future(self._ready.wait())
                    await asyncio.wait({waiting, stopping},
                                       return_when=asyncio.FIRST_COMPLETED)
                    waiting.cancel()
                    continue
                await limit.acquire()
                if not self._queued:
                    limit.release()
                    continue
                session = next(iter(self._queued))
                del self._queued[session]
                self._inflight[session] = set()
                task = asyncio.ensure_future(self._one(session, limit))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            stopping.cancel()
            if tasks:
                await asyncio.wait(tasks)

    async def _one(self, session: str, limit: asyncio.Semaphore) -> None:
        read: str | None = None
        self._read_at[session] = self._clock.now()
        self._read_at.move_to_end(session)
        if len(self._read_at) > READS_KEPT:
            self._read_at.popitem(last=False)
        try:
            self.reads += 1
            read = await self._read(session)
        except Exception as exc:  # one session's read must not stop the others
            log.warning(ev.WEBHOOK_NUDGE_FAILED, session=session,
                        error=f"{type(exc).__name__}: {exc}")
        finally:
            claimed = self._inflight.pop(session, set())
            limit.release()
        later = read is not None and {s.upper() for s in claimed} - {read.upper()}
        if later and session not in self._queued and len(self._queued) < self.queue_max:
            self._queued[session] = None  # a change claimed after the read was sent
            self._ready.set()

