"""Leadership's rules (``domain.leadership``) and its shell (``runtime.leadership``) on a
fake lease and a manual clock: exact, and never sleeping. The lease in a real PostgreSQL
server is tests/unit/test_lease_pg.py's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from supervisor.domain import events as ev
from supervisor.domain.leadership import Role, Terms, problem
from supervisor.runtime.leadership import Leadership, replica_name
from supervisor.state.lease import Held
from supervisor.state.store import Fenced, StateError
from tests.fakes import ManualClock

TERMS = Terms(lease=15.0, renew=5.0)


# ----------------------------------------------------------------------- the rules


def test_the_leader_stops_acting_a_margin_before_the_lease_could_expire() -> None:
    assert TERMS.margin == 1.5
    # The database answered "expires in 15 s" to a statement sent at t=100: acting until
    # 113.5, whatever the time the answer came back.
    assert TERMS.acting_until(100.0, 15.0) == 113.5
    # It answered less than a full lease (a row it found already ours): that counts.
    assert TERMS.acting_until(100.0, 4.0) == 102.5
    # Never more than a lease, whatever the database says.
    assert TERMS.acting_until(100.0, 99.0) == 113.5
    assert Terms(lease=3.0, renew=1.0).margin == 0.5  # at least half a second


def test_a_renewal_must_be_done_while_the_leader_may_still_act() -> None:
    assert TERMS.within(113.5, 105.0) == 8.5
    assert TERMS.within(113.5, 113.49) == 0.1  # at least a tenth of a second


def test_a_standby_looks_again_when_the_lease_it_saw_expires_and_at_least_every_renew() -> None:
    assert TERMS.standby_wait(2.0) == pytest.approx(2.05)
    assert TERMS.standby_wait(12.0) == 5.0
    assert TERMS.standby_wait(None) == 5.0
    assert TERMS.standby_wait(-3.0) == 0.05  # expired already: at once, nearly


def test_terms_where_one_failed_renewal_would_stop_the_leader_are_refused() -> None:
    assert problem(TERMS) is None
    assert problem(Terms(lease=3.0, renew=1.0)) is None
    found = problem(Terms(lease=15.0, renew=7.0))
    assert found is not None and found.startswith("must be at most 6.75 s")
    assert "it is 7 s" in found


def test_a_replica_is_named_by_its_setting_else_by_its_host() -> None:
    assert replica_name("web-1") == "web-1"
    name = replica_name("")
    assert name and len(name) <= 63
    assert all(c.isalnum() or c in "._-" for c in name)


# ----------------------------------------------------------------------- the shell


class FakeLeases:
    """The lease row as a database would keep it, on the test's clock; ``down`` makes
    every call fail as an unreachable database would."""

    def __init__(self, clock: ManualClock, holder: str, replica: str,
                 row: dict[str, Held | float] | None = None) -> None:
        self.clock = clock
        self.holder = holder
        self.replica = replica
        self.row = row if row is not None else {}  # shared between replicas
        self.down = False
        self.calls: list[str] = []
        self.resigns = asyncio.Event()

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise StateError("lost the connection to postgresql://db:5432/x: refused")

    def _current(self) -> Held | None:
        held = self.row.get("held")
        if not isinstance(held, Held):
            return None
        expires_at = self.row["expires_at"]
        assert isinstance(expires_at, float)
        return Held(held.holder, held.replica, held.epoch, expires_at - self.clock.wall)

    async def take(self, lease: float, within: float) -> Held | None:
        self._check("take")
        current = self._current()
        if current is None or current.expires_in <= 0:
            last = self.row.get("epoch", 0.0)
            assert isinstance(last, float | int)
            epoch = int(last) + 1
            self.row.update(epoch=float(epoch), expires_at=self.clock.wall + lease,
                            held=Held(self.holder, self.replica, epoch, lease))
        return self._current()

    async def renew(self, epoch: int, lease: float, within: float) -> Held | None:
        self._check("renew")
        current = self._current()
        if current is None or current.holder != self.holder or current.epoch != epoch or (
                current.expires_in <= 0):
            return None
        self.row["expires_at"] = self.clock.wall + lease
        return self._current()

    async def resign(self, epoch: int, within: float) -> bool:
        self._check("resign")
        current = self._current()
        if current is None or current.holder != self.holder:
            return False
        self.row.pop("held")
        self.resigns.set()
        return True

    async def resigned(self, seconds: float) -> bool:
        self._check("listen")
        sleeping = asyncio.ensure_future(self.clock.sleep(seconds))
        told = asyncio.ensure_future(self.resigns.wait())
        try:
            await asyncio.wait({sleeping, told}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            told.cancel()
        if self.resigns.is_set():
            self.resigns.clear()
            return True
        return False

    async def aclose(self) -> None:
        pass


class FakeFencing:
    def __init__(self) -> None:
        self.fences: list[tuple[str, str, int]] = []

    def fence(self, name: str, holder: str, epoch: int) -> None:
        self.fences.append((name, holder, epoch))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def running(clock: ManualClock) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def replica(clock: ManualClock, name: str, row: dict[str, Held | float],
            tasks: list[asyncio.Task[None]], resigns: asyncio.Event | None = None,
            ) -> tuple[Leadership, FakeLeases, FakeFencing]:
    leases = FakeLeases(clock, f"{name}/1/x", name, row)
    if resigns is not None:  # one database: its NOTIFY reaches every replica
        leases.resigns = resigns
    fencing = FakeFencing()
    leadership = Leadership(leases, fencing, TERMS, clock)
    tasks.append(asyncio.ensure_future(leadership.run()))
    return leadership, leases, fencing


async def test_the_first_replica_is_elected_fences_its_claims_and_polls_at_once(
        clock: ManualClock, running: list[asyncio.Task[None]]) -> None:
    row: dict[str, Held | float] = {}
    woken: list[str] = []
    with capture_logs() as logs:
        a, _, fencing = replica(clock, "a", row, running)
        a.on_elected.append(lambda: woken.append("a"))
        await settle()
    assert (a.role, a.epoch, a.acting(), woken) == (Role.LEADER, 1, True, ["a"])
    assert fencing.fences == [("supervisor", "a/1/x", 0), ("supervisor", "a/1/x", 1)]
    elected = [e for e in logs if e["event"] == ev.HA_ELECTED]
    assert elected == [{"event": ev.HA_ELECTED, "log_level": "info", "replica": "a",
                        "epoch": 1, "previous_epoch": None, "lease": 15.0}]
    a.permit()  # leads: requests may go


async def test_a_standby_never_acts_and_says_who_leads(
        clock: ManualClock, running: list[asyncio.Task[None]]) -> None:
    row: dict[str, Held | float] = {}
    a, _, _ = replica(clock, "a", row, running)
    await settle()
    with capture_logs() as logs:
        b, b_leases, b_fencing = replica(clock, "b", row, running)
        await settle()
    assert (b.role, b.acting(), b.leader, b.leader_epoch) == (Role.STANDBY, False, "a", 1)
    assert b_fencing.fences == [("supervisor", "b/1/x", 0)]  # every claim refused
    with pytest.raises(Fenced, match="replica b does not lead \\(leader: a\\)"):
        b.permit()
    assert [e["event"] for e in logs] == [ev.HA_STANDBY]
    assert b.view() == {"role": "standby", "replica": "b", "leader": "a", "epoch": 1,
                        "lease_expires_in": 15.0, "problem": None}
    # It stays a standby, looking again every renew, while a renews.
    for _ in range(6):
        clock.advance(5.0)
        await settle()
    assert (a.role, b.role) == (Role.LEADER, Role.STANDBY)
    assert b_leases.calls.count("take") >= 6


async def test_a_standby_takes_over_within_lease_and_renew_of_the_leaders_death(
        clock: ManualClock, running: list[asyncio.Task[None]]) -> None:
    row: dict[str, Held | float] = {}
    replica(clock, "a", row, running)
    await settle()
    b, _, b_fencing = replica(clock, "b", row, running)
    await settle()
    running[0].cancel()  # a dies (SIGKILL): no renewal, no resignation
    await settle()
    died = clock.mono
    while b.role is not Role.LEADER:
        clock.advance(0.05)
        await settle()
        assert clock.mono - died <= TERMS.lease + TERMS.renew
    assert b.epoch == 2 and b_fencing.fences[-1] == ("supervisor", "b/1/x", 2)
    # It looked again when the lease it saw was due to expire, not a renew later.
    assert clock.mono - died <= TERMS.lease + 0.2


async def test_a_resignation_hands_over_at_once(
        clock: ManualClock, running: list[asyncio.Task[None]]) -> None:
    row: dict[str, Held | float] = {}
    a, a_leases, _ = replica(clock, "a", row, running)
    await settle()
    b, _, _ = replica(clock, "b", row, running, resigns=a_leases.resigns)
    await settle()
    with capture_logs() as logs:
        await a.resign()
        await settle()
    assert (a.role, a.acting(), b.role, b.epoch) == (Role.STANDBY, False, Role.LEADER, 2)
    assert [e for e in logs if e["event"] == ev.HA_RESIGNED] == [
        {"event": ev.HA_RESIGNED, "log_level": "info", "replica": "a", "epoch": 1,
         "resigned": True}]


async def test_a_leader_stopped_past_its_lease_sends_nothing_and_stands_by(
        clock: ManualClock, running: list[asyncio.Task[None]]) -> None:
    row: dict[str, Held | float] = {}
    a, _, a_fencing = replica(clock, "a", row, running)
    await settle()
    b, _, _ = replica(clock, "b", row, running)
    await settle()
    # SIGSTOP: a's loop does not run while time passes; b takes over meanwhile.
    running[0].cancel()
    await settle()
    for _ in range(400):
        clock.advance(0.05)
        await settle()
    assert b.role is Role.LEADER
    # SIGCONT: before a's loop has run at all, its clock says the lease is over.
    assert not a.acting()
    with pytest.raises(Fenced):
        a.permit()
    with capture_logs() as logs:
        running[0] = asyncio.ensure_future(a.run())
        await settle()
    assert (a.role, a.epoch) == (Role.STANDBY, 0)
    assert a_fencing.fences[-1] == ("supervisor", "a/1/x", 0)
    assert [(e["event"], e["reason"]) for e in logs if e["event"] == ev.HA_LOST] == [
        (ev.HA_LOST, "lease_expired")]


async def test_an_unreachable_database_stops_the_leader_loudly_when_its_lease_could_expire(
        clock: ManualClock, running: list[asyncio.Task[None]]) -> None:
    row: dict[str, Held | float] = {}
    stopped: list[str] = []
    a, leases, _ = replica(clock, "a", row, running)
    a.on_stopped.append(stopped.append)
    await settle()
    leases.down = True
    lost_at = clock.mono
    with capture_logs() as logs:
        while a.acting():
            clock.advance(0.05)
            await settle()
        await settle()
    # It acted on until a margin before its lease could have expired, not a moment after.
    assert clock.mono - lost_at <= TERMS.lease - TERMS.margin + 0.06
    assert a.role is Role.STOPPED
    lost = [e for e in logs if e["event"] == ev.HA_LOST]
    assert [(e["log_level"], e["reason"]) for e in lost] == [("error", "database_unreachable")]
    assert "refused" in lost[0]["problem"] and stopped and "refused" in stopped[0]
    assert [e["event"] for e in logs].count(ev.HA_UNREACHABLE) == 1
    assert a.view()["role"] == "stopped"
    # The database is back: a takes the lease again (a new epoch) and acts.
    leases.down = False
    for _ in range(200):
        clock.advance(0.05)
        await settle()
        if a.acting():
            break
    assert (a.role, a.epoch, a.problem) == (Role.LEADER, 2, None)


async def test_a_leader_whose_lease_was_taken_stands_by_at_its_next_renewal(
        clock: ManualClock, running: list[asyncio.Task[None]]) -> None:
    row: dict[str, Held | float] = {}
    a, _, _ = replica(clock, "a", row, running)
    await settle()
    row["held"] = Held("z/9/q", "z", 7, 15.0)  # somebody else's, by whatever means
    row["expires_at"] = clock.wall + 15.0
    with capture_logs() as logs:
        clock.advance(5.0)
        await settle()
    assert (a.role, a.acting()) == (Role.STANDBY, False)
    assert [(e["event"], e["reason"]) for e in logs if e["event"] == ev.HA_LOST] == [
        (ev.HA_LOST, "lease_taken")]
    assert a.leader == "z" or a.leader is None


def test_no_replica_leads_before_its_loop_has_run(clock: ManualClock) -> None:
    leases = FakeLeases(clock, "a/1/x", "a")
    leadership = Leadership(leases, FakeFencing(), TERMS, clock)
    assert not leadership.acting()
    assert leadership.expires_in() is None
    with pytest.raises(Fenced, match="leader: none"):
        leadership.permit()


async def test_a_bug_in_the_loop_is_logged_and_the_replica_stands_by_and_goes_on(
        clock: ManualClock, running: list[asyncio.Task[None]]) -> None:
    row: dict[str, Held | float] = {}
    a, leases, _ = replica(clock, "a", row, running)
    await settle()
    assert a.role is Role.LEADER

    async def broken(epoch: int, lease: float, within: float) -> Held | None:
        raise KeyError("a bug")

    leases.renew = broken  # type: ignore[method-assign]
    with capture_logs() as logs:
        clock.advance(5.0)
        await settle()
    assert (a.role, a.acting()) == (Role.STANDBY, False)
    crashed = [e for e in logs if e["event"] == ev.DAEMON_TASK_CRASHED]
    assert crashed and crashed[0]["task"] == "leadership"
    row.clear()  # the lease lapsed meanwhile
    for _ in range(6):
        clock.advance(5.0)
        await settle()
    assert a.role is Role.LEADER and not running[0].done()
