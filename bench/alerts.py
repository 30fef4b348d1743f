"""Alerts: how soon a message reaches a person's channel, how few messages a storm makes,
and whether a hanging channel slows the event loop the poll runs on.

Everything runs in this process, on the sender the daemon runs (``supervisor.alerts``):
its outbox (the state store's SQLite outbox where this build has one, else an in-memory
one), Apprise's ``json://`` channel posting to an HTTP receiver on 127.0.0.1, the real
system clock.

* latency: one episode opened (its transition enqueued and the sender woken, as the poll
  does) to the message received, with ``group_window`` 0; and with the default window of
  10 s, the time beyond the window (a group is sent once its window has passed).
* storm: 1,000 sessions needing a person, seen over a few polls a second apart: the
  messages received and the share of the sessions they name.
* isolation: a stand-in for the poll cycle (a burst of HTTP requests to a local server on
  the same event loop) timed with a sender whose one channel never answers, against the
  same without alerts; the ratio of the medians per run. The real poll cycle's ratio
  needs the daemon's wiring of the sender.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import httpx
import structlog
from pydantic import SecretStr

from bench.common import RESULTS, BenchError
from bench.report import Figure, Result, Target
from supervisor.alerts.channels import AppriseChannel
from supervisor.alerts.outbox import Outbox
from supervisor.alerts.sender import Sender
from supervisor.clock import SystemClock
from supervisor.domain.episodes import Change, Episode, Kind, Transition
from supervisor.logs import configure
from supervisor.state.sqlite import SqliteStore
from tests.alerts.receivers import Hanging, HttpReceiver


@dataclass(frozen=True)
class Size:
    runs: int = 3
    latencies: int = 10  # episodes per run, group_window 0
    windowed: int = 2  # episodes per run with the default window (10 s each)
    group_window: float = 10.0
    storm: int = 1000
    storm_polls: int = 4  # the storm is seen over this many polls
    poll_every: float = 1.0
    cycles: int = 30  # stand-in poll cycles per side and run
    requests_per_cycle: int = 20
    hang_timeout: float = 5.0  # the send_timeout the hanging channel is cut off at


FULL = Size()
QUICK = Size(runs=1, latencies=5, windowed=1, cycles=15)


def run(size: Size = FULL) -> Result:
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "alerts.log").open("w", encoding="utf-8") as stream:
        configure("json", "info", stream)  # the sender's events, as the daemon logs them
        try:
            return _run(size)
        finally:  # logging as it was: unconfigured
            structlog.reset_defaults()
            for handler in list(logging.getLogger().handlers):
                logging.getLogger().removeHandler(handler)


def _run(size: Size) -> Result:
    result = Result("alerts", "alerts: episode to message, a storm, a hanging channel",
                    settings=asdict(size))
    latency: list[float] = []
    beyond: list[float] = []
    messages: list[float] = []
    named: list[float] = []
    ratios: list[float] = []
    kind = ""
    for _ in range(size.runs):
        with outbox() as (box, used):
            kind = used
            latency += asyncio.run(_latency(box, size, window=0.0, count=size.latencies))
        with outbox() as (box, _):
            beyond += asyncio.run(_latency(box, size, window=size.group_window,
                                           count=size.windowed))
        with outbox() as (box, _):
            sent, share = asyncio.run(_storm(box, size))
            messages.append(sent)
            named.append(share)
        with outbox() as (box, _):
            ratios.append(asyncio.run(_isolation(box, size)))
    result.figures += [
        Figure("alerts.latency", "episode opened to message received (group_window 0)", "s",
               "episode", latency, target=Target.median_at_most(1.0, "median <= 1 s")),
        Figure("alerts.latency_beyond_window", "episode opened to message received, less the "
               f"{size.group_window:g} s window", "s", "episode", beyond),
        Figure("alerts.storm_messages", f"messages for a storm of {size.storm} sessions",
               "messages", "run", messages, target=Target.max_at_most(3, "<= 3"), digits=0),
        Figure("alerts.storm_named", "share of the storm's sessions named in its messages",
               "share", "run", named, target=Target.all_equal(1.0, "all"), digits=2),
        Figure("alerts.hanging_channel_ratio", "stand-in poll cycle with a hanging channel / "
               "without alerts (medians)", "ratio", "run", ratios,
               target=Target.median_at_most(1.05, "<= 1.05")),
    ]
    result.notes.append(
        f"Outbox: {kind}. Channel: Apprise json:// to an HTTP receiver on 127.0.0.1. The storm "
        f"is seen over {size.storm_polls} polls {size.poll_every:g} s apart, with the default "
        f"group_window of {size.group_window:g} s. The stand-in poll cycle is "
        f"{size.requests_per_cycle} HTTP requests to a local server on the sender's event "
        "loop; the hanging channel takes the connection and never answers (send_timeout "
        f"{size.hang_timeout:g} s).")
    return result


@contextmanager
def outbox() -> Iterator[tuple[Outbox, str]]:
    """The state store's SQLite outbox, in a file of its own."""
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as folder:
        store = SqliteStore.open(Path(folder) / "state.db")
        try:
            yield store, "SQLite"
        finally:
            store.close()


def _episode(index: int, at: float) -> Transition:
    episode = Episode(Kind.NEEDS_PERSON, f"sess-{index:05d}", at, f"Shop {index}",
                      "SCAN_QR_CODE")
    return Transition(Change.OPENED, episode, at)


def _sender(box: Outbox, url: str, *, window: float, send_timeout: float = 10.0) -> Sender:
    channel = AppriseChannel("apprise-1", SecretStr(url))
    return Sender(box, [channel], SystemClock(), group_window=window, max_age=3600.0,
                  queue_max=10_000,
                  send_timeout=send_timeout, host="bench", idle=1.0)


async def _wait(condition: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {limit:g} s waiting for {what}")
        await asyncio.sleep(0.002)


def _more(receiver: HttpReceiver, than: int) -> bool:
    return len(receiver.requests) > than


async def _latency(box: Outbox, size: Size, *, window: float, count: int) -> list[float]:
    receiver = HttpReceiver().start()
    clock = SystemClock()
    samples: list[float] = []
    try:
        sender = _sender(box, f"json://{receiver.url}/hook", window=window)
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop))
        for index in range(count):
            await asyncio.sleep(0.2)
            before = len(receiver.requests)
            at = clock.now()
            started = time.monotonic()
            await box.run(partial(box.enqueue, ["apprise-1"], [_episode(index, at)], at))
            sender.wake()
            await _wait(partial(_more, receiver, before), window + 30.0, "the message")
            samples.append(time.monotonic() - started - window)
        stop.set()
        await task
    finally:
        receiver.stop()
    return samples


async def _storm(box: Outbox, size: Size) -> tuple[float, float]:
    receiver = HttpReceiver().start()
    clock = SystemClock()
    try:
        sender = _sender(box, f"json://{receiver.url}/hook", window=size.group_window)
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop))
        per_poll = -(-size.storm // size.storm_polls)
        for poll in range(size.storm_polls):
            at = clock.now()
            seen = [_episode(i, at) for i in range(poll * per_poll,
                                                   min(size.storm, (poll + 1) * per_poll))]
            await box.run(lambda: box.enqueue(["apprise-1"], seen, at))  # noqa: B023
            sender.wake()
            await asyncio.sleep(size.poll_every)
        await _wait(lambda: box.pending_count() == 0, size.group_window + 60.0,
                    "the storm's messages")
        stop.set()
        await task
    finally:
        receiver.stop()
    bodies = [request.json()["message"] for request in receiver.requests]
    named = sum(1 for i in range(size.storm)
                if any(f"(sess-{i:05d})" in body for body in bodies))
    return float(len(bodies)), named / size.storm


async def _cycles(size: Size, server: HttpReceiver) -> list[float]:
    durations: list[float] = []
    async with httpx.AsyncClient(trust_env=False) as http:
        for _ in range(size.cycles):
            started = time.perf_counter()
            for _ in range(size.requests_per_cycle):
                await http.post(f"http://{server.url}/api/sessions", content=b"{}")
            durations.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
    return durations


async def _isolation(box: Outbox, size: Size) -> float:
    server = HttpReceiver().start()
    hanging = Hanging()
    clock = SystemClock()
    try:
        without = await _cycles(size, server)
        sender = _sender(box, f"json://{hanging.url}/hook", window=0.0,
                         send_timeout=size.hang_timeout)
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop))
        at = clock.now()
        await box.run(lambda: box.enqueue(
            ["apprise-1"], [_episode(i, at) for i in range(50)], at))
        sender.wake()
        with_hanging = await _cycles(size, server)
        stop.set()
        await task
    finally:
        hanging.close()
        server.stop()
    return statistics.median(with_hanging) / statistics.median(without)

