"""High availability on PostgreSQL (issue 15): how soon a standby takes over, and what
three replicas cost the API.

Three replicas (``a``, ``b``, ``c``), each ``python -m supervisor run`` in its own process as
an operator starts it (settings in its environment: one ``state_url``, its own
``ha.replica``, its own ``http_listen``), share one PostgreSQL database (Debian's server,
started by the bench on a free loopback port with its own durable defaults, fsync on; a
fresh database per run) and one simulator over real HTTP on 127.0.0.1. ``ha.lease`` and
``ha.renew`` are small, in the defaults' ratio (15 and 5 s: 3 to 1), so that runs are short.

Every API request names its replica in its ``User-Agent`` (``... (replica a)``), and the
simulator's log keeps it (``agent``) with the request's arrival on this process's
monotonic clock: the log says who sent what, and when. ``/readyz`` (``role``) says who
leads; the bench checks that it agrees with the log before each failover.

In each run, once one replica leads and the two others stand by:

* requests per cycle: every request, from any replica, over ``cycles`` of the leader's
  poll cycles (from one of its lists to the one ``cycles`` later), divided by ``cycles``,
  and how many replicas sent any;
* SIGKILL: at a random phase of the renewal, the leader is killed; the time to the first
  API request from another replica, in seconds and as a ratio of ``lease + renew`` (the
  most a takeover may take). The killed replica is then started again (it stands by);
* SIGTERM: the new leader is stopped as a service manager stops it; the time to the first
  request from another replica (it resigns the lease: at once, not when it expires), and
  the requests the old leader sent after the new one's first (none: never two at once).
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import httpx

from bench.alerts import events
from bench.common import API_KEY, RESULTS, BenchError, requests, start_simulator, wait_until
from bench.procs import OURS, Tool
from bench.report import Figure, Result, Target
from supervisor.domain import events as ev
from supervisor.simulator import RequestRecord, SimulatorServer

AGENT_REPLICA = re.compile(r"\(replica ([^)]+)\)")


@dataclass(frozen=True)
class Size:
    runs: int = 5
    replicas: tuple[str, ...] = ("a", "b", "c")
    sessions: int = 1000
    poll_interval: float = 1.0
    poll_jitter: float = 0.1  # the default
    lease: float = 3.0  # ha.lease (default 15 s)
    renew: float = 1.0  # ha.renew (default 5 s)
    cycles: int = 10  # the leader's poll cycles counted for the requests per cycle
    warmup: int = 2  # the leader's lists before they are counted
    timeout: float = 60.0  # for any one wait (start-up, a takeover), seconds


FULL = Size()
QUICK = Size(runs=2, cycles=6)


def replica_of(record: RequestRecord) -> str | None:
    """The replica a request names in its ``User-Agent`` (None: it names none)."""
    found = AGENT_REPLICA.search(record.agent)
    return found.group(1) if found else None


def cycle_counts(records: list[RequestRecord], leader: str, first: int,
                 cycles: int) -> tuple[float, set[str]]:
    """Requests per poll cycle, and the replicas that sent any, over ``cycles`` of the
    leader's cycles: every request, from any replica, that arrived from the leader's list
    number ``first`` (from 0) to the one ``cycles`` later, that one left out."""
    lists = [r for r in records if r.kind == "list" and replica_of(r) == leader]
    begin, end = lists[first].monotonic, lists[first + cycles].monotonic
    within = [r for r in records if begin <= r.monotonic < end]
    return len(within) / cycles, {replica_of(r) or "(none)" for r in within}


@dataclass
class Replica:
    name: str
    port: int
    tool: Tool
    lives: int = 1

    def readiness(self) -> dict[str, Any] | None:
        """``/readyz``'s JSON (whatever its status code), or None if it does not answer."""
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2.0)
            body = answer.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def role(self) -> str | None:
        body = self.readiness()
        return None if body is None else body.get("role")


@dataclass
class Cluster:
    """The replicas of one run, on one database, against one simulator."""

    size: Size
    server: SimulatorServer
    dsn: str
    run: int
    replicas: dict[str, Replica] = field(default_factory=dict)

    def start(self, name: str) -> Replica:
        old = self.replicas.get(name)
        lives = 1 if old is None else old.lives + 1
        port = _free_port()
        logs = RESULTS / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        tool = Tool(OURS, self.server.base_url, API_KEY, poll_interval=self.size.poll_interval,
                    settings={"state_url": self.dsn, "poll_jitter": self.size.poll_jitter,
                              "ha.lease": self.size.lease, "ha.renew": self.size.renew,
                              "ha.replica": name, "http_listen": f"127.0.0.1:{port}"},
                    log=logs / f"failover-{self.run}-{name}-{lives}.log")
        tool.env.pop("WASEND_SUPERVISOR_STATE_PATH", None)  # the state is in PostgreSQL
        replica = Replica(name, port, tool, lives)
        self.replicas[name] = replica
        tool.start()
        return replica

    def tools(self) -> dict[str, Tool]:
        return {name: r.tool for name, r in self.replicas.items() if r.tool.alive()}

    def wait_settled(self, what: str) -> str:
        """Until the live replicas are one leader and the rest standbys by ``/readyz``, and
        the leader has listed the sessions since; its name."""
        live = [r for r in self.replicas.values() if r.tool.alive()]
        leader: list[str] = []
        roles: dict[str, str | None] = {}

        def settled() -> bool:
            roles.update({r.name: r.role() for r in live})
            leaders = [n for n, role in roles.items() if role == "leader"]
            if len(leaders) != 1 or any(role != "standby" for n, role in roles.items()
                                        if n != leaders[0]):
                return False
            leader[:] = leaders
            return any(replica_of(r) == leaders[0] for r in requests(self.server, "list"))

        try:
            wait_until(settled, self.size.timeout, what, step=0.05, tools=self.tools())
        except BenchError as exc:
            raise BenchError(f"{exc}; /readyz roles: {roles}") from None
        return leader[0]

    def leader_by_log(self) -> str | None:
        lists = requests(self.server, "list")
        return replica_of(lists[-1]) if lists else None

    def first_from_others(self, gone: str, since: float, what: str) -> RequestRecord:
        """The first request at or after ``since`` from a replica other than ``gone``."""
        found: list[RequestRecord] = []

        def arrived() -> bool:
            for record in requests(self.server):
                if record.monotonic >= since and replica_of(record) not in (None, gone):
                    found.append(record)
                    return True
            return False

        tools = {n: t for n, t in self.tools().items() if n != gone}
        wait_until(arrived, self.size.timeout, what, step=0.002, tools=tools)
        return min(found, key=lambda r: r.monotonic)

    def elected(self, name: str) -> dict[str, Any]:
        """The last ``ha.elected`` in the replica's log (its current life), once there."""
        path = self.replicas[name].tool.log_path
        found: list[dict[str, Any]] = []

        def logged() -> bool:
            found[:] = events(path, ev.HA_ELECTED)
            return bool(found)

        wait_until(logged, self.size.timeout, f"{name}'s ha.elected", step=0.02,
                   tools=self.tools())
        return found[-1]

    def stop(self) -> None:
        for replica in self.replicas.values():
            replica.tool.stop()


@dataclass
class Run:
    per_cycle: float
    polling: int
    kill_s: float
    term_s: float
    overlap: int
    term_status: int | None
    leaders: list[str]
    epochs: list[int]  # of each leader's ha.elected
    elected_to_request: list[float]  # each takeover's, seconds


def run(size: Size = FULL) -> Result:
    from tests.pg import Server, missing  # noqa: PLC0415 (only the PostgreSQL benchmarks)

    result = Result("failover", "three replicas on one PostgreSQL database: takeover after "
                    "SIGKILL and SIGTERM, requests per cycle", settings=asdict(size))
    why = missing()
    if why is not None:
        raise BenchError(f"PostgreSQL is not available: {why}")
    pg = Server(durable=True).start()
    runs: list[Run] = []
    try:
        for index in range(size.runs):
            runs.append(_one_run(size, index, pg.database(), random.Random(1500 + index)))
    finally:
        pg.stop()
    bound = size.lease + size.renew
    result.figures += [
        Figure("failover.requests_per_cycle", f"API requests per poll cycle, "
               f"{len(size.replicas)} replicas, {size.sessions:,} healthy sessions",
               "requests", "run", [r.per_cycle for r in runs], target=Target.all_equal(1, "1"),
               digits=2),
        Figure("failover.replicas_polling", f"replicas that sent any request in those "
               f"{size.cycles} cycles", "replicas", "run", [r.polling for r in runs],
               target=Target.all_equal(1, "1"), digits=0),
        Figure("failover.sigkill", f"leader SIGKILLed to the first request from another "
               f"replica, lease {size.lease:g} s, renew {size.renew:g} s", "s", "run",
               [r.kill_s for r in runs], digits=3),
        Figure("failover.sigkill_ratio", "the same, over lease + renew", "ratio", "run",
               [r.kill_s / bound for r in runs],
               target=Target.median_at_most(1.0, f"median <= 1 (lease + renew = {bound:g} s)"),
               digits=3),
        Figure("failover.sigterm", "leader SIGTERMed (it resigns) to the first request from "
               "another replica", "s", "run", [r.term_s for r in runs],
               target=Target.max_at_most(1.0, "<= 1 s, every run"), digits=3),
        Figure("failover.elected_to_request", "the new leader's ha.elected to its first "
               "request (log time to arrival, both on this host's wall clock)", "s",
               "takeover", [lag for r in runs for lag in r.elected_to_request], digits=3),
        Figure("failover.sigterm_overlap", "requests from the resigning leader after the new "
               "leader's first", "requests", "run", [r.overlap for r in runs],
               target=Target.all_equal(0, "0"), digits=0),
    ]
    result.notes.append(
        f"{len(size.replicas)} replicas ({', '.join(size.replicas)}: `python -m supervisor "
        f"run` each) on one PostgreSQL database (Debian's server, its durable defaults, "
        f"127.0.0.1; a fresh database per run), one simulator with {size.sessions:,} healthy "
        f"sessions, P = {size.poll_interval:g} s (jitter {size.poll_jitter:g} s), ha.lease "
        f"{size.lease:g} s, ha.renew {size.renew:g} s (the defaults' 3:1). Who sent each "
        f"request: its User-Agent in the simulator's log; the leader by /readyz, checked "
        f"against the log before each signal. SIGKILL at a random phase of the renewal: "
        f"the lease expires lease - renew to lease after the kill, and a standby tries "
        f"as it expires (it waits until the expiry it saw, at most one renew).")
    result.notes.append(
        "Leaders, run by run (first, after SIGKILL, after SIGTERM): "
        + "; ".join(" -> ".join(r.leaders) for r in runs)
        + ". Their epochs: " + "; ".join(" -> ".join(map(str, r.epochs)) for r in runs)
        + ". SIGTERM exit statuses: " + ", ".join(str(r.term_status) for r in runs) + ".")
    return result


def _one_run(size: Size, index: int, dsn: str, rng: random.Random) -> Run:
    server = start_simulator({"seed": 1500 + index, "session_count": size.sessions})
    cluster = Cluster(size, server, dsn, index)
    try:
        # Started in turn, a different one first each run (the first usually leads).
        order = list(size.replicas[index % len(size.replicas):]
                     + size.replicas[:index % len(size.replicas)])
        for name in order:
            cluster.start(name)
        first = cluster.wait_settled("one leader and two standbys")
        epochs = [int(cluster.elected(first)["epoch"])]
        lags: list[float] = []

        # Requests per cycle: after the leader's warm-up lists, ``cycles`` of its cycles.
        def lists_from(name: str) -> int:
            return sum(1 for r in requests(server, "list") if replica_of(r) == name)

        counted = lists_from(first) - 1 + size.warmup
        wait_until(lambda: lists_from(first) > counted + size.cycles,
                   (size.warmup + size.cycles) * size.poll_interval * 2 + size.timeout,
                   f"{size.cycles} poll cycles", step=0.05, tools=cluster.tools())
        per_cycle, senders = cycle_counts(requests(server), first, counted, size.cycles)

        # SIGKILL the leader at a random phase of its renewal.
        killed = _check_leader(cluster, first)
        time.sleep(rng.uniform(0, size.renew))
        at = time.monotonic()
        os.kill(cluster.replicas[killed].tool.pid, signal.SIGKILL)
        taken = cluster.first_from_others(killed, at, "a takeover after SIGKILL")
        kill_s = taken.monotonic - at
        _takeover(cluster, taken, epochs, lags)
        cluster.replicas[killed].tool.stop()
        cluster.start(killed)  # it comes back, and stands by
        second = cluster.wait_settled("the killed replica back as a standby")
        if second == killed:
            raise BenchError(f"replica {killed} leads again after its restart")

        # SIGTERM the new leader: it resigns, and another takes over at once.
        resigning = _check_leader(cluster, second)
        at = time.monotonic()
        os.kill(cluster.replicas[resigning].tool.pid, signal.SIGTERM)
        taken = cluster.first_from_others(resigning, at, "a takeover after SIGTERM")
        term_s = taken.monotonic - at
        _takeover(cluster, taken, epochs, lags)
        term_status = _exit_status(cluster.replicas[resigning].tool, size.timeout)
        overlap = sum(1 for r in requests(server) if replica_of(r) == resigning
                      and r.monotonic >= taken.monotonic)
        third = replica_of(taken) or "?"
        return Run(per_cycle, len(senders), kill_s, term_s, overlap, term_status,
                   [first, second, third], epochs, lags)
    finally:
        cluster.stop()
        server.stop()


def _takeover(cluster: Cluster, taken: RequestRecord, epochs: list[int],
              lags: list[float]) -> None:
    """The new leader's epoch, and its first request's arrival less its ``ha.elected``."""
    elected = cluster.elected(replica_of(taken) or "?")
    epochs.append(int(elected["epoch"]))
    at = datetime.fromisoformat(str(elected["timestamp"]).replace("Z", "+00:00"))
    lags.append(taken.wall - at.timestamp())


def _check_leader(cluster: Cluster, leader: str) -> str:
    """The leader by ``/readyz``, which must be the replica sending the lists."""
    by_log = cluster.leader_by_log()
    if by_log != leader:
        raise BenchError(f"/readyz says {leader} leads, the simulator's log {by_log}")
    return leader


def _exit_status(tool: Tool, timeout: float) -> int | None:
    """Its exit status once it has stopped on its own (a second SIGTERM would cut its
    shutdown short), then its log closed."""
    if tool.proc is not None:
        try:
            tool.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{tool.log_path.name}: still running {timeout:g} s after "
                             "SIGTERM") from None
    return tool.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["FULL", "QUICK", "Size", "cycle_counts", "replica_of", "run"]
