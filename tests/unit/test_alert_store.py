"""Alert episodes and the outbox in the stores: each transition applied once (across
processes on one file too), the outbox's rows through their life, the outage watch,
old files upgraded in place, and a lost file's alert rows carried over. The tests that
take ``store`` or ``shared_state`` run on PostgreSQL too."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from supervisor.alerts.outbox import Outbox
from supervisor.domain.episodes import Change, Episode, Kind, Pending, Transition
from supervisor.domain.models import Record
from supervisor.state.schema import SCHEMA_VERSION, migrate
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import MEMORY, MemoryStore, Outage, StateError, Store
from tests.conftest import Opener
from tests.fakes import FakeClock

T0 = 1_700_000_000.0
QR = Episode(Kind.NEEDS_PERSON, "a", T0, "Shop", "SCAN_QR_CODE", "scan it")
OPEN_QR = Transition(Change.OPENED, QR, T0)
SHUT_QR = Transition(Change.RESOLVED, QR, T0 + 60)
DOWN = Episode(Kind.API_UNREACHABLE, "", T0 + 1, detail="every poll for 120 s has failed")
CHANNELS = ("apprise-1", "alertmanager")


def open_file(path: Path | str, clock: FakeClock | None = None) -> SqliteStore:
    with capture_logs():
        return SqliteStore.open(path, clock=clock or FakeClock())


@pytest.fixture(params=["memory", "sqlite-memory", "sqlite-file", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgres":
        from supervisor.state.postgres import PostgresStore

        with capture_logs():
            pg = PostgresStore.open(request.getfixturevalue("pg_url"), clock=FakeClock())
        yield pg
        pg.close()
        return
    made = open_file(MEMORY if request.param == "sqlite-memory" else tmp_path / "state.db")
    yield made
    made.close()


def test_both_stores_are_outboxes() -> None:
    def outbox(box: Outbox) -> Outbox:
        return box

    outbox(MemoryStore())
    outbox(SqliteStore.open(MEMORY, clock=FakeClock()))


# --------------------------------------------------------------------- episodes


def test_an_opening_applies_once_and_is_enqueued_for_every_channel(store: Store) -> None:
    assert store.apply_transitions([OPEN_QR], CHANNELS, T0) == [OPEN_QR]
    assert store.open_episodes() == [QR]
    assert store.apply_transitions([OPEN_QR], CHANNELS, T0 + 30) == []  # not news
    later = msgspec.structs.replace(QR, opened_at=T0 + 30)  # another poll's view of it
    assert store.apply_transitions([Transition(Change.OPENED, later, T0 + 30)], CHANNELS,
                                   T0 + 30) == []
    assert store.open_episodes() == [QR]
    assert store.pending_count() == 2
    assert [(p.channel, p.transition, p.created_at, p.attempts) for p in
            store.due("apprise-1", T0, 10) + store.due("alertmanager", T0, 10)] == [
        ("apprise-1", OPEN_QR, T0, 0), ("alertmanager", OPEN_QR, T0, 0)]


def test_a_resolution_applies_once_and_only_to_the_episode_it_names(store: Store) -> None:
    store.apply_transitions([OPEN_QR], (), T0)
    other = Transition(Change.RESOLVED, msgspec.structs.replace(QR, opened_at=T0 - 5), T0 + 60)
    assert store.apply_transitions([other], CHANNELS, T0 + 60) == []  # an older episode
    assert store.apply_transitions([SHUT_QR], CHANNELS, T0 + 60) == [SHUT_QR]
    assert store.apply_transitions([SHUT_QR], CHANNELS, T0 + 90) == []
    assert store.open_episodes() == []
    assert [p.transition for p in store.due("apprise-1", T0 + 90, 10)] == [SHUT_QR]
    # And it may open again, as a new episode.
    again = Transition(Change.OPENED, msgspec.structs.replace(QR, opened_at=T0 + 120), T0 + 120)
    assert store.apply_transitions([again], (), T0 + 120) == [again]


def test_open_counts_per_kind(store: Store) -> None:
    assert store.open_counts() == dict.fromkeys(Kind, 0)
    b = msgspec.structs.replace(QR, subject="b")
    store.apply_transitions([OPEN_QR, Transition(Change.OPENED, b, T0),
                             Transition(Change.OPENED, DOWN, T0 + 1)], (), T0 + 1)
    assert store.open_counts() == {**dict.fromkeys(Kind, 0), Kind.NEEDS_PERSON: 2,
                                   Kind.API_UNREACHABLE: 1}
    assert store.open_episodes() == [QR, b, DOWN]


def test_two_stores_on_one_file_apply_the_same_opening_once(shared_state: Opener) -> None:
    first, second = shared_state(FakeClock()), shared_state(FakeClock())
    assert second.open_episodes() == []  # both read it as closed
    assert first.apply_transitions([OPEN_QR], CHANNELS, T0) == [OPEN_QR]
    assert second.apply_transitions([OPEN_QR], CHANNELS, T0) == []
    assert second.open_episodes() == [QR]
    assert second.pending_count() == 2
    # A daemon restarted after a SIGKILL (a new store on the file) sees it open.
    first.close()
    third = shared_state(FakeClock())
    assert third.open_episodes() == [QR]
    assert third.apply_transitions([SHUT_QR], CHANNELS, T0 + 60) == [SHUT_QR]
    assert second.apply_transitions([SHUT_QR], CHANNELS, T0 + 60) == []
    assert third.pending_count() == 4


def test_the_unique_index_holds_against_any_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_file(path).apply_transitions([OPEN_QR], (), T0)
    with contextlib.closing(sqlite3.connect(path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO episodes (kind, subject, opened_at) VALUES"
                     " ('needs_person', 'a', 5.0)")


def test_applying_and_enqueueing_are_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_file(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN"
                     " SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(StateError, match="disk full"):
        store.apply_transitions([OPEN_QR], CHANNELS, T0)
    assert store.open_episodes() == []  # the opening was rolled back with its rows


def test_an_episode_of_a_kind_this_version_does_not_know_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_file(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("INSERT INTO episodes (kind, subject, opened_at) VALUES ('future', 'a', 1)")
        conn.execute("INSERT INTO outbox (channel, transition, created_at) VALUES"
                     " ('apprise-1', '{\"change\": \"sideways\"}', 1)")
    assert store.open_episodes() == []
    assert store.open_counts() == dict.fromkeys(Kind, 0)
    assert store.due("apprise-1", T0, 10) == []
    assert store.expire(2.0) == 1


# ----------------------------------------------------------------------- outbox


def _filled(store: Store, n: int) -> list[Transition]:
    made = [Transition(Change.OPENED, msgspec.structs.replace(QR, subject=f"s{i}"), T0 + i)
            for i in range(n)]
    for i, transition in enumerate(made):
        store.enqueue(CHANNELS, [transition], T0 + i)
    return made


def test_the_outbox_rows_through_their_life(store: Store) -> None:
    made = _filled(store, 5)
    due = store.due("apprise-1", T0, 3)
    assert [p.transition for p in due] == made[:3]  # oldest first, limited
    assert all(isinstance(p, Pending) and p.next_try_at == 0.0 for p in due)
    store.delivered([due[0].id])
    store.retry([due[1].id], T0 + 100)
    assert [p.transition for p in store.due("apprise-1", T0 + 99, 10)] == [
        made[2], made[3], made[4]]
    [retried] = [p for p in store.due("apprise-1", T0 + 100, 10) if p.id == due[1].id]
    assert (retried.attempts, retried.next_try_at) == (1, T0 + 100)
    store.retry([retried.id], T0 + 200)
    assert next(p for p in store.due("apprise-1", T0 + 200, 10) if p.id == retried.id
                ).attempts == 2
    # The other channel is untouched by what one channel did.
    assert [p.transition for p in store.due("alertmanager", T0, 10)] == made
    assert store.pending_count() == 9
    assert store.expire(T0 + 2) == 3  # rows made before T0 + 2: s1 on one channel, s0, s1
    assert store.trim(4) == 2
    assert store.pending_count() == 4
    assert {p.transition for p in store.due("alertmanager", T0 + 999, 10)} == set(made[3:])
    assert store.trim(10) == 0
    assert store.trim(0) == 4
    assert store.pending_count() == 0
    assert store.due("apprise-1", T0, 0) == []
    store.delivered([])
    store.retry([], T0)


def test_a_claim_takes_every_row_still_due_or_none(store: Store) -> None:
    store.enqueue(["apprise-1"], [OPEN_QR, SHUT_QR], T0)
    ids = [row.id for row in store.due("apprise-1", T0, 10)]
    assert store.claim(ids, T0, T0 + 60) is True
    assert store.due("apprise-1", T0 + 59, 10) == []  # taken: waiting for that sender
    assert store.claim(ids, T0 + 1, T0 + 61) is False
    assert store.claim(ids[:1], T0 + 1, T0 + 61) is False
    assert store.claim(ids, T0 + 60, T0 + 120) is True  # the claim ran out: taken again
    store.delivered(ids)
    assert store.claim(ids, T0 + 200, T0 + 260) is False  # gone: nothing to take
    assert store.claim([], T0, T0 + 60) is True


def test_of_two_processes_claiming_the_same_rows_exactly_one_gets_them(
    shared_state: Opener,
) -> None:
    first, second = shared_state(FakeClock()), shared_state(FakeClock())
    try:
        first.enqueue(["apprise-1"], [OPEN_QR], T0)
        first.enqueue(["apprise-1"], [SHUT_QR], T0)
        ids = [row.id for row in second.due("apprise-1", T0, 10)]
        won: dict[str, bool] = {}
        gate = threading.Barrier(2)

        def take(name: str, store: Store, subset: list[int]) -> None:
            gate.wait()
            won[name] = store.claim(subset, T0, T0 + 60)

        threads = [threading.Thread(target=take, args=("first", first, ids)),
                   threading.Thread(target=take, args=("second", second, ids[1:]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(won.values()) == [False, True]
        # the loser changed nothing: only the winner's rows carry its lease
        rows = {row.id: row.next_try_at for row in first.due("apprise-1", T0 + 3600, 10)}
        taken = ids if won["first"] else ids[1:]
        assert rows == {i: (T0 + 60 if i in taken else 0.0) for i in ids}
    finally:
        first.close()
        second.close()


def test_outbox_ids_are_never_reused(shared_state: Opener) -> None:
    store = shared_state(FakeClock())
    _filled(store, 1)
    [first] = store.due("apprise-1", T0, 1)
    store.delivered([first.id])
    _filled(store, 1)
    [second] = store.due("apprise-1", T0, 1)
    assert second.id > first.id


async def test_the_outbox_works_through_run_off_the_event_loop(shared_state: Opener) -> None:
    store = shared_state(FakeClock())
    _filled(store, 2)
    threads: list[int] = []

    def work() -> list[Pending]:
        threads.append(threading.get_ident())
        return store.due("apprise-1", T0 + 10, 10)

    assert len(await store.run(work)) == 2
    assert threads != [threading.get_ident()]  # the store's own thread
    store.close()


# ----------------------------------------------------------------------- outage


def test_the_outage_starts_at_the_first_failure_and_ends_at_a_listing(
    shared_state: Opener,
) -> None:
    first, second = shared_state(FakeClock()), shared_state(FakeClock())
    assert first.outage(None, T0) is None
    assert first.outage(False, T0, "unreachable") == Outage(T0, "unreachable")
    assert second.outage(False, T0 + 30, "timeout") == Outage(T0, "unreachable")
    assert second.outage(None, T0 + 60) == Outage(T0, "unreachable")
    assert first.outage(True, T0 + 90) is None
    assert second.outage(False, T0 + 120, "timeout") == Outage(T0 + 120, "timeout")


def test_the_memory_store_keeps_the_outage_too() -> None:
    store = MemoryStore()
    assert store.outage(False, T0, "unreachable") == Outage(T0, "unreachable")
    assert store.outage(False, T0 + 1) == Outage(T0, "unreachable")
    assert store.outage(True, T0 + 2) is None


# -------------------------------------------------------------- older files


def test_a_file_at_schema_version_3_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, 1.0, target=3) == 3
    conn.execute("INSERT INTO records (session_id, data, version, updated_at) VALUES"
                 " ('s1', '{\"phase\": \"needs_person\"}', 1, 2.0)")
    conn.close()
    # Read by status or history before the upgrade: no alert tables, nothing open.
    readonly = SqliteStore.open_readonly(path, clock=FakeClock())
    assert (readonly.schema_version, readonly.open_episodes(), readonly.pending_count()) == (
        3, [], 0)
    assert readonly.open_counts() == dict.fromkeys(Kind, 0)
    assert readonly.due("apprise-1", T0, 10) == []
    readonly.close()

    store = open_file(path)
    assert store.schema_version == SCHEMA_VERSION >= 4
    assert store.get("s1") is not None
    assert store.apply_transitions([OPEN_QR], CHANNELS, T0) == [OPEN_QR]
    store.close()
    again = SqliteStore.open_readonly(path, clock=FakeClock())
    assert again.open_episodes() == [QR]
    assert again.pending_count() == 2


def test_a_lost_file_s_alert_rows_are_carried_into_the_next(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = open_file(path, clock)
    store.apply_transitions([OPEN_QR], CHANNELS, T0)
    store.outage(False, T0, "unreachable")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    with capture_logs(), pytest.raises(StateError):
        store.put(Record("new"))  # noticed; the file the path names is made and filled
    assert store.open_episodes() == [QR]
    assert store.pending_count() == 2
    assert store.outage(None, T0 + 5) == Outage(T0, "unreachable")
    assert store.apply_transitions([OPEN_QR], CHANNELS, T0 + 5) == []  # not news there
