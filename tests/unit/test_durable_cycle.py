"""The cycle on the SQLite store: claims committed before requests, nothing written for
healthy sessions, two supervisors on one file, a supervisor that comes back after dying
mid-restart, claims lost and decided again, polls backing off while the API is down.

Fake clock and in-memory API; state files in tmp_path (two stores on one file stand for
two processes). Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import sqlite3
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace
from structlog.testing import capture_logs

from supervisor.api.errors import (
    ApiTimeout,
    ApiUnreachable,
    AuthFailed,
    Conflict,
    RateLimited,
    ServerError,
)
from supervisor.domain.models import Phase, Record, SessionInfo, SessionList
from supervisor.domain.policy import Backoff, Policy
from supervisor.domain.verdict import UNKNOWN
from supervisor.ops.metrics import Metrics
from supervisor.runtime.check import run_check
from supervisor.runtime.cycle import Supervisor
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import MemoryStore, StateError
from tests.conftest import Opener
from tests.fakes import FakeApi, FakeClock, MaxRandom
from tests.waiting import until

POLICY = Policy(backoff=Backoff(initial=10, max=80, multiplier=2), max_restarts=5,
                starting_timeout=30, stable_after=60)


def names(events: list[MutableMapping[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def make(api: FakeApi, store: Any, clock: FakeClock, **kw: Any) -> Supervisor:
    return Supervisor(api, store, POLICY, clock, MaxRandom(), auth_retry_interval=300, **kw)


def open_store(path: Path, clock: FakeClock) -> SqliteStore:
    return SqliteStore.open(path, clock=clock)


def restarts(api: FakeApi) -> list[str]:
    return [sid for call, sid in api.calls if call == "restart"]


# --------------------------------------------------------------- writes and claims


async def test_a_restart_is_on_disk_as_in_flight_before_its_request_is_sent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    seen_on_disk: list[tuple[str, int, list[str]]] = []

    class Peeking(FakeApi):
        async def restart(self, session_id: str) -> SessionInfo:
            # Another connection, as a process started after a SIGKILL here would see it.
            conn = sqlite3.connect(path)
            record = SqliteStore.open_readonly(path).get(session_id)
            events = [e for (e,) in conn.execute("SELECT event FROM history")]
            conn.close()
            assert record is not None
            seen_on_disk.append((record.phase.value, record.attempt, events))
            return await super().restart(session_id)

    clock = FakeClock()
    api = Peeking({"a": "WORKING", "b": "STOPPED"})
    sup = make(api, open_store(path, clock), clock)
    await sup.poll()
    assert restarts(api) == ["b"]
    assert seen_on_disk == [("verifying", 1, ["session.unhealthy", "restart.requested"])]


async def test_polls_of_healthy_sessions_write_only_their_heartbeat(tmp_path: Path) -> None:
    """A healthy poll writes no record: one statement per poll, its heartbeat row, in
    the poll's own transaction (one commit)."""
    path = tmp_path / "state.db"
    clock = FakeClock()
    store = open_store(path, clock)
    api = FakeApi({f"s{i}": "WORKING" for i in range(50)})
    sup = make(api, store, clock)
    await sup.poll()  # the first sighting writes the records
    observer = sqlite3.connect(path)
    records = observer.execute("SELECT session_id, version, updated_at FROM records").fetchall()
    history = observer.execute("SELECT count(*) FROM history").fetchone()
    versions = []
    for _ in range(20):
        clock.advance(30)
        assert (await sup.poll()).ok
        versions.append(observer.execute("PRAGMA data_version").fetchone()[0])
    assert len(set(versions)) == 20  # each poll committed (another connection sees it)
    assert observer.execute(
        "SELECT session_id, version, updated_at FROM records").fetchall() == records
    assert observer.execute("SELECT count(*) FROM history").fetchone() == history
    [(seen_at, last_ok_at)] = observer.execute("SELECT seen_at, last_ok_at FROM heartbeats")
    assert seen_at == last_ok_at == clock.now()


async def test_a_restart_cycle_leaves_its_history(shared_state: Opener) -> None:
    clock = FakeClock()
    store = shared_state(clock)
    api = FakeApi({"b": "STOPPED"})
    sup = make(api, store, clock)
    await sup.poll()
    clock.advance(5)
    api.statuses["b"] = "WORKING"
    await sup.poll()
    rows = store.read_history()
    assert [(r.event, r.action, r.attempt, r.outcome) for r in rows] == [
        ("session.unhealthy", None, None, "unhealthy"),
        ("restart.requested", "restart", 1, "requested"),
        ("restart.accepted", "restart", 1, "accepted"),
        ("restart.succeeded", None, 1, "succeeded"),
    ]
    assert rows[0].status == "STOPPED"
    assert rows[3].duration_ms == 5000
    assert rows[0].at == rows[1].at == rows[2].at == rows[3].at - 5


# ----------------------------------------------------------------- two processes


class Yielding(FakeApi):
    """Every call yields to the event loop first, as a real request would."""

    def __init__(self, statuses: dict[str, str]) -> None:
        super().__init__(statuses)
        self.gate: asyncio.Event | None = None

    async def list_sessions(self) -> SessionList:
        await asyncio.sleep(0)
        return await super().list_sessions()

    async def restart(self, session_id: str) -> SessionInfo:
        self.calls.append(("restart", session_id))
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)
        self.statuses[session_id] = self.after_restart
        return SessionInfo(session_id, None, self.after_restart)


async def test_two_supervisors_on_one_file_restart_a_session_once(shared_state: Opener) -> None:
    clock = FakeClock()
    api = Yielding({"a": "STOPPED", "b": "WORKING"})
    daemon = make(api, shared_state(clock), clock)
    check = make(api, shared_state(clock), clock)
    with capture_logs() as events:
        for _ in range(5):
            await asyncio.gather(daemon.poll(), check.poll())  # both list, then both decide
            clock.advance(1)
    assert restarts(api) == ["a"]
    assert names(events).count("restart.requested") == 1
    assert "state.left_to_other_process" in names(events)
    assert "restart.failed" not in names(events)  # a stale sighting judged nothing


async def test_a_restart_in_flight_elsewhere_is_left_to_its_owner(shared_state: Opener) -> None:
    clock = FakeClock()
    api = Yielding({"a": "STOPPED"})
    api.gate = asyncio.Event()  # the daemon's request hangs (say, at its rate gate)
    daemon = make(api, shared_state(clock), clock, in_flight_grace=60)
    check = make(api, shared_state(clock), clock, in_flight_grace=60)
    polling = asyncio.create_task(daemon.poll())
    await until(lambda: restarts(api), timeout=5, step=0)  # turns of the loop, no sleeping
    clock.advance(5)
    with capture_logs() as events:
        result = await check.poll()  # sees STOPPED: the daemon's request has not landed
    assert result.ok and restarts(api) == ["a"]
    assert [e.get("reason") for e in events if e["event"] == "state.left_to_other_process"] == [
        "restart_in_flight"]
    assert "restart.failed" not in names(events)
    api.gate.set()
    await polling
    record = check.store.get("a")
    assert record is not None and record.phase is Phase.VERIFYING
    assert record.verify_deadline is not None


async def test_after_dying_mid_restart_the_session_is_not_restarted_in_its_window(
    shared_state: Opener,
) -> None:
    clock = FakeClock()
    # What a process killed between its claim and the answer leaves behind.
    dead = shared_state(clock)
    dead.put(Record("a", phase=Phase.VERIFYING, last_status="STOPPED", attempt=1,
                    requested_at=clock.now(), since=clock.now(), last_outcome="requested"))
    dead.close()
    api = FakeApi({"a": "STOPPED"})
    clock.advance(1)
    sup = make(api, shared_state(clock), clock, in_flight_grace=20)
    with capture_logs() as events:
        for _ in range(4):  # inside the grace: its request may still be on its way
            await sup.poll()
            clock.advance(5)
        assert restarts(api) == []
        await sup.poll()  # past the grace: the attempt failed (unanswered), backoff starts
        assert restarts(api) == []
        failed = next(e for e in events if e["event"] == "restart.failed")
        assert failed["reason"] == "unanswered" and failed["next_attempt_in"] == 10
        clock.advance(9)
        await sup.poll()
        assert restarts(api) == []  # still inside the backoff
        clock.advance(1)
        await sup.poll()
    assert restarts(api) == ["a"]


async def test_a_backoff_started_by_an_earlier_run_is_honoured(shared_state: Opener) -> None:
    clock = FakeClock()
    api = FakeApi({"a": "FAILED"})
    api.after_restart = "FAILED"
    first = make(api, shared_state(clock), clock)
    await first.poll()  # restart 1
    clock.advance(1)
    await first.poll()  # still FAILED: attempt failed, next attempt in 10 s
    first.store.close()
    for _ in range(9):  # a check from a timer, every second, each a new process
        clock.advance(1)
        report = await run_check(make(api, shared_state(clock), clock))
        assert [r.outcome for r in report.rows] == ["waiting"]
    assert restarts(api) == ["a"]
    clock.advance(1)
    await run_check(make(api, shared_state(clock), clock))
    assert restarts(api) == ["a", "a"]


class RacingStore(MemoryStore):
    """Another process writes ``theirs`` just before this one's first claim."""

    def __init__(self, theirs: Record) -> None:
        super().__init__()
        self.theirs = theirs
        self.raced = False

    def swap(self, old: Record | None, new: Record | None) -> bool:
        if not self.raced and new is not None and new.phase is Phase.VERIFYING:
            self.raced = True
            self.put(self.theirs)
        return super().swap(old, new)


async def test_a_lost_claim_is_read_again_and_decided_again() -> None:
    clock = FakeClock()
    # The other process failed the session and started a backoff before we could claim.
    theirs = Record("a", name="name-a", phase=Phase.UNHEALTHY, last_status="STOPPED",
                    attempt=1, next_attempt_at=clock.now() + 60, since=clock.now())
    api = FakeApi({"a": "STOPPED"})
    store = RacingStore(theirs)
    sup = make(api, store, clock)
    with capture_logs() as events:
        await sup.poll()
    assert restarts(api) == []
    assert store.get("a") == theirs
    # The first decision (restart now) was neither logged nor sent; the second waits.
    assert names(events) == ["state.claim_lost", "poll.completed"]
    # Once the other process's backoff is over, this one restarts it.
    clock.advance(60)
    await sup.poll()
    assert restarts(api) == ["a"]


async def test_a_record_taken_over_while_acting_stops_the_follow_up_calls() -> None:
    clock = FakeClock()
    store = MemoryStore()
    theirs = Record("a", phase=Phase.UNHEALTHY, last_status="ERROR", attempt=4,
                    next_attempt_at=clock.now() + 300)

    class TakenOver(FakeApi):
        async def restart(self, session_id: str) -> SessionInfo:
            self.calls.append(("restart", session_id))
            store.put(theirs)  # another process writes while our request is out
            raise Conflict("must be stopped", call="restart", http_status=409)

    api = TakenOver({"a": "ERROR"})
    sup = make(api, store, clock)
    with capture_logs() as events:
        await sup.poll()
    assert api.calls == [("list", ""), ("restart", "a")]  # no re-read, stop or restart
    assert store.get("a") == theirs
    assert "state.write_conflict" in names(events)


# ------------------------------------------------------------------- poll backoff


async def test_polls_back_off_while_the_api_is_down_and_resume_at_once() -> None:
    clock = FakeClock()
    api = FakeApi({"a": "WORKING"})
    api.fail("list", ApiUnreachable("refused", call="list"), ServerError("503", call="list"),
             ApiTimeout("slow", call="list"), ApiUnreachable("refused", call="list"),
             ApiUnreachable("refused", call="list"))
    sup = make(api, MemoryStore(), clock, poll_interval=10.0)
    asked: list[int] = []
    with capture_logs() as events:
        for tick in range(26):
            before = len(api.calls)
            await sup.poll()
            if len(api.calls) > before:
                asked.append(tick)
            clock.advance(10)
    # Failures at 0, 1, 3, 7, 11 (waits of 1, 2, 4, 4, 4 intervals), success at 15.
    assert asked == [0, 1, 3, 7, 11, *range(15, 26)]
    failed = [e for e in events if e["event"] == "poll.failed"]
    assert len(failed) == 5  # one per failed cycle, none for the skipped ones
    assert [e["next_poll_in"] for e in failed] == [10, 20, 40, 40, 40]
    assert [e["consecutive_failures"] for e in failed] == [1, 2, 3, 4, 5]
    skipped = [e for e in events if e["event"] == "poll.skipped"]
    assert len(skipped) == 26 - len(asked)
    assert {e["reason"] for e in skipped} == {"api_unavailable"}


async def test_429_and_401_on_the_list_do_not_add_a_poll_backoff() -> None:
    clock = FakeClock()
    api = FakeApi({"a": "WORKING"})
    api.fail("list", RateLimited("slow", call="list"), RateLimited("slow", call="list"),
             RateLimited("slow", call="list"))
    sup = make(api, MemoryStore(), clock, poll_interval=10.0)
    for _ in range(4):
        await sup.poll()
        clock.advance(10)
    assert api.calls.count(("list", "")) == 4
    api.fail("list", AuthFailed("no", call="list", http_status=401))
    await sup.poll()
    assert sup.poll_resume_at is None


# ------------------------------------------------------------------ state trouble


class BrokenStore(MemoryStore):
    def transaction(self) -> Any:
        raise StateError("state.db is locked by another process (database is locked)")


async def test_a_state_file_that_cannot_be_written_fails_the_poll_not_the_process() -> None:
    clock = FakeClock()
    api = FakeApi({"a": "STOPPED"})
    sup = make(api, BrokenStore(), clock)
    with capture_logs() as events:
        result = await sup.poll()
    assert not result.ok and result.state_error is not None and "locked" in result.state_error
    assert restarts(api) == []  # nothing is sent that could not be recorded first
    assert [e["log_level"] for e in events if e["event"] == "state.unavailable"] == ["error"]
    report = await run_check(make(api, BrokenStore(), clock))
    assert report.exit_status == UNKNOWN
    assert report.error is not None and "state file" in report.error


async def test_a_closed_store_still_answers_what_it_knew(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_store(tmp_path / "state.db", clock)
    store.put(replace(Record("a"), attempt=2))
    store.close()
    assert store.get("a") == Record("a", attempt=2)


# ------------------------------------------------------------------ a full disk
#
# Two faults, both real and both made from outside the store. "full at commit": the
# process may not write past the end of the state file's write-ahead log as it is now
# (RLIMIT_FSIZE, SIGXFSZ ignored), so the next commit, which appends its pages to the log,
# fails after the writes before it succeeded, as on a full disk (for EFBIG SQLite says
# "disk I/O error" where for ENOSPC it says "database or disk is full"; the store takes
# both alike). A real full file system needs a mount, which CI may not allow (the fault
# suite fills one, tmpfs, where it can: tests/faults/test_state_file.py).
# "refused at a write": another connection adds a trigger to the file that refuses new
# history rows, so a statement fails inside the transaction, after the ones before it
# succeeded, as SQLITE_FULL does when the file cannot grow by a page.


class Fault:
    """A fault of one of the two kinds, made on the store's file by ``make`` and mended
    at the latest when ``held`` ends: a test that fails while the process may not grow a
    file must give that back before pytest writes its report."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.problem = {"full at commit": "disk I/O error", "refused at a write": "refused"}[kind]
        self.limits = resource.getrlimit(resource.RLIMIT_FSIZE)

    def make(self, store: SqliteStore) -> None:
        path = Path(store.location)
        if self.kind == "full at commit":
            log_end = path.with_name(path.name + "-wal").stat().st_size
            resource.setrlimit(resource.RLIMIT_FSIZE, (log_end, self.limits[1]))
            return
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("CREATE TRIGGER IF NOT EXISTS refused BEFORE INSERT ON history"
                          " BEGIN SELECT RAISE(ABORT, 'this row is refused'); END")

    def mend(self, store: SqliteStore) -> None:
        if self.kind == "full at commit":
            resource.setrlimit(resource.RLIMIT_FSIZE, self.limits)
            return
        with contextlib.closing(sqlite3.connect(store.location, isolation_level=None)) as other:
            other.execute("DROP TRIGGER IF EXISTS refused")

    @contextlib.contextmanager
    def held(self, store: SqliteStore) -> Iterator[None]:
        try:
            yield
        finally:
            self.mend(store)


@pytest.fixture(params=["full at commit", "refused at a write"])
def fault(request: pytest.FixtureRequest) -> Iterator[Fault]:
    """A fault of each kind, with SIGXFSZ ignored (a write past the file size limit
    fails with EFBIG instead of ending the process)."""
    made = Fault(request.param)
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield made
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, made.limits)
        signal.signal(signal.SIGXFSZ, ignored)


class Counted:
    """What a restart left: requests the API received, events logged, the metric, rows."""

    def __init__(self, api: FakeApi, metrics: Metrics, store: SqliteStore) -> None:
        self.api, self.metrics, self.store = api, metrics, store

    def __call__(self, events: list[MutableMapping[str, Any]]) -> tuple[int, int, float, int]:
        metric = self.metrics.registry.get_sample_value(
            "wasend_supervisor_restart_requests_total")
        rows = [e for e in self.store.read_history() if e.event == "restart.requested"]
        return (len(restarts(self.api)), names(events).count("restart.requested"),
                metric or 0.0, len(rows))


async def test_a_full_disk_sends_logs_and_counts_no_restart_it_could_not_claim(
    tmp_path: Path, fault: Fault,
) -> None:
    clock = FakeClock()
    store = open_store(tmp_path / "state.db", clock)
    api = FakeApi({"a": "WORKING", "b": "WORKING"})
    sup = make(api, store, clock)
    metrics = Metrics()
    sup.observers.append(metrics.observe_event)
    counted = Counted(api, metrics, store)
    await sup.poll()
    api.statuses["b"] = "STOPPED"
    with fault.held(store), capture_logs() as events:
        fault.make(store)
        for _ in range(5):
            clock.advance(30)
            result = await sup.poll()
            assert result.state_error is not None and fault.problem in result.state_error
    assert counted(events) == (0, 0, 0.0, 0)
    assert names(events).count("state.unavailable") == 5  # once a poll
    assert "session.unhealthy" not in names(events)  # nothing said that was not written
    with capture_logs() as events:  # mended
        clock.advance(30)
        assert (await sup.poll()).ok
    assert counted(events) == (1, 1, 1.0, 1)


async def test_a_full_disk_after_the_claims_still_sends_each_claimed_restart_once(
    tmp_path: Path, fault: Fault,
) -> None:
    clock = FakeClock()
    store = open_store(tmp_path / "state.db", clock)

    class FillsTheDisk(FakeApi):
        async def restart(self, session_id: str) -> SessionInfo:
            fault.make(store)  # the disk fills up while the first request is out
            return await super().restart(session_id)

    api = FillsTheDisk({"a": "STOPPED", "b": "STOPPED"})
    sup = make(api, store, clock)
    metrics = Metrics()
    sup.observers.append(metrics.observe_event)
    counted = Counted(api, metrics, store)
    with fault.held(store), capture_logs() as events:
        result = await sup.poll()
    assert result.state_error is not None and fault.problem in result.state_error
    # Both claims were committed before any request: both requests go out, once each,
    # though what came of them could not be recorded.
    assert sorted(restarts(api)) == ["a", "b"]
    assert counted(events) == (2, 2, 2.0, 2)
    assert names(events).count("state.unavailable") == 1
    assert "restart.accepted" not in names(events)  # not recorded, so not said
    with capture_logs() as events:  # mended
        for _ in range(3):
            clock.advance(1)
            await sup.poll()  # STARTING: in its verification window, not restarted again
    assert counted(events) == (2, 0, 2.0, 2)


# ------------------------------------------------------ the state file replaced


async def test_a_check_that_finds_its_state_file_gone_sends_nothing_and_is_unknown(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = open_store(path, clock)
    store.put(Record("a", attempt=2))
    for name in tmp_path.iterdir():
        name.unlink()
    api = FakeApi({"a": "STOPPED"})
    with capture_logs() as events:
        report = await run_check(make(api, store, clock))
    assert report.exit_status == UNKNOWN
    assert report.error is not None and "was deleted while this process was using it" in (
        report.error)
    assert restarts(api) == []
    assert names(events).count("state.file_replaced") == 1
    assert SqliteStore.open_readonly(path).get("a") == Record("a", attempt=2)
