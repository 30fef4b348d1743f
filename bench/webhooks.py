"""Webhooks through the real daemon: how many signed events a second it takes with its poll
loop on schedule, how few reads a burst costs, what forgeries cost, and (with the
simulator sending them) how soon a failure is restarted.

Our supervisor runs as an operator starts it (``python -m supervisor run``, settings in
its environment, a state file of its own) against a simulator over real HTTP on
127.0.0.1, with ``webhooks.hmac_key`` set and the endpoint on ``http_listen``. The events
are WAHA's ``session.status`` envelopes, signed (HMAC-SHA512 of the body) by the bench's
own code, each with an id of its own, and sent by a load generator in this process: raw
asyncio connections, one request each (the listener closes every connection after its
answer), ``concurrency`` in flight.

* throughput: events for 1,000 sessions for ``seconds``, as fast as they are taken; the
  events answered 202 per second, and the poll loop's intervals meanwhile (its
  ``poll.completed`` lines) against ``poll_interval``.
* burst: 10,000 events for 1,000 sessions at once; the GETs they cost (the simulator's
  request log), against 1,000.
* forgeries: badly signed events at 1,000 a second for ``seconds``; the API requests
  beyond the polls' lists they cost.
* answer time: events at ``answer_rate`` a second, a few connections in flight (a
  provider's pace, not a flood): each request's time from its connection opened to the
  answer read, against 10 ms (the endpoint only checks and queues).
* latency: two daemons side by side, P = 30 s, each against its own simulator with the
  same sessions and the same failures (sessions put in ``FAILED`` one at a time at random
  moments, through the simulator): one with webhooks (the simulator posts its signed
  ``session.status`` events to the daemon's endpoint, as WAHA would), one polling alone.
  The time from each failure to its restart request, from the simulators' request logs.
  The same run counts the webhooks each session sent: the healthy ones' silence, against
  a silence-based zombie signal.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import itertools
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime

from bench.common import API_KEY, RESULTS, BenchError, start_simulator, wait_until
from bench.procs import OURS, Tool
from bench.report import Figure, Result, Target
from supervisor.domain import events as ev
from supervisor.simulator import SimulatorServer
from tests.alerts.receivers import free_port

KEY = "bench-webhook-key-3e8a1f6c2d9b"
PATH = "/webhooks/wasend"


@dataclass(frozen=True)
class Size:
    runs: int = 3
    sessions: int = 1000
    poll_interval: float = 1.0
    seconds: float = 5.0  # of the throughput and the forgeries
    concurrency: int = 64
    burst: int = 10_000
    forgeries_per_second: int = 1000
    rate_limit: float = 100.0  # our budget (default 5/s): a burst's 1,000 reads in 10 s
    failures: int = 200  # of the latency figure, per run
    failure_spacing: float = 0.25  # seconds between two failures, on average
    latency_poll_interval: float = 30.0
    latency_sessions: int = 300
    answer_rate: float = 200.0
    answers: int = 1000


FULL = Size()
QUICK = Size(runs=1, seconds=3.0, failures=60)


def envelope(session: str, status: str, now: float) -> bytes:
    return json.dumps({
        "id": f"evt_{uuid.uuid4().hex[:26].upper()}", "timestamp": int(now * 1000),
        "event": "session.status", "session": session, "metadata": {},
        "payload": {"status": status, "statuses": [{"status": status,
                                                    "timestamp": int(now * 1000)}]},
        "engine": "GOWS", "environment": {"version": "bench", "engine": "GOWS",
                                          "tier": "PLUS"}}).encode()


def request(port: int, body: bytes, now: float, *, forged: bool = False) -> bytes:
    """One POST, as raw bytes: signed with the key (or, forged, with another)."""
    key = b"someone-else-entirely-0000" if forged else KEY.encode()
    digest = hmac.new(key, body, hashlib.sha512).hexdigest()
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Webhook-Hmac: {digest}\r\n"
            "X-Webhook-Hmac-Algorithm: sha512\r\n"
            f"X-Webhook-Timestamp: {int(now * 1000)}\r\n"
            f"X-Webhook-Request-Id: {uuid.uuid4().hex}\r\n\r\n")
    return head.encode() + body


async def _timed_one(port: int, raw: bytes) -> tuple[int, float]:
    started = time.monotonic()
    status = await _send_one(port, raw)
    return status, time.monotonic() - started


async def paced(port: int, raws: Sequence[bytes], per_second: float,
                ) -> list[tuple[int, float]]:
    """Each request sent at its time (``per_second``), its own connection: (status, seconds
    from the connection opened to the answer read)."""
    started = time.monotonic()
    tasks = []
    for index, raw in enumerate(raws):
        due = started + index / per_second
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())
        tasks.append(asyncio.ensure_future(_timed_one(port, raw)))
    return list(await asyncio.gather(*tasks))


class _OneRequest(asyncio.Protocol):
    """Writes one request, keeps what comes back until the listener closes (a plain
    protocol: streams cost the load generator more than the daemon its answer)."""

    def __init__(self, raw: bytes, done: asyncio.Future[bytes]) -> None:
        self.raw = raw
        self.done = done
        self.data = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.raw)

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.data)


async def _send_one(port: int, raw: bytes) -> int:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    try:
        await loop.create_connection(lambda: _OneRequest(raw, done), "127.0.0.1", port)
        answer = await done
    except OSError:
        return 0
    try:
        return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    except (ValueError, IndexError):
        return 0


async def blast(port: int, raws: Sequence[bytes], concurrency: int,
                per_second: float | None = None) -> tuple[Counter[int], float]:
    """Send every request (``concurrency`` in flight; at most ``per_second`` a second when
    given): the answers' statuses (0: none) and the seconds it took."""
    statuses: Counter[int] = Counter()
    queue = iter(enumerate(raws))
    started = time.monotonic()

    async def worker() -> None:
        for index, raw in queue:
            if per_second is not None:
                due = started + index / per_second
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
            statuses[await _send_one(port, raw)] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, time.monotonic() - started


@contextmanager
def daemon(server: SimulatorServer, name: str, size: Size) -> Iterator[tuple[Tool, int]]:
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tool = Tool(OURS, server.base_url, API_KEY, poll_interval=size.poll_interval,
                settings={"http_listen": f"127.0.0.1:{port}", "webhooks.hmac_key": KEY,
                          "webhooks.queue_max": 10_000, "rate_limit": size.rate_limit},
                log=logs / f"{name}.log")
    tool.start()
    try:
        wait_until(lambda: bool(server.simulator.requests()), 30, "the first poll",
                   tools={OURS: tool})
        yield tool, port
    finally:
        tool.stop()


def _events(tool: Tool, name: str) -> list[dict[str, object]]:
    found = []
    for line in tool.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if f'"{name}"' in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                found.append(event)
    return found


def _poll_times(tool: Tool, since: float, until: float) -> list[float]:
    times = [datetime.fromisoformat(str(e["timestamp"])).timestamp()
             for e in _events(tool, ev.POLL_COMPLETED)]
    return [t for t in times if since <= t <= until]


def run(size: Size = FULL) -> Result:
    result = Result("webhooks", "signed webhooks through the daemon: throughput with the "
                    "poll loop on schedule, a burst's reads, forgeries' cost",
                    settings=asdict(size))
    rates: list[float] = []
    per_cpu_second: list[float] = []
    intervals: list[float] = []
    lost: list[float] = []
    burst_gets: list[float] = []
    forged_requests: list[float] = []
    hooked: list[float] = []
    polled: list[float] = []
    silent: list[float] = []
    answer_times: list[float] = []
    for index in range(size.runs):
        answer_times += _answer_times(size, index)
        got = _latency(size, index)
        hooked += got[0]
        polled += got[1]
        silent.append(got[2])
        rate, gaps, unanswered, per_cpu = _throughput(size, index)
        rates.append(rate)
        per_cpu_second.append(per_cpu)
        intervals += gaps
        lost.append(unanswered)
        burst_gets.append(_burst(size, index))
        forged_requests.append(_forgeries(size, index))
    p = size.poll_interval
    lp = size.latency_poll_interval
    result.figures += [
        Figure("webhooks.answer_time", f"a signed event's request, connection to answer, "
               f"{size.answer_rate:g} events a second", "s", "event", answer_times,
               target=Target.median_at_most(0.01, "median <= 10 ms")),
        Figure("webhooks.restart_latency", f"failure to its restart request, with webhooks "
               f"(P = {lp:g} s)", "s", "failure", hooked, polled,
               target=Target.median_at_most(0.05, "median <= 50 ms")),
        Figure("webhooks.restart_latency_p99", "the same, its 99th percentile", "s", "run",
               [_p99(hooked)], [_p99(polled)], target=Target.max_at_most(0.25, "<= 250 ms")),
        Figure("webhooks.healthy_silent", f"healthy sessions that sent no webhook in the "
               f"run (of {size.latency_sessions - size.failures:,}): a silence signal would "
               "flag them all", "share", "run", silent, digits=3),
        Figure("webhooks.accepted_per_second", f"signed events answered 202 a second, "
               f"{size.sessions:,} sessions, {size.concurrency} connections in flight",
               "events/s", "run", rates, target=Target.min_at_least(
                   2000, ">= 2,000"), digits=0),
        Figure("webhooks.accepted_per_cpu_second", "signed events answered 202 per second "
               "of the daemon's own CPU meanwhile (what one core of the daemon takes, the "
               "load generator apart)", "events/s", "run", per_cpu_second, digits=0),
        Figure("webhooks.poll_interval_under_load", f"poll loop's intervals while they "
               f"come (P = {p:g} s)", "s", "interval", intervals,
               target=Target.max_at_most(1.5 * p, f"<= 1.5 P = {1.5 * p:g} s")),
        Figure("webhooks.unanswered", "events not answered 202 during the throughput run",
               "events", "run", lost, digits=0),
        Figure("webhooks.burst_gets", f"GETs for a burst of {size.burst:,} events for "
               f"{size.sessions:,} sessions", "requests", "run", burst_gets,
               target=Target.max_at_most(size.sessions, f"<= {size.sessions:,}"), digits=0),
        Figure("webhooks.forgery_requests", f"API requests beyond the lists for "
               f"{size.forgeries_per_second:,} badly signed events a second, "
               f"{size.seconds:g} s", "requests", "run", forged_requests,
               target=Target.max_at_most(0, "0"), digits=0),
    ]
    result.notes.append(
        f"The daemon against a simulator of {size.sessions:,} healthy sessions, P = {p:g} s, "
        "the endpoint on http_listen; events WAHA's session.status envelopes claiming "
        "WORKING, signed HMAC-SHA512 by the bench, a fresh id each, sent over raw "
        f"connections from the bench process ({size.concurrency} in flight), one request a "
        "connection. The load generator shares the 2 vCPUs with the daemon and the "
        "simulator, so the rate is a floor of what the daemon takes. rate_limit "
        f"{size.rate_limit:g} requests a second (the default, 5, would take 200 s to read "
        "a burst for 1,000 sessions; the reads are spare at the gate either way). Latency: "
        f"{size.failures} failures per run, one at a time about {size.failure_spacing:g} s "
        f"apart, P = {size.latency_poll_interval:g} s, {size.latency_sessions} sessions; "
        "the second column of the latency rows is our daemon polling alone, side by side "
        "(not the naive loop).")
    return result


def _p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else 0.0


def _polled(server: SimulatorServer) -> bool:
    return bool(server.simulator.requests())


def _latency(size: Size, index: int) -> tuple[list[float], list[float], float]:
    """Failure to restart request, with webhooks and polling alone, side by side; and the
    share of the healthy sessions that sent no webhook meanwhile."""
    rng = random.Random(1500 + index)
    scenario = {"seed": 300 + index, "session_count": size.latency_sessions,
                "start_delay": 0.2}
    servers = {"hooked": start_simulator(scenario), "polled": start_simulator(scenario)}
    logs = RESULTS / "logs"
    tools: dict[str, Tool] = {}
    try:
        port = free_port()
        servers["hooked"].simulator.update_webhooks(
            webhook_url=f"http://127.0.0.1:{port}{PATH}", webhook_hmac_key=KEY)
        common = {"rate_limit": 50.0}
        tools["hooked"] = Tool(OURS, servers["hooked"].base_url, API_KEY,
                               poll_interval=size.latency_poll_interval, log=logs / (
                                   f"webhooks-{index}-latency-hooked.log"), settings={
                                   **common, "http_listen": f"127.0.0.1:{port}",
                                   "webhooks.hmac_key": KEY})
        tools["polled"] = Tool(OURS, servers["polled"].base_url, API_KEY,
                               poll_interval=size.latency_poll_interval,
                               log=logs / f"webhooks-{index}-latency-polled.log",
                               settings=common)
        for tool in tools.values():
            tool.start()
        for kind, server in servers.items():
            wait_until(functools.partial(_polled, server), 30, "the first poll",
                       tools={kind: tools[kind]})
        time.sleep(1.0)
        victims = rng.sample(servers["hooked"].simulator.session_ids(), size.failures)
        failed_at: dict[str, float] = {}
        for victim in victims:
            time.sleep(rng.expovariate(1 / size.failure_spacing))
            failed_at[victim] = time.monotonic()
            for server in servers.values():
                server.simulator.set_status(victim, "FAILED")
        latencies: dict[str, list[float]] = {}
        for kind, server in servers.items():
            def restarted(server: SimulatorServer = server) -> bool:
                done = {r.session for r in server.simulator.requests()
                        if r.kind in ("restart", "stop")}
                return set(victims) <= done
            wait_until(restarted, size.latency_poll_interval * 2 + 30, f"{kind}'s restarts",
                       tools={kind: tools[kind]})
            first: dict[str, float] = {}
            for r in server.simulator.requests():
                if r.kind in ("restart", "stop") and r.session in failed_at:
                    first.setdefault(r.session, r.monotonic)
            latencies[kind] = [first[v] - failed_at[v] for v in victims]
        sent = {r.session for r in servers["hooked"].simulator.webhooks()}
        healthy = [s for s in servers["hooked"].simulator.session_ids() if s not in failed_at]
        silent = sum(1 for s in healthy if s not in sent) / len(healthy)
        return latencies["hooked"], latencies["polled"], silent
    finally:
        for tool in tools.values():
            tool.stop()
        for server in servers.values():
            server.stop()


def _answer_times(size: Size, index: int) -> list[float]:
    server = start_simulator({"seed": 400 + index, "session_count": size.sessions})
    try:
        ids = server.simulator.session_ids()
        with daemon(server, f"webhooks-{index}-answers", size) as (_tool, port):
            now = time.time()
            raws = [request(port, envelope(ids[i % len(ids)], "WORKING", now), now)
                    for i in range(size.answers)]
            got = asyncio.run(paced(port, raws, size.answer_rate))
        if any(status != 202 for status, _ in got):
            raise BenchError("an event was not answered 202")
        return [seconds for _, seconds in got]
    finally:
        server.stop()


def _throughput(size: Size, index: int) -> tuple[float, list[float], float, float]:
    server = start_simulator({"seed": index, "session_count": size.sessions})
    try:
        ids = server.simulator.session_ids()
        with daemon(server, f"webhooks-{index}-throughput", size) as (tool, port):
            now = time.time()
            count = int(size.seconds * 4000)  # more than it can take in the time
            raws = [request(port, envelope(ids[i % len(ids)], "WORKING", now), now)
                    for i in range(count)]
            started_wall = time.time()
            cpu_before = tool.cpu()
            statuses, took = asyncio.run(_timed(port, raws, size))
            cpu = tool.cpu() - cpu_before
            ended_wall = started_wall + took
            accepted = statuses[202]
            wait_until(lambda: len(_poll_times(tool, ended_wall, time.time() + 1)) >= 2,
                       10 * size.poll_interval, "a poll after the load", tools={OURS: tool})
            times = _poll_times(tool, started_wall, ended_wall + size.poll_interval)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if not gaps:
            raise BenchError("no poll completed during the load")
        sent = sum(statuses.values())
        return accepted / took, gaps, float(sent - accepted), accepted / max(cpu, 1e-9)
    finally:
        server.stop()


async def _timed(port: int, raws: Sequence[bytes], size: Size) -> tuple[Counter[int], float]:
    """As many as go in ``size.seconds``: the statuses and the seconds taken."""
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    queue = iter(raws)

    async def worker() -> None:
        for raw in queue:
            if time.monotonic() - started >= size.seconds:
                return
            statuses[await _send_one(port, raw)] += 1

    await asyncio.gather(*(worker() for _ in range(size.concurrency)))
    return statuses, time.monotonic() - started


def _burst(size: Size, index: int) -> float:
    server = start_simulator({"seed": 100 + index, "session_count": size.sessions})
    try:
        ids = server.simulator.session_ids()
        with daemon(server, f"webhooks-{index}-burst", size) as (tool, port):
            now = time.time()
            raws = [request(port, envelope(ids[i % len(ids)], "WORKING", now), now)
                    for i in range(size.burst)]
            before = server.simulator.requests()[-1].seq
            statuses, _ = asyncio.run(blast(port, raws, size.concurrency))
            if statuses[202] + statuses[503] != size.burst:
                raise BenchError(f"unexpected answers to the burst: {dict(statuses)}")
            wait_until(lambda: not _reading(tool), 30, "the burst's reads", tools={OURS: tool})
            gets = [r for r in server.simulator.requests(after=before) if r.kind == "get"]
        return float(len(gets))
    finally:
        server.stop()


def _reading(tool: Tool) -> bool:
    """Whether the daemon is still reading: a session.nudged line in the last 0.5 s."""
    nudged = _events(tool, ev.SESSION_NUDGED)
    if not nudged:
        return True
    last = datetime.fromisoformat(str(nudged[-1]["timestamp"])).timestamp()
    return time.time() - last < 0.5


def _forgeries(size: Size, index: int) -> float:
    server = start_simulator({"seed": 200 + index, "session_count": size.sessions})
    try:
        ids = server.simulator.session_ids()
        with daemon(server, f"webhooks-{index}-forgeries", size) as (_tool, port):
            now = time.time()
            count = int(size.forgeries_per_second * size.seconds)
            raws = [request(port, envelope(ids[i % len(ids)], "FAILED", now), now, forged=True)
                    for i in range(count)]
            before = server.simulator.requests()[-1].seq
            statuses, _ = asyncio.run(blast(port, raws, 16, per_second=size.forgeries_per_second))
            if statuses[401] != count:
                raise BenchError(f"forgeries not all refused: {dict(statuses)}")
            time.sleep(size.poll_interval)
            beyond = [r for r in server.simulator.requests(after=before) if r.kind != "list"]
        return float(len(beyond))
    finally:
        server.stop()


__all__ = ["FULL", "QUICK", "Size", "blast", "envelope", "request", "run"]


