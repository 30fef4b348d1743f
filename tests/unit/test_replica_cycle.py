"""The poll cycle as a replica runs it (``ha``): a claim the store fences is neither
written nor sent; a replica that leads again counts a zombie from its own next poll, not
from the poll it made before others led; a restart another replica left in flight is
judged at once. Fake clock and in-memory API; nothing sleeps."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from supervisor.domain.models import Phase, Record, SessionList
from supervisor.domain.policy import Backoff, Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.state.store import Fenced, MemoryStore
from tests.fakes import FakeApi, FakeClock, MaxRandom

POLICY = Policy(backoff=Backoff(initial=10, max=80, multiplier=2), max_restarts=5,
                starting_timeout=30, stable_after=60, zombie_after=120)


class FencedStore(MemoryStore):
    """A store whose fence can be closed, as a replica's that lost its lease."""

    def __init__(self) -> None:
        super().__init__()
        self.leading = True
        self.checks = 0
        self.elsewhere: dict[str, float] = {}  # written by another process, when

    def written_elsewhere_at(self, session_id: str) -> float | None:
        return self.elsewhere.get(session_id)

    def fenced(self) -> None:
        self.checks += 1
        if not self.leading:
            raise Fenced("this replica does not hold the lease (epoch 3 is over)")


class DisconnectedApi(FakeApi):
    """The list says WORKING for every session, its engine not connected for those in
    ``disconnected``."""

    def __init__(self, statuses: dict[str, str]) -> None:
        super().__init__(statuses)
        self.disconnected: set[str] = set()

    async def list_sessions(self) -> SessionList:
        listed = await super().list_sessions()
        return SessionList(tuple(
            replace(info, engine_connected=info.session_id not in self.disconnected)
            for info in listed.sessions))


def make(api: FakeApi, store: MemoryStore, clock: FakeClock, **kw: object) -> Supervisor:
    return Supervisor(api, store, POLICY, clock, MaxRandom(), poll_interval=30.0, **kw)  # type: ignore[arg-type]


async def test_a_claim_the_store_fences_is_not_written_nor_sent() -> None:
    api, store, clock = FakeApi({"s1": "FAILED"}), FencedStore(), FakeClock()
    supervisor = make(api, store, clock)
    store.leading = False
    result = await supervisor.poll()
    assert not result.ok and result.state_error is not None
    assert "does not hold the lease" in result.state_error
    assert [call for call, _ in api.calls] == ["list"]  # no restart
    assert store.get("s1") is None or store.get("s1").phase is not Phase.VERIFYING  # type: ignore[union-attr]
    store.leading = True
    assert (await supervisor.poll()).ok
    assert ("restart", "s1") in api.calls and store.checks >= 2


async def test_a_healthy_session_is_written_without_asking_the_fence() -> None:
    api, store, clock = FakeApi({"s1": "WORKING"}), FencedStore(), FakeClock()
    store.leading = False
    assert (await make(api, store, clock).poll()).ok  # nothing to claim: nothing fenced
    assert store.checks == 0


async def test_a_replica_that_leads_again_counts_a_zombie_from_its_next_poll() -> None:
    api, store, clock = DisconnectedApi({"s1": "WORKING"}), FencedStore(), FakeClock()
    supervisor = make(api, store, clock)
    assert (await supervisor.poll()).ok  # it led, then another replica did for 10 min
    clock.advance(600)
    api.disconnected.add("s1")
    supervisor.took_over()
    assert (await supervisor.poll()).ok
    record = store.get("s1")
    assert record is not None and record.disconnected_since == clock.now()
    assert not record.zombie  # not 600 s disconnected: counted from now
    clock.advance(130)
    assert (await supervisor.poll()).ok
    assert store.get("s1").zombie  # type: ignore[union-attr]


async def test_a_restart_another_replica_left_in_flight_is_judged_at_once() -> None:
    api, store, clock = FakeApi({"s1": "FAILED"}), FencedStore(), FakeClock()
    # The old leader claimed a restart 5 s ago and died before any answer.
    store.put(Record("s1", phase=Phase.VERIFYING, requested_at=clock.now() - 5,
                     attempt=1, last_status="FAILED"))
    store.elsewhere["s1"] = clock.now() - 5
    supervisor = make(api, store, clock, in_flight_grace=0.0)
    assert (await supervisor.poll()).ok
    record = store.get("s1")
    assert record is not None and record.phase is Phase.UNHEALTHY  # judged at once
    assert record.last_outcome == "failed:unanswered"  # it may never have been sent
    assert record.next_attempt_at is not None and record.next_attempt_at > clock.now()
    assert ("restart", "s1") not in api.calls  # not again inside its backoff


@pytest.mark.parametrize("grace", [315.0])
async def test_without_replicas_such_a_restart_is_left_to_its_process(grace: float) -> None:
    api, store, clock = FakeApi({"s1": "FAILED"}), FencedStore(), FakeClock()
    store.put(Record("s1", phase=Phase.VERIFYING, requested_at=clock.now() - 5,
                     attempt=1, last_status="FAILED"))
    store.elsewhere["s1"] = clock.now() - 5
    supervisor = make(api, store, clock, in_flight_grace=grace)
    assert (await supervisor.poll()).ok
    assert store.get("s1").phase is Phase.VERIFYING  # type: ignore[union-attr]
