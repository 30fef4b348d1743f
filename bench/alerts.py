"""Alerts through the real daemon: how soon a message reaches a person's channel, how few
messages a storm makes, and whether a hanging channel slows the poll cycle.

Every figure comes from ``python -m supervisor run`` in its own process (as an operator
starts it: settings in its environment, a state file of its own in a scratch directory,
JSON logs in ``bench/results/logs/``) against a simulator over real HTTP on 127.0.0.1, with
``alerts.urls`` an Apprise ``json://`` URL to an HTTP receiver on 127.0.0.1 (the tests'
own, ``tests/alerts/receivers.py``), each request stamped with the wall-clock time it
arrived.

* latency: a session is put in ``SCAN_QR_CODE`` through the simulator's admin API at a
  random phase of the poll cycle; the time from the daemon's ``alert.opened`` for it (its
  log line's time) to the message arriving, with ``group_window`` 0; from the status set
  to the message (the wait for the next poll included); and with the default
  ``group_window``, the time beyond the window (a group is sent once its window has
  passed).
* storm: 1,000 sessions put in ``SCAN_QR_CODE`` over a few polls, default window: the
  messages received and the share of the sessions they name.
* hanging channel: two daemons side by side in one run, each against its own simulator
  with the same sessions (some needing a person from the start, one more at each poll):
  one with its one channel a port that takes the connection and never answers, one
  without alerts. Each poll cycle's ``duration_ms`` (``poll.completed``) from their logs;
  the ratio of the two medians per run (interpolated, ``statistics.median_grouped``, as
  the log has whole milliseconds). Which daemon starts first alternates from run to run.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    API_KEY,
    RESULTS,
    BenchError,
    list_count,
    start_simulator,
    wait_until,
)
from bench.procs import OURS, Tool
from bench.report import Figure, Result, Target
from supervisor.config.model import AlertSettings
from supervisor.domain import events as ev
from supervisor.simulator import SimulatorServer
from tests.alerts.receivers import Hanging, HttpReceiver, Request

NEEDS_PERSON = "SCAN_QR_CODE"
DEFAULT_WINDOW: float = AlertSettings.model_fields["group_window"].default


@dataclass(frozen=True)
class Size:
    runs: int = 3
    poll_interval: float = 1.0  # of the latency and storm daemons
    sessions: int = 20  # the latency daemons' sessions (one enters SCAN_QR_CODE at a time)
    latencies: int = 10  # episodes per run, group_window 0
    windowed: int = 2  # episodes per run with group_window below
    group_window: float = DEFAULT_WINDOW  # the default: the daemon is given no setting
    storm: int = 1000
    storm_polls: int = 4  # the storm is set over this many poll intervals
    cycle_sessions: int = 2000  # each of the two side-by-side daemons
    cycle_needing: int = 50  # of them needing a person from the start
    cycle_interval: float = 0.5
    cycles: int = 80  # poll cycles measured per daemon and run
    warmup: int = 3  # first cycles left out


FULL = Size()
QUICK = Size(runs=1, latencies=5, windowed=1, cycles=60)


class Arrivals(list[Request]):
    """The receiver's request list, with the wall-clock time each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Request) -> None:
        self.times.append(time.time())
        super().append(item)


@contextmanager
def receiving() -> Iterator[tuple[HttpReceiver, Arrivals]]:
    receiver = HttpReceiver()
    arrivals = Arrivals()
    receiver.requests = arrivals
    receiver.start()
    try:
        yield receiver, arrivals
    finally:
        receiver.stop()


@contextmanager
def daemon(server: SimulatorServer, name: str, *, poll_interval: float,
           settings: dict[str, Any], state_path: bool = True) -> Iterator[Tool]:
    """Our ``run`` against ``server``, logging JSON to ``bench/results/logs/NAME.log``.
    ``state_path``: a state file of its own (else the settings say where: ``state_url``)."""
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tool = Tool(OURS, server.base_url, API_KEY, poll_interval=poll_interval,
                settings=settings, log=logs / f"{name}.log")
    if not state_path:
        tool.env.pop("WASEND_SUPERVISOR_STATE_PATH", None)
    tool.start()
    try:
        yield tool
    finally:
        tool.stop()


def events(path: Path, name: str) -> list[dict[str, Any]]:
    """The log's JSON events called ``name``, in order (other lines skipped)."""
    found = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if f'"{name}"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
    return found


def wall(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def polled(tool: Tool, count: int = 1) -> bool:
    return len(events(tool.log_path, ev.POLL_COMPLETED)) >= count


def run(size: Size = FULL) -> Result:
    result = Result("alerts", "alerts through the daemon: episode to message, a storm, a "
                    "hanging channel beside the poll", settings=asdict(size))
    opened: list[float] = []
    from_set: list[float] = []
    beyond: list[float] = []
    messages: list[float] = []
    named: list[float] = []
    messages_split: list[float] = []
    named_split: list[float] = []
    ratios: list[float] = []
    hanging_ms: list[float] = []
    plain_ms: list[float] = []
    failed_sends: list[float] = []
    for index in range(size.runs):
        rng = random.Random(1200 + index)
        got = _latency(size, index, rng, window=0.0, count=size.latencies)
        opened += [received - at for at, _, received in got]
        from_set += [received - put for _, put, received in got]
        got = _latency(size, index, rng, window=size.group_window, count=size.windowed)
        beyond += [received - at - size.group_window for at, _, received in got]
        storm = _storm(size, index)
        messages.append(storm["plain"][0])
        named.append(storm["plain"][1])
        messages_split.append(storm["split"][0])
        named_split.append(storm["split"][1])
        hanging, plain, failed = _cycles(size, index)
        hanging_ms += hanging
        plain_ms += plain
        failed_sends.append(failed)
        ratios.append(statistics.median_grouped(hanging, 1)
                      / statistics.median_grouped(plain, 1))
    window = f"{size.group_window:g} s"
    result.figures += [
        Figure("alerts.latency", "alert.opened to message received (group_window 0)", "s",
               "episode", opened, target=Target.median_at_most(1.0, "median <= 1 s")),
        Figure("alerts.latency_from_status", "status set to message received, the wait for "
               f"the next poll included (P = {size.poll_interval:g} s, group_window 0)", "s",
               "episode", from_set),
        Figure("alerts.latency_beyond_window", "alert.opened to message received, less the "
               f"{window} window", "s", "episode", beyond),
        Figure("alerts.storm_messages", f"messages for a storm of {size.storm:,} sessions "
               "(json://, as given)", "messages", "run", messages,
               target=Target.max_at_most(3, "<= 3"), digits=0),
        Figure("alerts.storm_named", "share of the storm's sessions named in its messages "
               "(json://, as given)", "share", "run", named,
               target=Target.all_equal(1.0, "all"), digits=3),
        Figure("alerts.storm_messages_split", f"messages for a storm of {size.storm:,} "
               "sessions (json://...?overflow=split)", "messages", "run", messages_split,
               target=Target.max_at_most(3, "<= 3"), digits=0),
        Figure("alerts.storm_named_split", "share of the storm's sessions named in its "
               "messages (json://...?overflow=split)", "share", "run", named_split,
               target=Target.all_equal(1.0, "all"), digits=3),
        Figure("alerts.poll_cycle_ratio", "poll cycle with a hanging channel / without "
               "alerts, side by side (medians)", "ratio", "run", ratios,
               target=Target.median_at_most(1.05, "<= 1.05"), digits=3),
        Figure("alerts.poll_cycle_hanging", f"poll cycle, {size.cycle_sessions:,} sessions, "
               "a hanging channel", "ms", "cycle", hanging_ms, digits=0),
        Figure("alerts.poll_cycle_no_alerts", f"poll cycle, {size.cycle_sessions:,} sessions, "
               "no alerts", "ms", "cycle", plain_ms, digits=0),
        Figure("alerts.hanging_sends", "sends to the hanging channel that failed while the "
               "cycles were measured", "sends", "run", failed_sends, digits=0),
    ]
    result.notes.append(
        f"Every figure from the daemon (python -m supervisor run) against the simulator; "
        f"the channel Apprise json:// to an HTTP receiver on 127.0.0.1. Latency: P = "
        f"{size.poll_interval:g} s, {size.sessions} sessions, one put in {NEEDS_PERSON} "
        "through the admin API at a random phase of the poll cycle, group_window 0 (and "
        f"{window} for the windowed figure). Storm: {size.storm:,} sessions put in "
        f"{NEEDS_PERSON} over {size.storm_polls} poll intervals, group_window {window}, "
        "to two channels of the one daemon: a json:// URL as given (the sender cuts a "
        "group's list to the service's limit, 32,768 characters for json://, in at most "
        "3 messages) and the same with ?overflow=split (Apprise cuts it instead). "
        f"Hanging channel: two daemons side by side, {size.cycle_sessions:,} sessions each, "
        f"{size.cycle_needing} needing a person from the start and one more at each poll, "
        f"P = {size.cycle_interval:g} s; the channel takes the connection and never "
        f"answers; {size.cycles} cycles each after {size.warmup} left out; ratio of the "
        "medians of poll.completed duration_ms, interpolated (whole milliseconds).")
    return result


def _set_status(http: httpx.Client, server: SimulatorServer, session_id: str,
                status: str) -> None:
    """Through the simulator's admin API, as a test or an operator would."""
    answer = http.post(f"{server.base_url.rstrip('/')}/_simulator/sessions/{session_id}/status",
                       json={"status": status},
                       headers={"Authorization": f"Bearer {API_KEY}"})
    if answer.status_code != 200:
        raise BenchError(f"the simulator refused a status: {answer.status_code} {answer.text}")


def _latency(size: Size, index: int, rng: random.Random, *, window: float,
             count: int) -> list[tuple[float, float, float]]:
    """(alert.opened, status set, message received), wall-clock, for ``count`` episodes."""
    settings: dict[str, Any] = {}
    if window != DEFAULT_WINDOW:
        settings["alerts.group_window"] = window
    name = f"alerts-{index}-latency-{window:g}"
    server = start_simulator({"seed": index, "session_count": max(size.sessions, count + 1)})
    samples: list[tuple[float, float, float]] = []
    try:
        with receiving() as (receiver, arrivals), httpx.Client(trust_env=False) as http:
            settings["alerts.urls"] = f"json://{receiver.url}/hook"
            with daemon(server, name, poll_interval=size.poll_interval,
                        settings=settings) as tool:
                tools = {OURS: tool}
                wait_until(lambda: polled(tool), 30.0, "the first poll", tools=tools)
                ids = server.simulator.session_ids()
                for session_id in ids[:count]:
                    time.sleep(rng.uniform(0.2, 0.2 + size.poll_interval))
                    before = len(arrivals)
                    put = time.time()  # the status is set after this, before the next poll
                    _set_status(http, server, session_id, NEEDS_PERSON)
                    wait_until(lambda: len(arrivals) > before,  # noqa: B023
                               window + size.poll_interval + 30.0, "the message", tools=tools)
                    received = arrivals.times[before]
                    body = arrivals[before].json().get("message", "")
                    if session_id not in body:
                        raise BenchError(f"the message does not name {session_id}: {body!r}")
                    found: list[dict[str, Any]] = []

                    def logged(sid: str = session_id, into: list[Any] = found) -> bool:
                        into[:] = [e for e in events(tool.log_path, ev.ALERT_OPENED)
                                   if e.get("session_id") == sid]
                        return bool(into)

                    wait_until(logged, 10.0, "alert.opened in the log", tools=tools)
                    samples.append((wall(found[0]), put, received))
    finally:
        server.stop()
    return samples


def _storm(size: Size, index: int) -> dict[str, tuple[float, float]]:
    """For each of the two channels (the URL as given, and with ``?overflow=split``): the
    messages received for the storm, and the share of its sessions they name."""
    settings: dict[str, Any] = {}
    if size.group_window != DEFAULT_WINDOW:
        settings["alerts.group_window"] = size.group_window
    server = start_simulator({"seed": index, "session_count": size.storm + 10})
    try:
        with receiving() as (plain, got_plain), receiving() as (split, got_split):
            arrivals = {"plain": got_plain, "split": got_split}
            settings["alerts.urls"] = (f"json://{plain.url}/hook "
                                       f"json://{split.url}/hook?overflow=split")
            with daemon(server, f"alerts-{index}-storm", poll_interval=size.poll_interval,
                        settings=settings) as tool:
                tools = {OURS: tool}
                wait_until(lambda: polled(tool), 30.0, "the first poll", tools=tools)
                storm = server.simulator.session_ids()[:size.storm]
                per = -(-size.storm // size.storm_polls)
                for start in range(0, size.storm, per):
                    for session_id in storm[start:start + per]:
                        server.simulator.set_status(session_id, NEEDS_PERSON)
                    time.sleep(size.poll_interval)

                # Every channel's first message in, then a window more for any other.
                wait_until(lambda: all(arrivals.values()), size.group_window + 60.0,
                           "the storm's messages", step=0.1, tools=tools)
                time.sleep(min(size.group_window, 5.0) + 2 * size.poll_interval)
                return {kind: (float(len(got)), len(_named(list(got), storm)) / len(storm))
                        for kind, got in arrivals.items()}
    finally:
        server.stop()


def _named(requests: list[Request], sessions: list[str]) -> set[str]:
    """The sessions whose id the messages' text names."""
    text = "\n".join(f"{r.json().get('title', '')}\n{r.json().get('message', '')}"
                     for r in requests)
    found = set(re.findall(r"\bsess-\d+\b", text))
    return {s for s in sessions if s in found}


def _cycles(size: Size, index: int) -> tuple[list[float], list[float], float]:
    """Each poll cycle's duration (ms) with a hanging channel and without alerts, side by
    side; and how many sends to the hanging channel failed meanwhile."""
    hanging = Hanging()
    servers = {kind: start_simulator({"seed": index, "session_count": size.cycle_sessions})
               for kind in ("hanging", "plain")}
    try:
        ids = servers["plain"].simulator.session_ids()
        for server in servers.values():
            for session_id in ids[:size.cycle_needing]:
                server.simulator.set_status(session_id, NEEDS_PERSON)
        settings = {"hanging": {"alerts.urls": f"json://{hanging.url}/hook"}, "plain": {}}
        order = ["hanging", "plain"] if index % 2 == 0 else ["plain", "hanging"]
        with contextlib.ExitStack() as stack:
            tools = {kind: stack.enter_context(daemon(
                servers[kind], f"alerts-{index}-cycles-{kind}",
                poll_interval=size.cycle_interval, settings=settings[kind]))
                for kind in order}
            wanted = size.warmup + size.cycles
            nxt = size.cycle_needing
            seen = 0
            deadline = time.monotonic() + wanted * size.cycle_interval * 3 + 60.0
            while not all(polled(tool, wanted) for tool in tools.values()):
                for kind, tool in tools.items():
                    if not tool.alive():
                        raise BenchError(f"{kind} exited; see {tool.log_path}")
                if time.monotonic() > deadline:
                    raise BenchError("timed out waiting for the poll cycles")
                polls = list_count(servers["plain"])
                if polls > seen and nxt < len(ids):  # one more needing a person per poll
                    seen = polls
                    for server in servers.values():
                        server.simulator.set_status(ids[nxt], NEEDS_PERSON)
                    nxt += 1
                time.sleep(0.02)
        durations = {kind: [float(e["duration_ms"]) for e in events(
            tools[kind].log_path, ev.POLL_COMPLETED)][size.warmup:wanted] for kind in tools}
        failed = [e for e in events(tools["hanging"].log_path, ev.ALERT_FAILED)
                  if e.get("channel")]
        if events(tools["hanging"].log_path, ev.ALERT_SENT):
            raise BenchError("the hanging channel took a message")
    finally:
        for server in servers.values():
            server.stop()
        hanging.close()
    return durations["hanging"], durations["plain"], float(len(failed))


__all__ = ["FULL", "QUICK", "Arrivals", "Size", "events", "run"]
