"""The replicas' lease in a real PostgreSQL server (``state.lease``), and the fence a
restart's claim checks (``PostgresStore.fenced``): one holder at a time, epochs that rise
by one per holder, expiry by the database's clock, a resignation heard by the standbys,
and a claim refused to a replica whose lease is over."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
import pytest

from supervisor.domain.models import Phase, Record
from supervisor.domain.policy import Policy
from supervisor.state.lease import NAME, Leases
from supervisor.state.postgres import PostgresStore
from supervisor.state.report import render_status, status_report
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import Fenced, StateError
from tests.fakes import FakeClock

WITHIN = 5.0


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    """A store on the database: it migrates it (the lease's tables are schema 6)."""
    opened = PostgresStore.open(pg_url, clock=FakeClock())
    yield opened
    opened.close()


@pytest.fixture
async def leases(pg_url: str, store: PostgresStore,
                 ) -> AsyncIterator[Callable[[str], Leases]]:
    made: list[Leases] = []

    def make(replica: str) -> Leases:
        made.append(Leases(pg_url, f"{replica}/1/t", replica))
        return made[-1]

    yield make
    for one in made:
        await one.aclose()


def expire(url: str) -> None:
    """The lease as if its holder had not renewed it in time."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE leases SET expires_at = lease_now() - 1")


async def test_one_replica_takes_the_lease_and_the_others_see_it_held(
        store: PostgresStore, leases: Callable[[str], Leases]) -> None:
    a, b = leases("a"), leases("b")
    won = await a.take(15.0, WITHIN)
    assert won is not None and (won.holder, won.replica, won.epoch) == ("a/1/t", "a", 1)
    assert 14.0 < won.expires_in <= 15.0
    seen = await b.take(15.0, WITHIN)
    assert seen is not None and (seen.holder, seen.epoch) == ("a/1/t", 1)
    current = store.lease()
    assert current is not None and current.replica == "a"


async def test_of_replicas_taking_the_lease_at_once_exactly_one_holds_it(
        leases: Callable[[str], Leases]) -> None:
    replicas = [leases(name) for name in "abcdef"]
    found = await asyncio.gather(*(r.take(15.0, WITHIN) for r in replicas))
    holders = {held.holder for held in found if held is not None}
    assert len(holders) == 1
    assert {held.epoch for held in found if held is not None} == {1}


async def test_the_epoch_rises_by_one_on_every_change_of_holder(
        pg_url: str, leases: Callable[[str], Leases]) -> None:
    a, b, c = leases("a"), leases("b"), leases("c")
    epochs = []
    for taker in (a, b, c, a):
        expire(pg_url)
        held = await taker.take(15.0, WITHIN)
        assert held is not None and held.holder == taker.holder
        epochs.append(held.epoch)
        again = await b.take(15.0, WITHIN) if taker is not b else await a.take(15.0, WITHIN)
        assert again is not None and again.epoch == held.epoch  # held: no new epoch
    assert epochs == [1, 2, 3, 4]


async def test_a_lease_is_renewed_only_by_its_holder_at_its_epoch_before_it_expires(
        pg_url: str, leases: Callable[[str], Leases]) -> None:
    a, b = leases("a"), leases("b")
    won = await a.take(15.0, WITHIN)
    assert won is not None
    renewed = await a.renew(won.epoch, 30.0, WITHIN)
    assert renewed is not None and 29.0 < renewed.expires_in <= 30.0
    assert await b.renew(won.epoch, 30.0, WITHIN) is None  # not b's
    assert await a.renew(won.epoch + 1, 30.0, WITHIN) is None  # not that epoch
    expire(pg_url)
    assert await a.renew(won.epoch, 30.0, WITHIN) is None  # too late: take it again
    again = await a.take(15.0, WITHIN)
    assert again is not None and again.epoch == won.epoch + 1


async def test_a_resignation_frees_the_lease_and_wakes_a_standby_at_once(
        leases: Callable[[str], Leases]) -> None:
    a, b = leases("a"), leases("b")
    won = await a.take(15.0, WITHIN)
    assert won is not None
    assert await b.resigned(0.05) is False  # listening now; nothing yet
    waiting = asyncio.ensure_future(b.resigned(10.0))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await a.resign(won.epoch, WITHIN) is True
    assert await asyncio.wait_for(waiting, 5.0) is True
    assert loop.time() - started < 1.0
    taken = await b.take(15.0, WITHIN)
    assert taken is not None and (taken.holder, taken.epoch) == ("b/1/t", 2)
    assert await a.resign(won.epoch, WITHIN) is False  # not a's any more


async def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    leases = Leases("postgresql://u:pw-SECRET-93@127.0.0.1:1/db", "a/1/t", "a", timeout=1)
    with pytest.raises(StateError) as caught:
        await leases.take(15.0, WITHIN)
    text = str(caught.value)
    assert "pw-SECRET-93" not in text and "\n" not in text
    assert text.startswith("cannot reach postgresql://127.0.0.1:1/db")
    with pytest.raises(StateError):
        await leases.resigned(0.1)
    await leases.aclose()


# ------------------------------------------------------------------------ the fence


def claim(store: PostgresStore, session_id: str) -> bool:
    """A restart's claim as the cycle writes it: fenced, then the record swapped."""
    with store.transaction():
        store.fenced()
        return store.swap(store.get(session_id), Record(session_id, phase=Phase.VERIFYING))


async def test_a_claim_holds_only_while_the_replica_holds_the_lease_at_its_epoch(
        pg_url: str, store: PostgresStore, leases: Callable[[str], Leases]) -> None:
    a, b = leases("a"), leases("b")
    won = await a.take(15.0, WITHIN)
    assert won is not None
    store.fence(NAME, a.holder, 0)  # standing by: every claim refused
    with pytest.raises(Fenced, match="does not hold the lease"):
        claim(store, "s1")
    store.fence(NAME, a.holder, won.epoch)
    assert claim(store, "s1") is True
    expire(pg_url)  # its lease ran out: refused, though nobody took it yet
    with pytest.raises(Fenced, match=f"epoch {won.epoch} is over"):
        claim(store, "s2")
    taken = await b.take(15.0, WITHIN)
    assert taken is not None and taken.holder == b.holder
    with pytest.raises(Fenced):
        claim(store, "s2")
    assert store.get("s2") is None  # nothing written
    other = PostgresStore.open(pg_url, clock=FakeClock())
    try:
        other.fence(NAME, b.holder, taken.epoch)
        assert claim(other, "s2") is True
    finally:
        other.close()


async def test_nobody_takes_the_lease_between_a_claims_check_and_its_commit(
        pg_url: str, store: PostgresStore, leases: Callable[[str], Leases]) -> None:
    a, b = leases("a"), leases("b")
    won = await a.take(15.0, WITHIN)
    assert won is not None
    store.fence(NAME, a.holder, won.epoch)
    checked, release = threading.Event(), threading.Event()

    def slow_claim() -> None:
        with store.transaction():
            store.fenced()
            checked.set()
            release.wait(10)
            store.swap(None, Record("s1", phase=Phase.VERIFYING))

    worker = threading.Thread(target=slow_claim)
    worker.start()
    assert await asyncio.to_thread(checked.wait, 10)
    expire(pg_url)  # expired while the claim is open: a standby tries to take it
    taking = asyncio.ensure_future(b.take(15.0, WITHIN))
    await asyncio.sleep(0.3)
    assert not taking.done()  # it waits for the claim to commit
    release.set()
    await asyncio.to_thread(worker.join, 10)
    taken = await taking
    assert taken is not None and (taken.holder, taken.epoch) == (b.holder, won.epoch + 1)
    assert store.get("s1") == Record("s1", phase=Phase.VERIFYING)  # committed before


async def test_status_names_the_leader_and_says_when_nobody_holds_the_lease(
        pg_url: str, store: PostgresStore, leases: Callable[[str], Leases]) -> None:
    def report() -> tuple[dict[str, object], str]:
        readonly = PostgresStore.open_readonly(pg_url, clock=FakeClock())
        try:
            made = status_report(readonly, Policy().classes, readonly_now, 600)
        finally:
            readonly.close()
        text = render_status(made, readonly_now, as_json=False, location="db")
        return made, text

    readonly_now = FakeClock().now()
    made, text = report()
    assert made["ha"] == {"leader": None, "epoch": None, "expires_in": None}
    assert "leader: none (no replica holds the lease)" in text
    won = await leases("web-1").take(15.0, WITHIN)
    assert won is not None
    made, text = report()
    ha = made["ha"]
    assert isinstance(ha, dict) and (ha["leader"], ha["epoch"]) == ("web-1", 1)
    assert re.search(r"leader: web-1 \(epoch 1, lease expires in 1\ds unless renewed\)", text)
    expire(pg_url)
    made, text = report()
    assert "leader: none (the lease of epoch 1 expired" in text
    sqlite = SqliteStore.open(":memory:")
    try:
        assert status_report(sqlite, Policy().classes, readonly_now, 600)["ha"] is None
    finally:
        sqlite.close()  # no replicas on an SQLite file


async def test_a_claim_left_open_by_a_stopped_replica_holds_a_takeover_back_briefly(
        pg_url: str, leases: Callable[[str], Leases]) -> None:
    """A replica stopped (SIGSTOP, a hung host) inside a claim's transaction holds the
    lease row; the server ends that transaction after the store's idle limit (a third of
    the lease among replicas), and a standby takes over then, not a minute later."""
    stuck = PostgresStore.open(pg_url, clock=FakeClock())
    stuck.end_idle_transactions_after(1.0)
    a, b = leases("a"), leases("b")
    won = await a.take(15.0, WITHIN)
    assert won is not None
    stuck.fence(NAME, a.holder, won.epoch)
    checked, never = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def stopped_in_claim() -> None:
        try:
            with stuck.transaction():
                stuck.fenced()
                checked.set()
                never.wait(10)  # the process is stopped here
                stuck.swap(None, Record("s9", phase=Phase.VERIFYING))
        except StateError as exc:
            failed.append(exc)

    worker = threading.Thread(target=stopped_in_claim)
    worker.start()
    try:
        assert await asyncio.to_thread(checked.wait, 10)
        expire(pg_url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        taken = None
        while taken is None or taken.holder != b.holder:
            assert loop.time() - started < 8.0, "the stopped claim held the takeover back"
            try:
                taken = await b.take(15.0, 2.0)
            except StateError:
                taken = None
        assert loop.time() - started < 8.0
    finally:
        never.set()
        await asyncio.to_thread(worker.join, 10)
        stuck.close()
    assert failed  # its claim was not committed:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM records WHERE session_id = 's9'"
                            ).fetchone() == (0,)
