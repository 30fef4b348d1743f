"""The alert episodes after each poll (runtime.alerting): a real Supervisor, a real store
(in memory and on a file shared by processes) and an in-memory API, poll after poll;
the transitions, the outbox rows and the events."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.api.errors import ApiUnreachable, AuthFailed, RateLimited, ServerError
from supervisor.domain.episodes import Change, Kind, Transition
from supervisor.domain.policy import Backoff, Policy
from supervisor.runtime.alerting import Alerting
from supervisor.runtime.check import run_check
from supervisor.runtime.cycle import Supervisor
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import MemoryStore, Store
from tests.fakes import FakeApi, FakeClock, MaxRandom
from tests.unit.test_daemon import Virtual

POLICY = Policy(backoff=Backoff(initial=10, max=80, multiplier=2), max_restarts=3,
                starting_timeout=30, stable_after=60)
CHANNELS = ("apprise-1", "alertmanager")
Logged = list[MutableMapping[str, Any]]


def supervisor(api: FakeApi, store: Store, clock: FakeClock, *,
               sessions: tuple[str, ...] = (), poll_interval: float | None = 30.0) -> Supervisor:
    return Supervisor(api, store, POLICY, clock, MaxRandom(), sessions=sessions,
                      auth_retry_interval=300, poll_interval=poll_interval)


def alerting(store: Store, clock: FakeClock, after: float = 120.0) -> Alerting:
    return Alerting(store, CHANNELS, unreachable_after=after, clock=clock)


def sqlite(path: Path, clock: FakeClock) -> SqliteStore:
    with capture_logs():
        return SqliteStore.open(path, clock=clock)


async def poll(sup: Supervisor, alerts: Alerting) -> list[tuple[str, str, str]]:
    made = await alerts.after_poll(sup, await sup.poll())
    return [(t.change.value, t.episode.kind.value, t.episode.subject) for t in made]


def outbox(store: Store, now: float) -> list[tuple[str, Transition]]:
    return [(p.channel, p.transition) for channel in CHANNELS
            for p in store.due(channel, now + 1e9, 1000)]


def alert_events(events: Logged) -> list[dict[str, Any]]:
    return [dict(e) for e in events if e["event"].startswith("alert.")]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return sqlite(tmp_path / "state.db", FakeClock())


async def test_a_session_needing_a_person_opens_once_and_resolves_once(store: Store) -> None:
    clock = FakeClock()
    api = FakeApi({"a": "WORKING", "b": "WORKING"})
    api.names["a"] = "Shop"
    sup, alerts = supervisor(api, store, clock), alerting(store, clock)
    with capture_logs() as events:
        assert await poll(sup, alerts) == []
        api.statuses["a"] = "SCAN_QR_CODE"
        clock.advance(30)
        assert await poll(sup, alerts) == [("opened", "needs_person", "a")]
        opened_at = clock.now()
        for _ in range(20):
            clock.advance(30)
            assert await poll(sup, alerts) == []
        api.statuses["a"] = "WORKING"
        clock.advance(30)
        assert await poll(sup, alerts) == [("resolved", "needs_person", "a")]
        clock.advance(30)
        assert await poll(sup, alerts) == []
    assert alert_events(events) == [
        {"event": "alert.opened", "log_level": "warning", "kind": "needs_person",
         "session_id": "a", "session_name": "Shop", "status": "SCAN_QR_CODE",
         "detail": store.due("apprise-1", clock.now(), 1)[0].transition.episode.detail},
        {"event": "alert.resolved", "log_level": "info", "kind": "needs_person",
         "session_id": "a", "session_name": "Shop", "status": "SCAN_QR_CODE",
         "opened_at": opened_at},
    ]
    rows = outbox(store, clock.now())
    assert [(channel, t.change) for channel, t in rows] == [
        ("apprise-1", Change.OPENED), ("apprise-1", Change.RESOLVED),
        ("alertmanager", Change.OPENED), ("alertmanager", Change.RESOLVED)]
    assert rows[0][1].episode == rows[1][1].episode
    assert store.open_episodes() == []


async def test_a_second_process_on_the_file_repeats_nothing(tmp_path: Path) -> None:
    """A daemon and a check (or a daemon started again after a SIGKILL) on one state
    file: whichever applies a transition first logs and queues it; the other neither."""
    clock = FakeClock()
    path = tmp_path / "state.db"
    api = FakeApi({"a": "SCAN_QR_CODE"})
    first_store = sqlite(path, clock)
    first = supervisor(api, first_store, clock)
    first_alerts = alerting(first_store, clock)
    assert await poll(first, first_alerts) == [("opened", "needs_person", "a")]
    # The daemon is killed: no clean close. Another one starts on the same file.
    second_store = sqlite(path, clock)
    second = supervisor(api, second_store, clock)
    second_alerts = alerting(second_store, clock)
    with capture_logs() as events:
        for _ in range(5):
            clock.advance(30)
            assert await poll(second, second_alerts) == []
            assert await poll(first, first_alerts) == []
    assert alert_events(events) == []
    api.statuses["a"] = "WORKING"
    clock.advance(30)
    assert await poll(second, second_alerts) == [("resolved", "needs_person", "a")]
    assert await poll(first, first_alerts) == []
    assert [t.change for _, t in outbox(second_store, clock.now())] == [
        Change.OPENED, Change.RESOLVED] * 2


async def test_the_same_opening_applied_by_two_processes_at_once_is_applied_once(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    path = tmp_path / "state.db"
    api = FakeApi({"a": "SCAN_QR_CODE"})
    stores = [sqlite(path, clock), sqlite(path, clock)]
    sups = [supervisor(api, s, clock) for s in stores]
    results = [await sup.poll() for sup in sups]  # both polled before either reconciled
    made = [await alerting(s, clock).after_poll(sup, result)
            for s, sup, result in zip(stores, sups, results, strict=True)]
    assert [len(m) for m in made] == [1, 0]
    assert stores[1].pending_count() == 2


async def test_check_run_ten_times_over_one_open_episode_queues_it_once(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state.db"
    api = FakeApi({"a": "SCAN_QR_CODE", "b": "WORKING"})
    with capture_logs() as events:
        for _ in range(10):  # a timer: a new process each minute
            store = sqlite(path, clock)
            sup = supervisor(api, store, clock, poll_interval=None)
            report = await run_check(sup, after_poll=alerting(store, clock).after_poll)
            assert report.exit_status == 2
            store.close()
            clock.advance(60)
    assert [e["event"] for e in alert_events(events)] == ["alert.opened"]
    store = sqlite(path, clock)
    assert [(c, t.change, t.episode.subject) for c, t in outbox(store, clock.now())] == [
        ("apprise-1", Change.OPENED, "a"), ("alertmanager", Change.OPENED, "a")]


async def test_a_dry_run_check_leaves_the_episodes_alone() -> None:
    clock = FakeClock()
    store = MemoryStore()
    api = FakeApi({"a": "SCAN_QR_CODE"})
    sup = supervisor(api, store, clock, poll_interval=None)
    await run_check(sup, dry_run=True, after_poll=alerting(store, clock).after_poll)
    assert store.open_episodes() == [] and store.pending_count() == 0


async def test_check_waiting_for_a_restart_reconciles_after_each_poll() -> None:
    clock = FakeClock()
    store = MemoryStore()
    api = FakeApi({"a": "SCAN_QR_CODE", "b": "STOPPED"})
    api.after_restart = "WORKING"
    sup = supervisor(api, store, clock, poll_interval=None)
    seen: list[int] = []
    alerts = alerting(store, clock)

    async def counted(s: Supervisor, result: Any) -> None:
        seen.append(len(await alerts.after_poll(s, result)))

    await run_check(sup, wait=5, after_poll=counted)
    assert seen == [1, 0]  # the first poll opened it; the one after the restart not again


async def test_api_unreachable_after_the_threshold_then_resolved(store: Store) -> None:
    clock = FakeClock()
    api = FakeApi({"a": "WORKING"})
    sup, alerts = supervisor(api, store, clock), alerting(store, clock)
    await poll(sup, alerts)
    api.fail("list", *[ApiUnreachable("connection refused", call="list")] * 20)
    made: list[tuple[float, list[tuple[str, str, str]]]] = []
    for _ in range(10):  # every 30 s; some polls are skipped by the poll backoff
        clock.advance(30)
        made.append((clock.now(), await poll(sup, alerts)))
    first_failure = made[0][0]
    [(at, opened)] = [(at, m) for at, m in made if m]
    assert opened == [("opened", "api_unreachable", "")]
    assert at == first_failure + 120
    [episode] = store.open_episodes()
    assert episode.detail == "every poll for 120 s has failed (unreachable)"
    api.errors.clear()
    while True:  # until the poll backoff lets a poll through
        clock.advance(30)
        done = await poll(sup, alerts)
        if done:
            break
    assert done == [("resolved", "api_unreachable", "")]


async def test_a_refused_key_or_a_429_does_not_count_as_unreachable(store: Store) -> None:
    clock = FakeClock()
    api = FakeApi({"a": "WORKING"})
    sup, alerts = supervisor(api, store, clock, poll_interval=None), alerting(store, clock, 0)
    api.fail("list", RateLimited("slow down", call="list", http_status=429))
    assert await poll(sup, alerts) == []
    api.fail("list", AuthFailed("no", call="list", http_status=401))
    assert await poll(sup, alerts) == [("opened", "auth_failed", "")]
    for _ in range(3):  # skipped while the key is refused
        clock.advance(30)
        assert await poll(sup, alerts) == []
    clock.advance(300)  # the key is tried again, and works
    assert await poll(sup, alerts) == [("resolved", "auth_failed", "")]
    api.fail("list", ServerError("boom", call="list", http_status=503))
    assert await poll(sup, alerts) == [("opened", "api_unreachable", "")]


async def test_gave_up_and_gone_through_the_cycle(store: Store) -> None:
    clock = FakeClock()
    api = FakeApi({"a": "STOPPED", "b": "WORKING"})
    api.after_restart = "FAILED"
    sup, alerts = supervisor(api, store, clock, sessions=("a", "b")), alerting(store, clock)
    made: list[tuple[str, str, str]] = []
    for _ in range(12):
        made += await poll(sup, alerts)
        clock.advance(100)
    assert made == [("opened", "gave_up", "a")]
    del api.statuses["b"]  # deleted on the account: a configured session the API lost
    made = []
    for _ in range(3):
        made += await poll(sup, alerts)
        clock.advance(30)
    assert made == [("opened", "gone", "b")]
    api.statuses["a"] = "WORKING"
    clock.advance(4000)
    assert sorted(await poll(sup, alerts)) == [("resolved", "gave_up", "a")]
    assert store.open_counts()[Kind.GONE] == 1


async def test_a_state_file_that_cannot_be_used_leaves_the_episodes(tmp_path: Path) -> None:
    clock = FakeClock()
    store = sqlite(tmp_path / "state.db", clock)
    api = FakeApi({"a": "SCAN_QR_CODE"})
    sup, alerts = supervisor(api, store, clock), alerting(store, clock)
    result = await sup.poll()
    store.close()
    with capture_logs() as events:
        assert await alerts.after_poll(sup, result) == []
    assert [e["event"] for e in events] == ["state.unavailable"]


async def test_the_daemon_awaits_its_after_poll_hooks_after_each_poll() -> None:
    api = FakeApi({"a": "WORKING"})
    virtual = Virtual(api)
    store = virtual.daemon.supervisor.store
    alerts = Alerting(store, CHANNELS, unreachable_after=120, clock=virtual.clock)
    calls: list[int] = []

    async def broken(sup: Supervisor, result: Any) -> None:
        calls.append(virtual.daemon.polls)
        raise RuntimeError("a bug")

    virtual.daemon.after_poll += [alerts.after_poll, broken]
    with capture_logs() as events:
        await virtual.start()
        api.statuses["a"] = "SCAN_QR_CODE"
        await virtual.advance(10)
        await virtual.polled(2)
        virtual.daemon.request_stop()
        assert await virtual.stopped() == 0
    assert [e.kind for e in store.open_episodes()] == [Kind.NEEDS_PERSON]
    assert calls == [0, 1]  # after each poll, before it is counted (and the listeners)
    crashed = [e for e in events if e["event"] == "poll.crashed"]
    assert len(crashed) == 2 and crashed[0]["during"] == "after_poll"


async def test_a_poll_that_changes_nothing_writes_nothing_more(tmp_path: Path) -> None:
    """With alerts on, a steady poll (one episode open, nothing new) commits what it
    did before (its heartbeat) and no more."""
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = sqlite(path, clock)
    api = FakeApi({"a": "WORKING", "q": "SCAN_QR_CODE"})
    sup, alerts = supervisor(api, store, clock), alerting(store, clock)
    await poll(sup, alerts)
    with contextlib.closing(sqlite3.connect(path)) as observer:
        def commits() -> int:
            return int(observer.execute("PRAGMA data_version").fetchone()[0])

        before = commits()
        clock.advance(30)
        result = await sup.poll()
        after_poll = commits()
        await alerts.after_poll(sup, result)
        assert commits() == after_poll != before
