"""``check``: its report and its monitoring exit status in each case."""

from __future__ import annotations

import json

from supervisor.check import CRITICAL, OK, UNKNOWN, WARNING, run_check
from supervisor.cycle import Supervisor
from supervisor.errors import ApiUnreachable, AuthFailed
from supervisor.policy import Backoff, Policy
from supervisor.store import MemoryStore
from tests.fakes import FakeApi, FakeClock, MaxRandom

POLICY = Policy(backoff=Backoff(initial=10, max=80), max_restarts=2, starting_timeout=5)


def make(api: FakeApi, sessions: tuple[str, ...] = ()) -> Supervisor:
    return Supervisor(api, MemoryStore(), POLICY, FakeClock(), MaxRandom(), sessions=sessions)


async def test_all_healthy_is_0() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING", "b": "CONNECTED"})))
    assert report.exit_status == OK
    assert [r.outcome for r in report.rows] == ["ok", "ok"]


async def test_restarted_and_back_within_wait_is_1() -> None:
    api = FakeApi({"a": "WORKING", "b": "STOPPED"})
    api.after_restart = "WORKING"
    sup = make(api)
    report = await run_check(sup, wait=10)
    assert report.exit_status == WARNING
    row = next(r for r in report.rows if r.id == "b")
    assert (row.action, row.outcome, row.status) == ("restart", "restarted", "WORKING")
    assert sup.clock.sleeps == [1.0]  # type: ignore[attr-defined]


async def test_still_recovering_when_the_wait_ends_is_1() -> None:
    api = FakeApi({"b": "STOPPED"})
    report = await run_check(make(api), wait=3)
    assert report.exit_status == WARNING
    assert report.rows[0].outcome == "recovering"


async def test_needs_person_is_2() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING", "q": "SCAN_QR_CODE"})))
    assert report.exit_status == CRITICAL
    assert next(r for r in report.rows if r.id == "q").outcome == "needs_person"


async def test_failed_restart_is_2() -> None:
    api = FakeApi({"b": "STOPPED"})
    api.fail("restart", ApiUnreachable("reset", call="restart"))
    report = await run_check(make(api))
    assert report.exit_status == CRITICAL
    assert report.rows[0].outcome == "failed"


async def test_configured_session_that_is_gone_is_2_and_listed() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING"}), sessions=("a", "ghost")))
    assert report.exit_status == CRITICAL
    assert [(r.id, r.outcome) for r in report.rows] == [("a", "ok"), ("ghost", "gone")]


async def test_api_unreachable_is_3() -> None:
    api = FakeApi({"a": "WORKING"})
    api.fail("list", ApiUnreachable("connection refused", call="list"))
    report = await run_check(make(api))
    assert report.exit_status == UNKNOWN
    assert report.error is not None and "unreachable" in report.error


async def test_key_refused_is_3() -> None:
    api = FakeApi({"a": "WORKING"})
    api.fail("list", AuthFailed("refused", call="list", http_status=401))
    assert (await run_check(make(api))).exit_status == UNKNOWN


async def test_dry_run_restarts_nothing_and_says_what_it_would_do() -> None:
    api = FakeApi({"a": "WORKING", "b": "STOPPED"})
    report = await run_check(make(api), dry_run=True)
    assert api.calls == [("list", "")]
    row = next(r for r in report.rows if r.id == "b")
    assert (row.action, row.outcome) == ("would_restart", "would_restart")
    assert report.exit_status == WARNING


async def test_json_has_one_object_per_session_with_the_documented_keys() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING", "b": "SCAN_QR_CODE"})))
    data = json.loads(report.to_json())
    assert data["exit_status"] == CRITICAL
    assert [set(s) for s in data["sessions"]] == [
        {"id", "name", "status", "class", "action", "outcome", "exit_status"}] * 2
    assert data["sessions"][1]["class"] == "needs_person"


async def test_table_lists_every_session_and_a_verdict() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING"})))
    lines = report.to_table().splitlines()
    assert lines[0].split() == ["SESSION", "NAME", "STATUS", "CLASS", "ACTION", "OUTCOME"]
    assert lines[1].split() == ["a", "name-a", "WORKING", "healthy", "none", "ok"]
    assert lines[-1] == "OK: 1 session(s)"
