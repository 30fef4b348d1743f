"""``run``: the poll cycle on a schedule, until a signal says stop.

A scheduler fires the poll job (one instance at a time, coalescing missed runs, an
explicit misfire grace, a little jitter): in production APScheduler's
``AsyncIOScheduler`` (``ApsScheduler``), in tests a virtual one on a test clock, through
the small ``PollScheduler`` seam. The daemon's own waits (the grace of a stop, the bound
of a reload's wait) go through its ``Clock``. Signal handlers only set a flag; ``run``
reacts: it pauses the scheduler, lets the poll in flight finish within
``shutdown_grace`` seconds (then cancels it), shuts the scheduler down and returns 0. A
second SIGINT exits at once. SIGHUP (when ``on_reload`` is set) only sets a flag too; a
task on the loop then waits for the poll in flight (at most ``shutdown_grace``), holds
the next poll back and awaits ``on_reload`` (see ``supervisor.runtime.reload``), which
hands the daemon the rebuilt supervisor and schedule through ``switch``.

Small hooks let the shell around it add what ``run`` needs in production without the
daemon knowing of systemd or HTTP: ``listeners`` (after each poll), ``after_poll``
(coroutines awaited after each poll, before the next, such as the alert episodes'
``runtime.alerting.Alerting.after_poll``), ``may_poll`` (asked before each poll: a
replica that does not lead skips it; ``wake`` polls at once), ``background``
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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from supervisor.clock import Clock, SystemClock
from supervisor.domain import events as ev
from supervisor.runtime.cycle import PollResult, Supervisor
from supervisor.runtime.memory import release_freed_memory

log = structlog.get_logger("supervisor.daemon")

EXIT_FORCED = 130


class Schedule(msgspec.Struct, frozen=True):
    """When the daemon polls, and how long a stop (or a reload) waits for the poll in
    flight."""

    poll_interval: float
    shutdown_grace: float
    poll_jitter: float = 0.0

    @property
    def misfire_grace(self) -> int:
        """Seconds a late poll may still run (an explicit misfire grace)."""
        return max(1, round(self.poll_interval))


Job = Callable[[], Awaitable[None]]


class PollScheduler(Protocol):
    """What the daemon needs of a scheduler: one job, run at once and then every
    ``poll_interval`` (plus up to ``poll_jitter``), one instance at a time, missed runs
    coalesced."""

    def start(self, job: Job, schedule: Schedule) -> None:
        """Start inside the running loop; the first run is now."""

    def reschedule(self, schedule: Schedule) -> None:
        """Runs from now on at the new interval and jitter."""

    def wake(self) -> None:
        """Run the job now (unless it is running), then on as before."""

    def pause(self) -> None: ...

    def shutdown(self) -> None: ...

    def alive(self) -> tuple[bool, str]:
        """Whether it runs with its job (for ``/livez``), and why not."""


class ApsScheduler:
    """APScheduler's ``AsyncIOScheduler``, as ``run`` uses it."""

    def __init__(self) -> None:
        self._scheduler: AsyncIOScheduler | None = None

    @staticmethod
    def _trigger(schedule: Schedule) -> IntervalTrigger:
        return IntervalTrigger(seconds=schedule.poll_interval,
                               jitter=schedule.poll_jitter or None, timezone=UTC)

    def start(self, job: Job, schedule: Schedule) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler = scheduler
        scheduler.add_job(
            job,
            self._trigger(schedule),
            id="poll",
            name="poll",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=schedule.misfire_grace,
            next_run_time=datetime.now(UTC),
        )
        scheduler.start()  # inside the running loop, as APScheduler 3 needs

    def reschedule(self, schedule: Schedule) -> None:
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            scheduler.modify_job("poll", misfire_grace_time=schedule.misfire_grace)
            scheduler.reschedule_job("poll", trigger=self._trigger(schedule))

    def wake(self) -> None:
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            scheduler.modify_job("poll", next_run_time=datetime.now(UTC))

    def pause(self) -> None:
        if self._scheduler is not None:
            self._scheduler.pause()

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)

    def alive(self) -> tuple[bool, str]:
        scheduler = self._scheduler
        if scheduler is None:
            return False, "scheduler not started"
        if not scheduler.running:
            return False, "scheduler stopped"
        if scheduler.get_job("poll") is None:
            return False, "poll job missing"
        return True, "event loop and scheduler running"


class Daemon:
    def __init__(
        self,
        supervisor: Supervisor,
        *,
        poll_interval: float,
        shutdown_grace: float,
        poll_jitter: float = 0.0,
        scheduler: PollScheduler | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.schedule = Schedule(poll_interval, shutdown_grace, poll_jitter)
        self.listeners: list[Callable[[PollResult], None]] = []
        self.after_poll: list[Callable[[Supervisor, PollResult], Awaitable[object]]] = []
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.on_stopping: list[Callable[[], None]] = []
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.on_reload: Callable[[], Awaitable[object]] | None = None
        # Asked before each poll: False skips it (a replica standing by: ``leadership``).
        self.may_poll: Callable[[], bool] | None = None
        self.polls = 0
        self._scheduler: PollScheduler = scheduler or ApsScheduler()
        self._clock: Clock = clock or SystemClock()
        self._started = False
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._turn = asyncio.Lock()  # a poll, or a reload being applied: one at a time
        self._stop_signal: str | None = None
        self._inflight: asyncio.Task[PollResult] | None = None

    @property
    def poll_interval(self) -> float:
        return self.schedule.poll_interval

    @property
    def poll_jitter(self) -> float:
        return self.schedule.poll_jitter

    @property
    def shutdown_grace(self) -> float:
        return self.schedule.shutdown_grace

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
        async with self._turn:  # not while a reload is being applied
            if self._stop.is_set():  # the stop came while a reload held this poll back
                return
            if self.may_poll is not None and not self.may_poll():
                return  # another replica leads
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
            for hook in self.after_poll:  # before a reload may swap the supervisor
                try:
                    await hook(self.supervisor, result)
                except Exception:  # a bug: the poll is done, the daemon goes on
                    log.exception(ev.POLL_CRASHED, during="after_poll")
        self.polls += 1
        for listener in self.listeners:
            listener(result)

    # ----------------------------------------------------------------------- run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        with self._signals(loop):
            self._scheduler.start(self._poll_job, self.schedule)
            self._started = True
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
                self._scheduler.pause()
                await self._finish_inflight()
                self._scheduler.shutdown()
            finally:  # background work (the watchdog) runs until the scheduler has stopped
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for close in self.closers:
                await close()
        log.info(ev.DAEMON_STOPPED, polls=self.polls)
        return 0

    @contextlib.asynccontextmanager
    async def between_polls(self) -> AsyncIterator[Supervisor]:
        """Waits for the poll in flight (or a reload being applied) to end and holds the
        next one back while the block runs (a person's action: ``runtime.operator``);
        yields the supervisor polling now."""
        async with self._turn:
            yield self.supervisor

    def wake(self) -> None:
        """Poll now rather than at the next tick (a replica just elected)."""
        if self._started and not self._stop.is_set():
            self._scheduler.wake()

    def alive(self) -> tuple[bool, str]:
        """Whether the scheduler is running with its poll job (for ``/livez``)."""
        return self._scheduler.alive()

    # -------------------------------------------------------------------- reload

    def switch(self, supervisor: Supervisor, schedule: Schedule) -> None:
        """Poll with ``supervisor`` on ``schedule`` from the next poll on (a reload's
        rebuilt runtime; the poll in flight, if any, finishes on the one it began with).
        A new interval or jitter reschedules the poll job from now."""
        moved = (schedule.poll_interval, schedule.poll_jitter) != (
            self.schedule.poll_interval, self.schedule.poll_jitter)
        self.supervisor, self.schedule = supervisor, schedule
        if moved and self._started and not self._stop.is_set():
            self._scheduler.reschedule(schedule)

    async def idle(self) -> None:
        """Wait until the poll in flight now, if any, has ended (it is not cancelled)."""
        task = self._inflight
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def _reloads(self, reload: Callable[[], Awaitable[object]]) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            held = await self._hold_polls()
            try:
                await reload()
            except Exception:  # a bug: the daemon keeps running on what it has
                log.exception(ev.CONFIG_RELOAD_CRASHED)
            finally:
                if held:
                    self._turn.release()

    async def _hold_polls(self) -> bool:
        """Wait for the poll in flight to end (at most ``shutdown_grace``) and keep the
        next one from starting; False if the poll outlasted the wait (the reload goes on
        beside it, and applies from the next poll)."""
        acquire = asyncio.ensure_future(self._turn.acquire())
        if not await self._within(acquire, self.shutdown_grace):
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
        return acquire.done() and not acquire.cancelled()

    @staticmethod
    async def _guard(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await make()
        except Exception:
            log.exception(ev.DAEMON_TASK_CRASHED)

    async def _within(self, task: asyncio.Future[Any], seconds: float) -> bool:
        """Whether ``task`` ends within ``seconds`` of the daemon's clock (it goes on
        either way)."""
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return task.done()

    async def _finish_inflight(self) -> None:
        task = self._inflight
        if task is None or task.done():
            return
        if not await self._within(task, self.shutdown_grace):
            log.warning(ev.DAEMON_GRACE_EXPIRED, grace=self.shutdown_grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
