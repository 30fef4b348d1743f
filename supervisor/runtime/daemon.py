"""``run``: the poll cycle on a schedule, until a signal says stop.

APScheduler's ``AsyncIOScheduler`` fires the poll job (one instance at a time,
coalescing missed runs, an explicit misfire grace, a little jitter). Signal handlers
only set a flag; ``run`` reacts: it pauses the scheduler, lets the poll in flight finish
within ``shutdown_grace`` seconds (then cancels it), shuts the scheduler down and
returns 0. A second SIGINT exits at once. SIGHUP (when ``on_reload`` is set) only sets
a flag too; a task on the loop then calls ``on_reload`` (see ``supervisor.runtime.reload``).

Small hooks let the shell around it add what ``run`` needs in production without the
daemon knowing of systemd or HTTP: ``listeners`` (after each poll), ``background``
(coroutines that run while the daemon runs, such as the systemd watchdog), ``on_stopping``
(when a stop begins) and ``closers`` (awaited, in order, after the scheduler has stopped).

APScheduler 3.x would cancel a running coroutine job on ``shutdown()``, which is why
the in-flight poll is awaited (bounded) before shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from supervisor.domain import events as ev
from supervisor.runtime.cycle import PollResult, Supervisor
from supervisor.runtime.memory import release_freed_memory

log = structlog.get_logger("supervisor.daemon")

EXIT_FORCED = 130


class Daemon:
    def __init__(
        self,
        supervisor: Supervisor,
        *,
        poll_interval: float,
        shutdown_grace: float,
        poll_jitter: float = 0.0,
    ) -> None:
        self.supervisor = supervisor
        self.poll_interval = poll_interval
        self.poll_jitter = poll_jitter
        self.shutdown_grace = shutdown_grace
        self.listeners: list[Callable[[PollResult], None]] = []
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.on_stopping: list[Callable[[], None]] = []
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.on_reload: Callable[[], object] | None = None
        self.polls = 0
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._stop_signal: str | None = None
        self._inflight: asyncio.Task[PollResult] | None = None
        self._scheduler: AsyncIOScheduler | None = None

    # ------------------------------------------------------------------- signals

    def handle_signal(self, signum: int) -> None:
        """Only sets a flag (and, on a second SIGINT, leaves at once)."""
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.request_reload()
            return
        if self._stop.is_set():
            if signum == signal.SIGINT:
                log.warning(ev.DAEMON_FORCED_EXIT, signal=name)
                os._exit(EXIT_FORCED)
            return
        self._stop_signal = name
        self._stop.set()

    def request_reload(self) -> None:
        """Ask for ``on_reload`` to run on the loop (ignored once a stop has begun)."""
        if not self._stop.is_set():
            self._reload.set()

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            self._stop_signal = reason
            self._stop.set()

    @contextlib.contextmanager
    def _signals(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        installed = []
        wanted = [signal.SIGTERM, signal.SIGINT]
        if self.on_reload is not None:
            wanted.append(signal.SIGHUP)
        for signum in wanted:
            try:
                loop.add_signal_handler(signum, self.handle_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            yield
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    # ---------------------------------------------------------------------- poll

    async def _poll_job(self) -> None:
        task = asyncio.ensure_future(self.supervisor.poll())
        self._inflight = task
        try:
            result = await asyncio.shield(task)
        except Exception:  # a bug, not an API error: keep the daemon alive, say so
            log.exception(ev.POLL_CRASHED)
            return
        finally:
            if task.done():
                self._inflight = None
            release_freed_memory()  # the list answer, parsed and dropped
        self.polls += 1
        for listener in self.listeners:
            listener(result)

    # ----------------------------------------------------------------------- run

    def _trigger(self) -> IntervalTrigger:
        return IntervalTrigger(seconds=self.poll_interval, jitter=self.poll_jitter or None,
                               timezone=UTC)

    def _misfire_grace(self) -> int:
        return max(1, round(self.poll_interval))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler = scheduler
        scheduler.add_job(
            self._poll_job,
            self._trigger(),
            id="poll",
            name="poll",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=self._misfire_grace(),
            next_run_time=datetime.now(UTC),
        )
        with self._signals(loop):
            scheduler.start()  # inside the running loop, as APScheduler 3 needs
            log.info(
                ev.DAEMON_STARTED,
                poll_interval=self.poll_interval,
                sessions=len(self.supervisor.configured) or "all",
                pid=os.getpid(),
            )
            tasks = [asyncio.create_task(self._guard(make)) for make in self.background]
            if self.on_reload is not None:
                tasks.append(asyncio.create_task(self._reloads(self.on_reload)))
            try:
                await self._stop.wait()
                log.info(ev.DAEMON_STOPPING, signal=self._stop_signal,
                         grace=self.shutdown_grace)
                for hook in self.on_stopping:
                    hook()
                scheduler.pause()
                await self._finish_inflight()
                scheduler.shutdown(wait=False)
            finally:  # background work (the watchdog) runs until the scheduler has stopped
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for close in self.closers:
                await close()
        log.info(ev.DAEMON_STOPPED, polls=self.polls)
        return 0

    def alive(self) -> tuple[bool, str]:
        """Whether the scheduler is running with its poll job (for ``/livez``)."""
        scheduler = self._scheduler
        if scheduler is None:
            return False, "scheduler not started"
        if not scheduler.running:
            return False, "scheduler stopped"
        if scheduler.get_job("poll") is None:
            return False, "poll job missing"
        return True, "event loop and scheduler running"

    def reconfigure(
        self, *, poll_interval: float, poll_jitter: float, shutdown_grace: float
    ) -> None:
        """New timings from a reload; a new interval reschedules the poll job from now."""
        schedule = (poll_interval, poll_jitter) != (self.poll_interval, self.poll_jitter)
        self.poll_interval = poll_interval
        self.poll_jitter = poll_jitter
        self.shutdown_grace = shutdown_grace
        scheduler = self._scheduler
        if schedule and scheduler is not None and scheduler.running and not self._stop.is_set():
            scheduler.modify_job("poll", misfire_grace_time=self._misfire_grace())
            scheduler.reschedule_job("poll", trigger=self._trigger())

    async def _reloads(self, reload: Callable[[], object]) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            try:
                reload()
            except Exception:  # a bug: the daemon keeps running on what it has
                log.exception(ev.CONFIG_RELOAD_CRASHED)

    @staticmethod
    async def _guard(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await make()
        except Exception:
            log.exception(ev.DAEMON_TASK_CRASHED)

    async def _finish_inflight(self) -> None:
        task = self._inflight
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=self.shutdown_grace)
        if not done:
            log.warning(ev.DAEMON_GRACE_EXPIRED, grace=self.shutdown_grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
