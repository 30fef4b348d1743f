"""Three daemons on one PostgreSQL database, end to end (issue 15): ``run`` as a user starts
it, three times (replicas a, b and c), against the simulator over real HTTP and a real
PostgreSQL server (tests/pg.py). Exactly one polls; a leader killed in a storm of restarts
is replaced within the lease and one renewal, and no session is restarted twice or lost
from the history; a ``Retry-After`` it was given is honoured by its successor; a leader
frozen past its lease sends nothing once it thaws; a database gone for 30 s stops
supervision loudly, and it resumes by itself when the database is back.

Each replica's stdout and stderr go to files (a pipe nobody reads could fill and block
it); its JSON log is read from there. The simulator runs in this process, so its request
log's ``monotonic`` times are this process's ``time.monotonic()``; each request names its
replica in its User-Agent (``wasend-supervisor/<version> (replica <name>)``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from supervisor.simulator import SimulatorServer
from supervisor.simulator.reqlog import RequestRecord
from supervisor.state.postgres import PostgresStore
from supervisor.state.store import StateError
from tests import pg
from tests.alerts.receivers import HttpReceiver
from tests.e2e.conftest import ROOT, SimFactory
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

LEASE = 3.0  # ha.lease
RENEW = 1.0  # ha.renew
POLL = 0.3  # poll_interval
# What a loaded two-CPU machine may add to a bound the contract sets (a process's turn
# on a CPU, a request's way through the loopback).
SLACK = 0.5
IN_FLIGHT = 0.5  # seconds a request sent just before a SIGSTOP may take to arrive
NAMES = ("a", "b", "c")

_REPLICA = re.compile(r"\(replica ([^)\s]+)\)")


def replica_of(agent: str) -> str | None:
    """The replica a User-Agent names (None: none named)."""
    found = _REPLICA.search(agent)
    return found.group(1) if found else None


class Replica:
    """One ``run`` process: replica ``name`` of the supervisor, its log in files."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.out_path = logs / f"{name}.out"
        self.err_path = logs / f"{name}.err"
        self._out: IO[str] = self.out_path.open("w")
        self._err: IO[str] = self.err_path.open("w")
        full = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                "HOME": os.environ.get("HOME", "/tmp"), **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor", "run"], env=full,
                                     cwd=ROOT, stdout=self._out, stderr=self._err, text=True)
        self.http = httpx.Client(trust_env=False, timeout=2.0)
        self._port: int | None = None

    # ------------------------------------------------------------------ its log

    def text(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines written so far (of the event ``name``, if given)."""
        found: list[dict[str, Any]] = []
        for line in self.text().splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line being written
            if isinstance(entry, dict) and (name is None or entry.get("event") == name):
                found.append(entry)
        return found

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    # ------------------------------------------------------------------ its listener

    @property
    def port(self) -> int:
        if self._port is None:
            wait_for(lambda: self.events("http.listening") or self.proc.poll() is not None,
                     timeout=30, describe=lambda: f"{self.name} does not listen:\n{self.tail()}")
            listening = self.events("http.listening")
            assert listening, f"{self.name} exited ({self.proc.poll()}):\n{self.tail()}"
            self._port = int(str(listening[0]["address"]).rsplit(":", 1)[1])
        return self._port

    def get(self, path: str) -> httpx.Response | None:
        """``path`` of its listener (None: no answer, as from a stopped process)."""
        try:
            return self.http.get(f"http://127.0.0.1:{self.port}{path}")
        except httpx.HTTPError:
            return None

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: its status code and body (0 and {} when it does not answer)."""
        answer = self.get("/readyz")
        if answer is None:
            return 0, {}
        try:
            body = answer.json()
        except ValueError:
            body = {}
        return answer.status_code, body if isinstance(body, dict) else {}

    def role(self) -> str | None:
        return self.readyz()[1].get("role")

    # ------------------------------------------------------------------ the process

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> int | None:
        """End it (SIGTERM, SIGKILL after 15 s); its exit status."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            status: int | None = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = None
            self.proc.wait(10)
        self.http.close()
        self._out.close()
        self._err.close()
        return status


def env_for(server: SimulatorServer, url: str, name: str, **extra: str) -> dict[str, str]:
    return {"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
            "WASEND_SUPERVISOR_LOG_FORMAT": "json", "WASEND_SUPERVISOR_STATE_URL": url,
            "WASEND_SUPERVISOR_POLL_INTERVAL": str(POLL),
            "WASEND_SUPERVISOR_POLL_JITTER": "0",
            "WASEND_SUPERVISOR_RATE_LIMIT": "50", "WASEND_SUPERVISOR_SHUTDOWN_GRACE": "3",
            # Long enough that a restart is judged by what is seen, never timed out: a
            # second restart of one session is then a double, whatever the timing.
            "WASEND_SUPERVISOR_STARTING_TIMEOUT": "30",
            "WASEND_SUPERVISOR_BACKOFF__INITIAL": "0.5", "WASEND_SUPERVISOR_BACKOFF__MAX": "1",
            "WASEND_SUPERVISOR_UNREADY_AFTER": "20",
            "WASEND_SUPERVISOR_HTTP_LISTEN": "127.0.0.1:0",
            "WASEND_SUPERVISOR_HA__ENABLED": "true",
            "WASEND_SUPERVISOR_HA__REPLICA": name,
            "WASEND_SUPERVISOR_HA__LEASE": str(LEASE),
            "WASEND_SUPERVISOR_HA__RENEW": str(RENEW),
            **extra}


Start = Callable[..., dict[str, Replica]]


@pytest.fixture
def replicas() -> Iterator[Start]:
    """``start(server, url, **env)``: replicas a, b and c on the database ``url``; all are
    ended at the end (their logs' last lines printed, for a failure's report). Their logs
    are in a directory of this fixture's own, not under ``tmp_path``, which another
    pytest run on the machine may prune while this one runs."""
    started: list[Replica] = []
    logs = Path(tempfile.mkdtemp(prefix="wsup-ha-"))

    def start(server: SimulatorServer, url: str, **extra: str) -> dict[str, Replica]:
        group = {name: Replica(name, env_for(server, url, name, **extra), logs)
                 for name in NAMES}
        started.extend(group.values())
        return group

    yield start
    for replica in started:  # SIGTERM to all first: they stop side by side
        if replica.running:
            replica.signal(signal.SIGCONT)
            replica.signal(signal.SIGTERM)
    for replica in started:
        status = replica.close()
        print(f"--- replica {replica.name} (exit {status}):\n{replica.tail()}")
    shutil.rmtree(logs, ignore_errors=True)


# ---------------------------------------------------------------------- helpers


def leader_among(group: dict[str, Replica], *, timeout: float = 30,
                 exclude: tuple[str, ...] = ()) -> tuple[Replica, int]:
    """Wait until exactly one of the replicas (less ``exclude``) says it leads and every
    other says it stands by for that one, all naming the same epoch; the leader and the
    epoch."""
    found: list[tuple[Replica, int]] = []
    seen: dict[str, tuple[int, dict[str, Any]]] = {}

    def agreed() -> bool:
        seen.clear()
        for name, replica in group.items():
            if name not in exclude:
                seen[name] = replica.readyz()
        leaders = [n for n, (_, body) in seen.items() if body.get("role") == "leader"]
        if len(leaders) != 1:
            return False
        epochs = {body.get("epoch") for _, body in seen.values()}
        named = {body.get("leader") for _, body in seen.values()}
        standbys = [n for n, (_, body) in seen.items() if body.get("role") == "standby"]
        if len(epochs) != 1 or named != {leaders[0]} or len(standbys) != len(seen) - 1:
            return False
        epoch = epochs.pop()
        if not isinstance(epoch, int):
            return False
        found.append((group[leaders[0]], epoch))
        return True

    wait_for(agreed, timeout=timeout, step=0.05,
             describe=lambda: f"no agreed leader: {seen}")
    return found[-1]


def requests_of(server: SimulatorServer, replica: str | None = None, *,
                since: float | None = None, kind: str | None = None) -> list[RequestRecord]:
    """The simulator's logged API requests: of one replica (by its User-Agent), arrived at
    or after ``since`` (monotonic), of one ``kind``."""
    return [r for r in server.simulator.requests(since=since)
            if (replica is None or replica_of(r.agent) == replica)
            and (kind is None or r.kind == kind)]


def listed_ok(server: SimulatorServer, replica: str) -> bool:
    return any(r.status == 200 for r in requests_of(server, replica, kind="list"))


def restarts(server: SimulatorServer) -> Counter[str]:
    return Counter(r.session or "" for r in server.simulator.requests() if r.kind == "restart")


def history_rows(url: str) -> list[tuple[Any, ...]]:
    """Every history row in the database, each whole, oldest first ([] before a daemon
    made the tables, or while the database cannot be reached)."""
    try:
        store = PostgresStore.open_readonly(url)
    except (FileNotFoundError, StateError):  # no tables yet, or no server
        return []
    try:
        return [(e.session_id, e.event, e.at, e.action, e.attempt, e.outcome, e.reason,
                 e.status, e.http_status, e.duration_ms, e.next_attempt_at)
                for e in store.read_history()]
    finally:
        store.close()


def events_per_session(rows: list[tuple[Any, ...]], event: str) -> Counter[str]:
    return Counter(row[0] for row in rows if row[1] == event)


def elected_epochs(replica: Replica) -> list[int]:
    return [int(e["epoch"]) for e in replica.events("ha.elected")]


def holds_for(seconds: float, condition: Callable[[], bool], describe: Callable[[], str],
              step: float = 0.1) -> None:
    """``condition()`` stays true for ``seconds`` (an invariant watched over a stretch of
    the scenario, not a wait in place of a condition)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), describe()
        time.sleep(step)
    assert condition(), describe()


def no_duplicate_rows(rows: list[tuple[Any, ...]]) -> None:
    doubled = [row for row, n in Counter(rows).items() if n > 1]
    assert not doubled, f"history rows written twice: {doubled}"
    claims = Counter((row[0], row[4]) for row in rows if row[1] == "restart.requested")
    twice = [key for key, n in claims.items() if n > 1]
    assert not twice, f"one attempt (session, attempt) claimed twice: {twice}"


# ---------------------------------------------------------------------- the tests


def test_exactly_one_replica_polls_and_all_three_agree_on_it(
    simulator: SimFactory, pg_url: str, replicas: Start,
) -> None:
    server = simulator({"session_count": 5})
    group = replicas(server, pg_url)
    leader, epoch = leader_among(group)
    others = [r for r in group.values() if r is not leader]

    mark = time.monotonic()
    wait_for(lambda: len(requests_of(server, since=mark, kind="list")) >= 8, timeout=20,
             describe="the leader does not poll every poll_interval")
    every = server.simulator.requests()
    agents = Counter(replica_of(r.agent) for r in every)
    assert agents == {leader.name: len(every)}, f"requests by replica: {agents}"
    assert all(r.agent.startswith("wasend-supervisor/") for r in every)
    # One list per cycle: about one every poll_interval since the mark, never three.
    span = time.monotonic() - mark
    assert len(requests_of(server, since=mark, kind="list")) <= span / POLL + 2

    status, body = leader.readyz()
    assert status == 200, body
    assert (body["role"], body["replica"], body["leader"], body["epoch"]) == (
        "leader", leader.name, leader.name, epoch)
    for other in others:
        status, body = other.readyz()
        assert status == 200, body  # a standby that reaches the database is ready
        assert (body["role"], body["replica"], body["leader"], body["epoch"]) == (
            "standby", other.name, leader.name, epoch)
        assert any(e.get("leader") == leader.name for e in other.events("ha.standby"))
        assert not other.events("ha.elected")
    assert elected_epochs(leader) == [epoch]
    answer = leader.get("/metrics")
    assert answer is not None
    assert "wasend_supervisor_ha_leader 1" in answer.text
    assert re.search(rf"^wasend_supervisor_ha_epoch {epoch}(\.0)?$", answer.text, re.M)
    for other in others:
        answer = other.get("/metrics")
        assert answer is not None and "wasend_supervisor_ha_leader 0" in answer.text

    # SIGTERM: the leader resigns, and a standby takes over at once, not after the lease.
    sent = time.monotonic()
    leader.signal(signal.SIGTERM)
    wait_for(lambda: any(requests_of(server, o.name, since=sent) for o in others),
             timeout=LEASE + RENEW + 5, describe="no standby took over after a SIGTERM")
    first = min(r.monotonic for o in others for r in requests_of(server, o.name, since=sent))
    assert leader.proc.wait(15) == 0, leader.tail()
    assert [e["epoch"] for e in leader.events("ha.resigned")] == [epoch]
    print(f"handover after SIGTERM: {first - sent:.3f} s")
    assert first - sent <= 1.0 + POLL + SLACK


def storm(simulator: SimFactory, url: str, replicas: Start, count: int, *, sent: int,
          ) -> tuple[list[str], SimulatorServer, dict[str, Replica], Replica, int]:
    """Three replicas on ``url`` (our own rate limit 8 a second, so that a storm lasts),
    ``count`` sessions all set FAILED once one leads and has polled, until the leader has
    sent ``sent`` restarts: the sessions, the simulator, the replicas, the leader, its
    epoch."""
    ids = [f"s{i:02d}" for i in range(count)]
    server = simulator({"sessions": [{"id": s} for s in ids], "session_count": 0,
                        "start_delay": 0.5})
    group = replicas(server, url, WASEND_SUPERVISOR_RATE_LIMIT="8")
    leader, epoch = leader_among(group)
    wait_for(lambda: listed_ok(server, leader.name), timeout=15,
             describe="the leader never polled")
    for session in ids:
        server.simulator.set_status(session, "FAILED")
    wait_for(lambda: len(requests_of(server, leader.name, kind="restart")) >= sent,
             timeout=20, describe=lambda: f"the storm did not start: {restarts(server)}")
    return ids, server, group, leader, epoch


def test_a_leader_killed_in_a_storm_is_replaced_and_no_restart_is_doubled_or_lost(
    simulator: SimFactory, pg_url: str, replicas: Start,
) -> None:
    # Our own rate limit makes the storm last: 40 restarts at 8 a second.
    ids, server, group, old, epoch = storm(simulator, pg_url, replicas, 40, sent=12)
    killed_wall, killed = time.time(), time.monotonic()
    old.kill()
    sent_by_old = Counter(r.session for r in requests_of(server, old.name, kind="restart"))
    assert len(sent_by_old) < len(ids), "the storm was over before the kill: make it longer"

    new, new_epoch = leader_among(group, exclude=(old.name,), timeout=LEASE + RENEW + 10)
    wait_for(lambda: requests_of(server, new.name, since=killed), timeout=10,
             describe="the new leader does not poll")
    first = min(r.monotonic for r in requests_of(server, new.name, since=killed))
    takeover = first - killed
    print(f"takeover after SIGKILL: {takeover:.3f} s; {len(sent_by_old)} restarts sent "
          f"by the old leader")
    assert takeover <= LEASE + RENEW + POLL + SLACK
    assert new_epoch > epoch
    assert elected_epochs(new) == [new_epoch]
    others = [r for r in group.values() if r not in (old, new)]
    assert not requests_of(server, others[0].name), "a standby sent requests"

    wait_for(lambda: all(server.simulator.status(s) == "WORKING" for s in ids), timeout=40,
             describe=lambda: f"not all back: {server.simulator.statuses()}")
    wait_for(lambda: events_per_session(history_rows(pg_url), "restart.succeeded")
             == dict.fromkeys(ids, 1), timeout=20,
             describe=lambda: f"successes in the history: "
                              f"{events_per_session(history_rows(pg_url), 'restart.succeeded')}")

    # No double: each session was restarted exactly once (one request, long before its
    # verification window could end), by one leader or the other. (The old leader's are
    # read again: one in flight at the kill is logged once answered.)
    assert restarts(server) == dict.fromkeys(ids, 1), restarts(server)
    sent_by_old = Counter(r.session for r in requests_of(server, old.name, kind="restart"))
    by_new = Counter(r.session for r in requests_of(server, new.name, kind="restart"))
    assert set(by_new) | set(sent_by_old) == set(ids) and not set(by_new) & set(sent_by_old)
    assert not any(r.early for r in server.simulator.requests())

    # No loss: every request sent has its history row. A claim the old leader wrote but
    # never sent (it died between the two) is the one row more a session may have: it
    # was written before the kill, and was followed by a failure and the new claim.
    rows = history_rows(pg_url)
    no_duplicate_rows(rows)
    requested = events_per_session(rows, "restart.requested")
    unsent = [s for s in ids if requested[s] > restarts(server)[s]]
    print(f"claims written but never sent by the old leader: {len(unsent)}; the history "
          f"of one: {[r[:2] + r[4:8] for r in rows if unsent and r[0] == unsent[0]]}")
    for session in ids:
        extra = requested[session] - restarts(server)[session]
        assert extra in (0, 1), (session, [r for r in rows if r[0] == session])
        if extra:
            first_claim = min(r[2] for r in rows if r[0] == session
                              and r[1] == "restart.requested")
            assert first_claim <= killed_wall and session not in sent_by_old, (
                session, [r for r in rows if r[0] == session])


def test_a_retry_after_given_to_the_leader_is_honoured_by_the_next_across_a_sigkill(
    simulator: SimFactory, pg_url: str, replicas: Start,
) -> None:
    ids = [f"s{i}" for i in range(5)]
    server = simulator({"sessions": [{"id": s} for s in ids], "session_count": 0,
                        "start_delay": 0.3})
    group = replicas(server, pg_url)
    old, _ = leader_among(group)
    wait_for(lambda: listed_ok(server, old.name), timeout=15, describe="the leader never polled")

    server.simulator.update_faults(rate_limit={"burst": 1, "retry_after": 10})
    wait_for(lambda: any(r.status == 429 for r in server.simulator.requests()), timeout=10,
             describe="the leader was never answered 429")
    (refused,) = [r for r in server.simulator.requests() if r.status == 429]
    assert replica_of(refused.agent) == old.name

    def paused_in_database() -> bool:
        try:
            store = PostgresStore.open_readonly(pg_url)
        except (FileNotFoundError, StateError):
            return False
        try:
            until = store.paused_until()
        finally:
            store.close()
        return until is not None and until > time.time() + 5

    wait_for(paused_in_database, timeout=5, describe="the pause is not in the database")
    old.kill()
    killed = time.monotonic()
    server.simulator.set_status("s2", "FAILED")  # to be restarted once the pause is over

    new, _ = leader_among(group, exclude=(old.name,), timeout=LEASE + RENEW + 10)
    print(f"new leader {new.name} {time.monotonic() - killed:.3f} s after the kill")
    wait_for(lambda: server.simulator.status("s2") == "WORKING", timeout=30,
             describe=lambda: f"s2 was not restarted: {restarts(server)}")

    after = [r for r in server.simulator.requests() if r.seq > refused.seq]
    assert not any(r.early for r in server.simulator.requests())
    assert after, "nothing was sent after the pause"
    print(f"first request {after[0].monotonic - refused.monotonic:.3f} s after the 429")
    assert all(r.monotonic >= refused.monotonic + 10 for r in after), [
        (r.seq, r.kind, round(r.monotonic - refused.monotonic, 3), r.agent) for r in after]
    assert {replica_of(r.agent) for r in after} == {new.name}
    assert restarts(server) == {"s2": 1}
    assert killed < refused.monotonic + 10  # the successor did inherit the pause


def test_a_leader_frozen_past_its_lease_sends_nothing_once_it_thaws(
    simulator: SimFactory, pg_url: str, replicas: Start,
) -> None:
    # Frozen in the middle of a storm: restarts claimed, waiting to be sent.
    ids, server, group, old, epoch = storm(simulator, pg_url, replicas, 20, sent=3)
    old.signal(signal.SIGSTOP)
    # A request it had written to its socket before the signal may still be read by the
    # simulator just after it (a busy machine): what counts is what arrives after that.
    stopped = time.monotonic() + IN_FLIGHT
    new, new_epoch = leader_among(group, exclude=(old.name,), timeout=LEASE + RENEW + 10)
    wait_for(lambda: requests_of(server, new.name, since=stopped), timeout=10,
             describe="the new leader does not poll")
    assert new_epoch > epoch
    # Frozen for longer than its lease, whenever it last renewed it.
    holds_for(max(0.0, LEASE + SLACK - (time.monotonic() - stopped)),
              lambda: not requests_of(server, old.name, since=stopped),
              lambda: f"sent while frozen: {requests_of(server, old.name, since=stopped)}")
    old.signal(signal.SIGCONT)
    thawed = time.monotonic()

    def stood_down() -> bool:
        body = old.readyz()[1]
        return body.get("role") == "standby" and body.get("leader") == new.name

    wait_for(stood_down, timeout=LEASE + RENEW + 5,
             describe=lambda: f"it does not stand by: {old.readyz()}\n{old.tail()}")
    lost = old.events("ha.lost")
    assert lost and lost[-1]["epoch"] == epoch, old.tail()
    assert lost[-1]["reason"] in ("lease_taken", "lease_expired")
    assert any(e.get("leader") == new.name for e in old.events("ha.standby"))
    # Watched on for a while more: nothing from it, ever after the thaw.
    holds_for(2 * RENEW + 2 * POLL, lambda: not requests_of(server, old.name, since=thawed),
              lambda: f"sent after the thaw: {requests_of(server, old.name, since=thawed)}")
    assert elected_epochs(old) == [epoch]

    wait_for(lambda: all(server.simulator.status(s) == "WORKING" for s in ids), timeout=40,
             describe=lambda: f"not all back: {server.simulator.statuses()}")
    assert not requests_of(server, old.name, since=thawed)
    assert restarts(server) == dict.fromkeys(ids, 1), restarts(server)
    no_duplicate_rows(history_rows(pg_url))


@pytest.fixture
def own_pg(pg_server: pg.Server) -> Iterator[pg.Server]:
    """A PostgreSQL server of this test's own, to stop and start (``pg_server`` first, for
    its verdict on whether one can run here)."""
    server = pg.Server().start()
    yield server
    server.stop()


def titles(receiver: HttpReceiver) -> list[str]:
    return [str(r.json()["title"]) for r in receiver.requests]


@pytest.fixture
def alerts_receiver() -> Iterator[HttpReceiver]:
    running = HttpReceiver().start()
    yield running
    running.stop()


def test_a_database_gone_for_30_s_stops_supervision_loudly_and_it_resumes(
    simulator: SimFactory, own_pg: pg.Server, replicas: Start, alerts_receiver: HttpReceiver,
) -> None:
    url = own_pg.database()
    ids = [f"s{i}" for i in range(5)]
    server = simulator({"sessions": [{"id": s} for s in ids], "session_count": 0,
                        "start_delay": 0.3})
    # A person is told, by the leader that stopped: its outbox is in the database.
    group = replicas(server, url,
                     WASEND_SUPERVISOR_ALERTS__URLS=f"json://{alerts_receiver.url}/ha")
    leader, epoch = leader_among(group)
    wait_for(lambda: listed_ok(server, leader.name), timeout=15,
             describe="the leader never polled")

    own_pg.pause()
    gone = time.monotonic()
    wait_for(lambda: any(e.get("level") == "error" for e in leader.events("ha.lost")),
             timeout=LEASE + RENEW + 5,
             describe=lambda: f"no ha.lost at level error:\n{leader.tail()}")
    lost_after = time.monotonic() - gone
    (lost,) = leader.events("ha.lost")
    assert lost["epoch"] == epoch and lost["replica"] == leader.name
    print(f"ha.lost {lost_after:.3f} s after the database went")
    assert lost_after <= LEASE + RENEW + SLACK

    def stopped() -> bool:
        status, body = leader.readyz()
        return status == 503 and body.get("role") == "stopped"

    wait_for(stopped, timeout=5, describe=lambda: f"/readyz: {leader.readyz()}")
    server.simulator.set_status("s3", "FAILED")  # not to be restarted before it is back

    def quiet() -> bool:
        return not requests_of(server, since=gone + LEASE + 0.25)

    wait_for(lambda: titles(alerts_receiver), timeout=10,
             describe="no alert that supervision stopped")
    assert titles(alerts_receiver) == [
        f"Supervision stopped: replica '{leader.name}' cannot reach its database"]
    holds_for(30 - (time.monotonic() - gone), quiet,
              lambda: f"sent without the database: {requests_of(server, since=gone + LEASE)}")
    assert stopped()
    assert server.simulator.status("s3") == "FAILED"
    own_pg.resume()
    back = time.monotonic()

    wait_for(lambda: any(e > epoch for r in group.values() for e in elected_epochs(r)),
             timeout=LEASE + RENEW + 20,
             describe=lambda: "\n".join(f"{r.name}: {r.tail(10)}" for r in group.values()))
    again, new_epoch = leader_among(group, timeout=20)
    assert new_epoch > epoch
    wait_for(lambda: server.simulator.status("s3") == "WORKING", timeout=20,
             describe=lambda: f"s3 not restarted: {restarts(server)}")
    first = min(r.monotonic for r in requests_of(server, since=back))
    print(f"first request {first - back:.3f} s after the database came back, by {again.name}")
    wait_for(lambda: events_per_session(history_rows(url), "restart.succeeded") == {"s3": 1},
             timeout=20, describe=lambda: f"history: {history_rows(url)}")
    assert restarts(server) == {"s3": 1}
    rows = history_rows(url)
    no_duplicate_rows(rows)
    assert events_per_session(rows, "restart.requested") == {"s3": 1}
    assert {replica_of(r.agent) for r in requests_of(server, since=back)} == {again.name}
    wait_for(lambda: len(titles(alerts_receiver)) == 2, timeout=10,
             describe=lambda: f"alerts: {titles(alerts_receiver)}")
    assert titles(alerts_receiver)[1] == (
        f"Resolved: replica '{leader.name}' reaches its database again")
    # Loudly, not noisily: the database gone is said by ``state.unavailable`` and
    # ``ha.lost``, not by a poll job that crashed (a traceback from the scheduler).
    for replica in group.values():
        crashed = [e for e in replica.events() if "raised an exception" in str(e.get("event"))
                   or e.get("event") == "poll.crashed"]
        assert not crashed, (replica.name, len(crashed), crashed[0])


def test_a_leader_stopped_for_want_of_the_database_stands_by_when_another_won_it_back(
    simulator: SimFactory, own_pg: pg.Server, replicas: Start,
) -> None:
    """The previous test's end when a standby, not the stopped leader, is first to take
    the lease once the database is back (made certain here: the stopped leader is frozen
    while the database comes back): it stands by, ready, and sends nothing."""
    url = own_pg.database()
    server = simulator({"session_count": 3})
    group = replicas(server, url)
    old, epoch = leader_among(group)
    wait_for(lambda: listed_ok(server, old.name), timeout=15, describe="the leader never polled")

    own_pg.pause()
    wait_for(lambda: old.readyz()[1].get("role") == "stopped", timeout=LEASE + RENEW + 5,
             describe=lambda: f"/readyz: {old.readyz()}")
    old.signal(signal.SIGSTOP)
    own_pg.resume()
    new, new_epoch = leader_among(group, exclude=(old.name,), timeout=LEASE + RENEW + 20)
    assert new_epoch > epoch
    old.signal(signal.SIGCONT)
    thawed = time.monotonic()

    def stands_by() -> bool:
        status, body = old.readyz()
        return (status, body.get("role"), body.get("leader")) == (200, "standby", new.name)

    wait_for(stands_by, timeout=LEASE + RENEW + 5,
             describe=lambda: f"/readyz: {old.readyz()}\n{old.tail(8)}")
    leader_among(group, timeout=5)
    assert not requests_of(server, old.name, since=thawed)
