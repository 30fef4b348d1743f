"""Operator holds ("pause supervision" of one session): the core's rule, the stores and
the schema, the cycle and check leaving a held session alone, status, the alert episodes,
the command line, and ``Operator`` (pause, resume, restart now)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from supervisor.api.errors import RateLimited, ServerError
from supervisor.cli import main
from supervisor.domain import core
from supervisor.domain.episodes import Change, Episode, Facts, Kind, reconcile
from supervisor.domain.models import ActionKind, Phase, Record, SessionInfo, Step
from supervisor.domain.policy import Backoff, Policy
from supervisor.runtime.check import run_check
from supervisor.runtime.cycle import Supervisor
from supervisor.runtime.daemon import Daemon
from supervisor.runtime.operator import Operator, Refused
from supervisor.state.report import session_status, status_report
from supervisor.state.schema import SCHEMA_VERSION, migrate
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import Hold, MemoryStore, Store
from tests.conftest import Opener, reset_logging
from tests.fakes import FakeApi, FakeClock, ManualClock, MaxRandom, VirtualScheduler
from tests.waiting import until

T0 = 1_700_000_000.0
POLICY = Policy(backoff=Backoff(initial=10, max=80, multiplier=2), max_restarts=3,
                starting_timeout=30, stable_after=60, gave_up_retry_interval=600)

pytestmark = pytest.mark.usefixtures("no_state_env")


@pytest.fixture(autouse=True)
def _logs_as_they_were() -> Iterator[None]:
    yield
    reset_logging()  # the commands configure the logs


def seen(status: str, sid: str = "s1") -> SessionInfo:
    return SessionInfo(sid, "Shop", status)


def held_decide(status: str, record: Record | None, at: float = T0) -> Step:
    return core.decide(seen(status), record, at, POLICY, MaxRandom(), held=True)


# ----------------------------------------------------------------------- the core


@pytest.mark.parametrize("phase", [Phase.UNHEALTHY, Phase.GAVE_UP])
@pytest.mark.parametrize("status", ["STOPPED", "FAILED", "STARTING", "WEIRD"])
def test_a_held_session_waiting_or_given_up_only_has_its_status_noted(
    phase: Phase, status: str,
) -> None:
    record = Record("s1", name="Shop", phase=phase, last_status="FAILED", attempt=2,
                    failures=(T0 - 50, T0 - 20), next_attempt_at=T0 - 1, stop_first=True)
    step = held_decide(status, record, T0 + 5000)  # long past every wait and timeout
    assert step.action is None and step.events == () and not step.failed
    assert step.record == msgspec.structs.replace(record, last_status=status)


def test_a_held_healthy_session_that_fails_is_unhealthy_but_not_restarted() -> None:
    relapsing = Record("s1", name="Shop", last_status="WORKING", attempt=2,
                       failures=(T0 - 50, T0 - 20), since=T0 - 10)
    step = held_decide("FAILED", relapsing)
    assert step.action is None and not step.failed  # nor counted as a relapse
    assert [(e.name, e.fields.get("held")) for e in step.events] == [
        ("session.unhealthy", True)]
    assert step.record == msgspec.structs.replace(
        relapsing, phase=Phase.UNHEALTHY, last_status="FAILED", since=T0)


def test_a_held_session_stuck_starting_is_watched_not_stopped() -> None:
    step = held_decide("STARTING", Record("s1", name="Shop", last_status="WORKING"))
    assert step.action is None
    assert step.record is not None and step.record.phase is Phase.STARTING
    stuck = held_decide("STARTING", step.record, T0 + 5000)
    assert stuck.action is None and stuck.record == step.record


def test_a_held_restart_in_flight_is_not_failed_while_held() -> None:
    flying = Record("s1", name="Shop", phase=Phase.VERIFYING, last_status="STARTING",
                    attempt=1, requested_at=T0)
    step = held_decide("STARTING", flying, T0 + 1000)  # past starting_timeout
    assert step.action is None and not step.failed and step.record == flying
    step = held_decide("FAILED", flying, T0 + 1000)
    assert step.action is None and not step.failed
    assert step.record is not None and step.record.phase is Phase.VERIFYING


def test_a_held_session_that_comes_back_by_itself_is_recorded_recovered() -> None:
    down = Record("s1", name="Shop", phase=Phase.GAVE_UP, last_status="FAILED", attempt=3)
    step = held_decide("WORKING", down)
    assert step.action is None
    assert [e.name for e in step.events] == ["session.recovered"]
    assert step.record is not None and (step.record.phase, step.record.gave_up) == (
        Phase.HEALTHY, False)


def test_a_held_session_needing_a_person_is_recorded_so_but_never_restarted() -> None:
    step = held_decide("SCAN_QR_CODE", Record("s1", name="Shop", last_status="WORKING"))
    assert step.action is None
    assert step.record is not None and step.record.phase is Phase.NEEDS_PERSON
    cleared = held_decide("WORKING", step.record)
    assert [e.name for e in cleared.events] == ["session.needs_person_cleared",
                                                "session.recovered"]


def test_a_new_held_session_is_recorded_without_an_action() -> None:
    step = held_decide("STOPPED", None)
    assert step.action is None
    assert [e.name for e in step.events] == ["session.unhealthy"]
    assert step.record == Record("s1", name="Shop", phase=Phase.UNHEALTHY, since=T0,
                                 last_status="STOPPED")


def test_once_released_a_session_seen_stopped_while_held_is_restarted() -> None:
    step = held_decide("STOPPED", Record("s1", name="Shop", last_status="WORKING"))
    after = core.decide(seen("STOPPED"), step.record, T0 + 10, POLICY, MaxRandom())
    assert after.action is not None and after.action.kind is ActionKind.RESTART
    assert [e.name for e in step.events] == ["session.unhealthy"]  # logged while held
    assert [e.name for e in after.events] == ["restart.requested"]


def test_without_a_hold_the_decision_is_the_usual_one() -> None:
    record = Record("s1", name="Shop", last_status="WORKING")
    usual = core.decide(seen("STOPPED"), record, T0, POLICY, MaxRandom())
    assert core.decide(seen("STOPPED"), record, T0, POLICY, MaxRandom(), held=False) == usual
    assert usual.action is not None


def test_restart_now_requests_a_restart_whatever_the_status() -> None:
    healthy = Record("s1", name="Shop", last_status="WORKING", since=T0 - 100)
    step = core.restart_now(healthy, T0, "alice")
    # a running session is stopped first: WASend restarts only a stopped one (409)
    assert step.action is not None and step.action.kind is ActionKind.STOP
    stopped = Record("s1", name="Shop", phase=Phase.UNHEALTHY, last_status="STOPPED")
    restart = core.restart_now(stopped, T0, "alice").action
    assert restart is not None and restart.kind is ActionKind.RESTART
    assert [e.name for e in step.events] == ["operator.restart_requested",
                                             "restart.requested"]
    assert step.events[0].fields["by"] == "alice"
    assert step.record is not None and (step.record.phase, step.record.attempt,
                                        step.record.requested_at) == (Phase.VERIFYING, 1, T0)


def test_restart_now_on_a_given_up_session_starts_afresh() -> None:
    given_up = Record("s1", phase=Phase.GAVE_UP, last_status="FAILED", attempt=5,
                      failures=(T0 - 10,), next_attempt_at=T0 + 3000, stop_first=True)
    step = core.restart_now(given_up, T0, "bob")
    assert step.action is not None and step.action.kind is ActionKind.STOP  # stop first
    assert step.record is not None
    assert (step.record.phase, step.record.attempt, step.record.failures,
            step.record.gave_up) == (Phase.VERIFYING, 1, (), False)


@pytest.mark.parametrize(("record", "problem"), [
    (Record("s1", phase=Phase.VERIFYING, requested_at=T0), "has a restart in flight"),
    (Record("s1", phase=Phase.GONE), "is gone"),
])
def test_restart_now_is_refused_in_flight_and_for_a_gone_session(
    record: Record, problem: str,
) -> None:
    with pytest.raises(ValueError, match=problem):
        core.restart_now(record, T0, "alice")


# ------------------------------------------------------------------ the episodes


def test_a_held_session_opens_no_episode() -> None:
    records = [Record("qr", phase=Phase.NEEDS_PERSON, last_status="SCAN_QR_CODE"),
               Record("down", phase=Phase.GAVE_UP, last_status="FAILED"),
               Record("free", phase=Phase.NEEDS_PERSON, last_status="SCAN_QR_CODE")]
    facts = Facts.of(records, listed=True, held={"qr", "down"})
    made = reconcile([], facts, T0, unreachable_after=300)
    assert [(t.change, t.episode.key) for t in made] == [
        (Change.OPENED, (Kind.NEEDS_PERSON, "free"))]


def test_an_episode_open_when_held_stays_open_until_the_session_is_healthy() -> None:
    open_qr = Episode(Kind.NEEDS_PERSON, "qr", T0 - 100)
    stuck = Facts.of([Record("qr", phase=Phase.NEEDS_PERSON)], listed=True, held={"qr"})
    assert reconcile([open_qr], stuck, T0, unreachable_after=300) == ()
    fixed = Facts.of([Record("qr", phase=Phase.HEALTHY)], listed=True, held={"qr"})
    [resolved] = reconcile([open_qr], fixed, T0, unreachable_after=300)
    assert (resolved.change, resolved.episode) == (Change.RESOLVED, open_qr)


async def test_after_a_poll_a_held_session_opens_no_alert_episode() -> None:
    from supervisor.runtime.alerting import Alerting

    clock = FakeClock(start=T0)
    api = FakeApi({"qr": "SCAN_QR_CODE", "free": "SCAN_QR_CODE"})
    sup = supervisor(api, clock=clock)
    sup.store.hold(Hold("qr", "alice", T0))
    alerts = Alerting(sup.store, ("apprise-1",), unreachable_after=120, clock=clock)
    with capture_logs():
        made = await alerts.after_poll(sup, await sup.poll())
    assert [(t.change, t.episode.key) for t in made] == [
        (Change.OPENED, (Kind.NEEDS_PERSON, "free"))]
    sup.store.release("qr")
    with capture_logs():
        made = await alerts.after_poll(sup, await sup.poll())
    assert [(t.change, t.episode.key) for t in made] == [
        (Change.OPENED, (Kind.NEEDS_PERSON, "qr"))]


# --------------------------------------------------------------------- the stores


def open_file(path: Path, clock: FakeClock | None = None) -> SqliteStore:
    with capture_logs():
        return SqliteStore.open(path, clock=clock or FakeClock())


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgres":
        from supervisor.state.postgres import PostgresStore

        with capture_logs():
            made = PostgresStore.open(request.getfixturevalue("pg_url"), clock=FakeClock())
        yield made
        made.close()
        return
    yield open_file(tmp_path / "state.db")


def test_a_hold_is_kept_replaced_and_released(store: Store) -> None:
    assert store.holds() == {}
    store.hold(Hold("a", "alice", T0))
    store.hold(Hold("b", "bob", T0 + 1))
    store.hold(Hold("a", "carol", T0 + 2))
    assert store.holds() == {"a": Hold("a", "carol", T0 + 2), "b": Hold("b", "bob", T0 + 1)}
    assert store.release("a") == Hold("a", "carol", T0 + 2)
    assert store.release("a") is None
    assert store.holds() == {"b": Hold("b", "bob", T0 + 1)}


def test_a_hold_written_by_another_process_is_seen_at_the_next_read(
    shared_state: Opener,
) -> None:
    with capture_logs():
        daemon, cli = shared_state(FakeClock()), shared_state(FakeClock())
    assert daemon.holds() == {}  # read (and kept in memory) before the other process writes
    cli.hold(Hold("a", "alice", T0))
    with daemon.transaction():
        assert daemon.holds() == {"a": Hold("a", "alice", T0)}
    cli.release("a")
    assert daemon.holds() == {}
    cli.close()
    daemon.close()


def test_a_file_at_schema_version_4_is_upgraded_to_keep_holds(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, 1.0, target=4) == 4
    conn.execute("INSERT INTO records (session_id, data, version, updated_at) VALUES"
                 " ('s1', '{\"phase\": \"unhealthy\"}', 1, 2.0)")
    conn.close()
    readonly = SqliteStore.open_readonly(path, clock=FakeClock())
    assert (readonly.schema_version, readonly.holds()) == (4, {})  # status before upgrade
    readonly.close()

    store = open_file(path)
    assert store.schema_version == SCHEMA_VERSION >= 5
    assert store.get("s1") == Record("s1", phase=Phase.UNHEALTHY)
    store.hold(Hold("s1", "alice", T0))
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as observer:
        applied = [v for (v,) in observer.execute("SELECT version FROM schema_migrations")]
    assert applied == list(range(1, SCHEMA_VERSION + 1))
    again = SqliteStore.open_readonly(path, clock=FakeClock())
    assert again.holds() == {"s1": Hold("s1", "alice", T0)}
    again.close()


def test_a_lost_file_s_holds_are_carried_into_the_next(tmp_path: Path) -> None:
    import os

    from supervisor.state.store import StateError

    path = tmp_path / "state.db"
    store = open_file(path)
    store.hold(Hold("a", "alice", T0))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    with capture_logs(), pytest.raises(StateError):
        store.put(Record("new"))
    assert store.holds() == {"a": Hold("a", "alice", T0)}
    store.close()


# ---------------------------------------------------------------------- the cycle


async def test_a_pause_by_another_process_is_seen_at_the_daemon_s_next_poll(
    shared_state: Opener,
) -> None:
    clock = FakeClock(start=T0)
    api = FakeApi({"a": "WORKING"})
    with capture_logs():
        sup = supervisor(api, shared_state(clock), clock)
    await sup.poll()
    with capture_logs():
        other = shared_state(clock)
    other.hold(Hold("a", "alice", T0))  # ``pause a`` from the command line
    api.statuses["a"] = "STOPPED"
    result = await sup.poll()
    assert result.held == {"a": Hold("a", "alice", T0)}
    assert [c for c in api.calls if c[0] != "list"] == []
    other.release("a")
    await sup.poll()
    assert [c for c in api.calls if c[0] != "list"] == [("restart", "a")]
    other.close()
    sup.store.close()



def supervisor(api: FakeApi, store: Store | None = None,
               clock: FakeClock | None = None) -> Supervisor:
    return Supervisor(api, store or MemoryStore(), POLICY, clock or FakeClock(start=T0),
                      MaxRandom())


async def test_every_poll_leaves_a_held_session_alone_until_it_is_released() -> None:
    api = FakeApi({"a": "WORKING", "b": "WORKING"})
    sup = supervisor(api)
    await sup.poll()
    sup.store.hold(Hold("b", "alice", T0))
    api.statuses.update(a="STOPPED", b="STOPPED")
    for _ in range(3):
        sup.clock.advance(1000)  # type: ignore[attr-defined]
        result = await sup.poll()
        assert result.held == {"b": Hold("b", "alice", T0)}
    assert ("restart", "a") in api.calls
    assert [c for c in api.calls if c[1] == "b"] == []
    record = sup.store.get("b")
    assert record is not None and (record.phase, record.last_status) == (
        Phase.UNHEALTHY, "STOPPED")
    sup.store.release("b")
    await sup.poll()
    assert [c for c in api.calls if c[1] == "b"] == [("restart", "b")]


async def test_a_held_session_failing_is_never_given_up_on() -> None:
    api = FakeApi({"a": "FAILED"})
    sup = supervisor(api)
    sup.store.hold(Hold("a", "alice", T0))
    with capture_logs() as events:
        for _ in range(10):
            await sup.poll()
            sup.clock.advance(100)  # type: ignore[attr-defined]
    assert [c for c in api.calls if c[0] != "list"] == []
    assert {e["event"] for e in events} == {"poll.completed", "session.unhealthy"}


async def test_check_reports_a_held_session_as_paused() -> None:
    api = FakeApi({"a": "WORKING", "b": "STOPPED"})
    sup = supervisor(api)
    await sup.store.run(lambda: sup.store.put(Record("b", last_status="WORKING")))
    sup.store.hold(Hold("b", "alice", T0))
    report = await run_check(sup)
    assert [(r.id, r.action, r.outcome, r.exit_status) for r in report.rows] == [
        ("a", "none", "ok", 0), ("b", "none", "paused", 1)]
    assert report.exit_status == 1
    assert report.verdict() == (
        "WARNING: 1 of 2 sessions is paused (name-b) | sessions=2 healthy=1 recovering=0"
        " needs_person=0 gave_up=0 gone=0 restarted=0 failed=0 unknown=0 would_restart=0"
        " paused=1")
    dry = await run_check(sup, dry_run=True)
    assert [(r.id, r.outcome) for r in dry.rows] == [("a", "ok"), ("b", "paused")]
    assert [c for c in api.calls if c[0] != "list"] == []


async def test_check_without_holds_reports_as_before() -> None:
    report = await run_check(supervisor(FakeApi({"a": "WORKING"})))
    assert report.verdict() == (
        "OK: 1 session healthy | sessions=1 healthy=1 recovering=0 needs_person=0"
        " gave_up=0 gone=0 restarted=0 failed=0 unknown=0 would_restart=0")


# ------------------------------------------------------------------------- status


def test_status_shows_a_held_session() -> None:
    record = Record("b", name="Desk", phase=Phase.GAVE_UP, last_status="FAILED")
    shown = session_status(record, POLICY.classes, T0, T0 - 5, None,
                           Hold("b", "alice", 1_738_324_800.0))
    assert list(shown)[-3:] == ["paused", "paused_by", "paused_at"]
    assert (shown["paused"], shown["paused_by"], shown["paused_at"]) == (
        True, "alice", "2025-01-31T12:00:00Z")
    assert (shown["outcome"], shown["exit_status"]) == ("paused", 1)
    free = session_status(record, POLICY.classes, T0, T0 - 5)
    assert (free["paused"], free["paused_by"], free["paused_at"]) == (False, None, None)
    assert (free["outcome"], free["exit_status"]) == ("gave_up", 2)


def test_status_report_and_table_mark_a_held_session(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.db"
    store = open_file(path, FakeClock(start=T0))
    store.put(Record("a", last_status="WORKING"))
    store.put(Record("b", last_status="STOPPED"))
    store.hold(Hold("b", "alice", T0))
    store.close()
    readonly = SqliteStore.open_readonly(path)
    report = status_report(readonly, POLICY.classes, T0, 600)
    readonly.close()
    assert [(s["id"], s["paused"], s["paused_by"]) for s in report["sessions"]] == [
        ("a", False, None), ("b", True, "alice")]
    monkeypatch.setattr("time.time", lambda: T0)
    main(["status", "--state-path", str(path)])
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("b "))
    assert "healthy, paused by alice" in row
    assert "paused" not in next(line for line in lines if line.startswith("a "))


# ------------------------------------------------------------------ the commands


def state_file(path: Path) -> None:
    store = open_file(path, FakeClock(start=T0))
    store.put(Record("a", last_status="WORKING"))
    store.close()


def holds_of(path: Path) -> dict[str, Hold]:
    store = SqliteStore.open_readonly(path)
    try:
        return store.holds()
    finally:
        store.close()


def test_pause_and_resume_change_the_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    state_file(path)
    assert main(["pause", "a", "--by", "alice", "--state-path", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "session a: paused by alice; no process restarts or stops it until" \
                  " 'resume a'\n"
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [(e["event"], e["session_id"], e["by"]) for e in events
            if e["event"].startswith("operator.")] == [("operator.paused", "a", "alice")]
    [(sid, hold)] = holds_of(path).items()
    assert (sid, hold.by) == ("a", "alice")

    assert main(["pause", "a", "--by", "bob", "--state-path", str(path)]) == 0  # no change
    assert "paused already, by alice" in capsys.readouterr().out
    assert holds_of(path)["a"].by == "alice"

    assert main(["resume", "a", "--by", "bob", "--state-path", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "session a: resumed; the next poll supervises it as usual\n"
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [(e["event"], e["by"], e["paused_by"]) for e in events
            if e["event"].startswith("operator.")] == [("operator.resumed", "bob", "alice")]
    assert holds_of(path) == {}
    assert main(["resume", "a", "--state-path", str(path)]) == 0
    assert capsys.readouterr().out == "session a: not paused; nothing changed\n"


def test_pause_names_the_os_user_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    state_file(path)
    monkeypatch.setattr("getpass.getuser", lambda: "opsuser")
    assert main(["pause", "a", "--state-path", str(path)]) == 0
    assert holds_of(path)["a"].by == "opsuser"


@pytest.mark.parametrize("mode", ["pause", "resume"])
def test_pause_or_resume_of_an_unknown_session_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str,
) -> None:
    path = tmp_path / "state.db"
    state_file(path)
    assert main([mode, "nope", "--state-path", str(path)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"wasend-supervisor: no session 'nope' in {path}; nothing changed")
    assert holds_of(path) == {}


def test_pause_without_a_state_file_creates_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    assert main(["pause", "a", "--state-path", str(path)]) == 1
    assert "no state file at" in capsys.readouterr().err
    assert not path.exists()


def test_pause_on_an_unusable_state_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    path.write_text("not a database, somebody's notes\n" * 10)
    assert main(["pause", "a", "--state-path", str(path)]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]


# ---------------------------------------------------------------------- Operator


class Running:
    """A daemon on virtual time (its scheduler fires only when the test moves time)."""

    def __init__(self, api: FakeApi, store: Store | None = None) -> None:
        self.clock = ManualClock(start=T0)
        self.scheduler = VirtualScheduler(self.clock, random.Random(7))
        self.sup = Supervisor(api, store or MemoryStore(), POLICY, self.clock, MaxRandom())
        self.daemon = Daemon(self.sup, poll_interval=30, shutdown_grace=2,
                             scheduler=self.scheduler, clock=self.clock)
        self.operator = Operator(self.daemon)
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.daemon.run())
        await until(lambda: self.daemon.polls >= 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.daemon.request_stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def test_operator_pause_and_resume_hold_and_release_with_events() -> None:
    api = FakeApi({"a": "WORKING"})
    async with Running(api) as running:
        with capture_logs() as events:
            await running.operator.pause("a", "alice")
            await running.operator.pause("a", "bob")  # paused already: nothing changes
            assert running.sup.store.holds() == {"a": Hold("a", "alice", T0)}
            await running.operator.resume("a", "bob")
            await running.operator.resume("a", "bob")
        assert running.sup.store.holds() == {}
    assert [(e["event"], e["by"]) for e in events] == [
        ("operator.paused", "alice"), ("operator.resumed", "bob")]


async def test_operator_refuses_an_unknown_session_in_one_line() -> None:
    async with Running(FakeApi({"a": "WORKING"})) as running:
        with capture_logs() as events:
            for action in (running.operator.pause, running.operator.resume,
                           running.operator.restart_now):
                with pytest.raises(Refused) as refused:
                    await action("nope", "alice")
                assert str(refused.value) == "session nope is not supervised here"
    assert [(e["event"], e["action"], e["by"]) for e in events] == [
        ("operator.refused", "pause", "alice"), ("operator.refused", "resume", "alice"),
        ("operator.refused", "restart_now", "alice")]


async def test_restart_now_of_a_given_up_session_makes_exactly_one_request() -> None:
    api = FakeApi({"a": "FAILED"})
    store = MemoryStore()
    store.put(Record("a", phase=Phase.GAVE_UP, last_status="FAILED", attempt=3,
                     next_attempt_at=T0 + 3000))
    async with Running(api, store) as running:
        assert [c for c in api.calls if c[0] != "list"] == []  # its retry is an hour away
        with capture_logs() as events:
            await running.operator.restart_now("a", "alice")
        assert [c for c in api.calls if c[0] != "list"] == [("restart", "a")]
        record = store.get("a")
        assert record is not None and (record.phase, record.attempt, record.gave_up) == (
            Phase.VERIFYING, 1, False)
        assert [e["event"] for e in events] == [
            "operator.restart_requested", "restart.requested", "restart.accepted"]
        assert events[0]["by"] == "alice"
        assert [h.event for h in store.history] == ["restart.requested", "restart.accepted"]

        with pytest.raises(Refused, match="has a restart in flight"):
            await running.operator.restart_now("a", "alice")  # being verified
        assert [c for c in api.calls if c[0] != "list"] == [("restart", "a")]


async def test_restart_now_of_a_held_session_is_refused() -> None:
    api = FakeApi({"a": "STOPPED"})
    store = MemoryStore()
    store.put(Record("a", last_status="WORKING"))
    store.hold(Hold("a", "bob", T0))
    async with Running(api, store) as running:
        with pytest.raises(Refused, match=r"^session a is paused \(by bob\); resume it first$"):
            await running.operator.restart_now("a", "alice")
    assert [c for c in api.calls if c[0] != "list"] == []


async def test_restart_now_raises_the_api_s_error_and_records_the_failure() -> None:
    api = FakeApi({"a": "WORKING"})
    async with Running(api) as running:
        api.fail("restart", ServerError("restart: HTTP 503", http_status=503))
        with capture_logs(), pytest.raises(ServerError):
            await running.operator.restart_now("a", "alice")
        record = running.sup.store.get("a")
        assert record is not None and record.last_outcome == "failed:server_error"
        api.fail("restart", RateLimited("restart: paused", http_status=None))
        with capture_logs(), pytest.raises(RateLimited):
            await running.operator.restart_now("a", "alice")


async def test_the_service_builds_one_operator_on_its_daemon() -> None:
    import httpx
    from pydantic import SecretStr

    from supervisor.config.model import Settings
    from supervisor.service import Service

    clock = ManualClock(start=T0)
    service = Service.build(
        Settings(api_key=SecretStr("sk-operator-test-0001"), base_url="https://a.example",
                 state_path=Path(":memory:")),
        env={}, scheduler=VirtualScheduler(clock), clock=clock, rng=MaxRandom(),
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=[])))
    try:
        assert isinstance(service.operator, Operator)
        service.runtime.store.put(Record("a", last_status="WORKING"))
        with capture_logs():
            await service.operator.pause("a", "alice")
        assert service.runtime.store.holds() == {"a": Hold("a", "alice", T0)}
    finally:
        await service.aclose()
