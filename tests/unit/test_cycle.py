"""One poll cycle against an in-memory API: costs, actions, events and bookkeeping."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.api.errors import ApiUnreachable, AuthFailed, Conflict, RateLimited
from supervisor.domain.models import Phase
from supervisor.domain.policy import Backoff, Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.state.store import MemoryStore
from tests.fakes import FakeApi, FakeClock, MaxRandom

POLICY = Policy(backoff=Backoff(initial=10, max=80, multiplier=2), max_restarts=3,
                starting_timeout=30, stable_after=60)


def make(api: FakeApi, *, sessions: tuple[str, ...] = (), key_reader=None,
         clock: FakeClock | None = None) -> Supervisor:
    return Supervisor(api, MemoryStore(), POLICY, clock or FakeClock(), MaxRandom(),
                      sessions=sessions, auth_retry_interval=300, key_reader=key_reader)


def names(events: list[MutableMapping[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


async def test_one_list_request_per_cycle_whatever_the_number_of_sessions() -> None:
    api = FakeApi({f"s{i}": "WORKING" for i in range(1000)})
    sup = make(api)
    for _ in range(3):
        result = await sup.poll()
        assert result.ok and result.sessions == 1000
    assert api.calls == [("list", "")] * 3


async def test_stopped_session_is_restarted_and_verified_over_two_cycles() -> None:
    api = FakeApi({"a": "WORKING", "b": "STOPPED"})
    sup = make(api)
    with capture_logs() as events:
        await sup.poll()
        api.statuses["b"] = "WORKING"
        sup.clock.advance(5)  # type: ignore[attr-defined]
        await sup.poll()
    assert api.calls == [("list", ""), ("restart", "b"), ("list", "")]
    assert [n for n in names(events) if n != "poll.completed"] == [
        "session.unhealthy", "restart.requested", "restart.accepted",
        "restart.succeeded", "session.recovered",
    ]


async def test_healthy_sessions_are_not_rewritten_every_poll() -> None:
    api = FakeApi({"a": "WORKING"})
    sup = make(api)
    await sup.poll()
    record = sup.store.get("a")
    await sup.poll()
    assert sup.store.get("a") is record


async def test_configured_sessions_missing_from_the_list_are_fetched_one_by_one() -> None:
    api = FakeApi({"a": "WORKING", "b": "STOPPED", "other": "STOPPED"})
    api.hidden = {"b"}
    sup = make(api, sessions=("a", "b", "ghost"))
    with capture_logs() as events:
        result = await sup.poll()
    assert ("restart", "other") not in api.calls  # not ours
    assert ("get", "b") in api.calls and ("restart", "b") in api.calls
    assert ("get", "ghost") in api.calls
    assert "session.gone" in names(events)
    ghost = sup.store.get("ghost")
    assert ghost is not None and ghost.phase is Phase.GONE
    assert result.sessions == 2
    api.calls.clear()
    await sup.poll()  # a gone configured session is not looked up again every poll
    assert ("get", "ghost") not in api.calls


async def test_session_gone_from_the_account_is_forgotten() -> None:
    api = FakeApi({"a": "WORKING", "b": "WORKING"})
    sup = make(api)
    await sup.poll()
    del api.statuses["b"]
    with capture_logs() as events:
        await sup.poll()
    assert "session.gone" in names(events)
    assert sup.store.get("b") is None


async def test_poll_failure_is_logged_and_does_not_raise() -> None:
    api = FakeApi({"a": "STOPPED"})
    api.fail("list", ApiUnreachable("connection refused", call="list"))
    sup = make(api)
    with capture_logs() as events:
        result = await sup.poll()
    assert not result.ok and isinstance(result.error, ApiUnreachable)
    assert names(events) == ["poll.failed"]
    assert events[0]["error"] == "unreachable"


async def test_auth_failure_is_critical_once_then_slow_and_rereads_the_key() -> None:
    api = FakeApi({"a": "WORKING"})
    api.fail("list", AuthFailed("refused", call="list", http_status=401),
             AuthFailed("refused", call="list", http_status=401))
    reads = []

    def reader() -> SecretStr:
        reads.append(1)
        return SecretStr(f"key-{len(reads)}")

    clock = FakeClock()
    sup = make(api, key_reader=reader, clock=clock)
    with capture_logs() as events:
        await sup.poll()
        for _ in range(10):  # within auth_retry_interval: no request at all
            clock.advance(10)
            assert (await sup.poll()).skipped
        clock.advance(300)
        await sup.poll()  # re-reads the key, tries once, still refused
        clock.advance(300)
        result = await sup.poll()  # works now
    assert result.ok
    assert api.calls.count(("list", "")) == 3
    assert api.keys == ["key-1", "key-2"]
    assert names(events).count("api.auth_failed") == 1
    assert "api.auth_restored" in names(events)
    assert next(e for e in events if e["event"] == "api.auth_failed")["log_level"] == "critical"


async def test_a_new_key_is_tried_at_the_next_poll_not_after_the_wait() -> None:
    api = FakeApi({"a": "WORKING"})
    api.fail("list", AuthFailed("refused", call="list", http_status=401))
    clock = FakeClock()
    sup = make(api, key_reader=lambda: SecretStr("new-key"), clock=clock)
    with capture_logs() as events:
        await sup.poll()
        assert sup.auth.until == clock.monotonic() + 300
        clock.advance(10)
        sup.auth = sup.auth.new_key(clock.monotonic())  # as a reload's rebuild carries it
        result = await sup.poll()  # the new key, at once: 290 s early
    assert result.ok and api.keys == ["new-key"]
    assert sup.auth.until is None
    assert names(events) == ["api.auth_failed", "poll.failed", "api.auth_restored",
                             "poll.completed"]
    assert sup.auth.new_key(clock.monotonic()).until is None  # a working key: nothing to end


async def test_auth_failure_during_restarts_stops_the_rest_of_the_cycle() -> None:
    api = FakeApi({"a": "STOPPED", "b": "STOPPED", "c": "STOPPED"})
    api.fail("restart", AuthFailed("refused", call="restart", http_status=401))
    sup = make(api)
    with capture_logs() as events:
        await sup.poll()
    assert [c for c in api.calls if c[0] == "restart"] == [("restart", "a")]
    assert names(events).count("restart.requested") == 3
    assert names(events).count("restart.deferred") == 3


async def test_conflict_with_a_still_failed_session_stops_then_restarts_it() -> None:
    api = FakeApi({"a": "ERROR"})
    api.fail("restart", Conflict("must be stopped", call="restart", http_status=409))
    sup = make(api)
    await sup.poll()
    assert api.calls == [("list", ""), ("restart", "a"), ("get", "a"), ("stop", "a"),
                         ("restart", "a")]


async def test_rate_limited_restart_is_deferred_to_the_next_cycle() -> None:
    api = FakeApi({"a": "STOPPED"})
    api.fail("restart", RateLimited("slow down", call="restart", retry_after=2.0))
    sup = make(api)
    with capture_logs() as events:
        await sup.poll()
        await sup.poll()
    assert names(events).count("restart.deferred") == 1
    assert api.calls.count(("restart", "a")) == 2


async def test_dry_run_changes_nothing_and_reports_what_it_would_do() -> None:
    api = FakeApi({"a": "STOPPED", "b": "WORKING"})
    sup = make(api)
    result = await sup.poll(dry_run=True)
    assert api.calls == [("list", "")]
    assert set(result.planned) == {"a"}
    assert sup.store.get("a") is None


async def test_every_restart_request_has_exactly_one_outcome_event() -> None:
    api = FakeApi({f"s{i}": "STOPPED" for i in range(6)})
    api.fail("restart", Conflict("x", call="restart", http_status=409),
             RateLimited("x", call="restart"), ApiUnreachable("x", call="restart"))
    api.after_restart = "FAILED"
    sup = make(api)
    with capture_logs() as events:
        for _ in range(6):
            await sup.poll()
            sup.clock.advance(100)  # type: ignore[attr-defined]
    requested = [e for e in events if e["event"] == "restart.requested"]
    outcomes = [e for e in events if e["event"] in {
        "restart.succeeded", "restart.failed", "restart.conflict", "restart.deferred"}]
    assert len(requested) > 6
    assert len(requested) == len(outcomes) + sum(
        1 for r in sup.store.records() if r.phase is Phase.VERIFYING)
