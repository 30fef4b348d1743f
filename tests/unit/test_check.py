"""``check``: its report and its monitoring exit status in each case."""

from __future__ import annotations

import io
import json

import pytest

from supervisor.api.errors import ApiUnreachable, AuthFailed
from supervisor.domain.policy import Backoff, Policy
from supervisor.domain.verdict import CRITICAL, OK, UNKNOWN, WARNING
from supervisor.runtime.check import run_check
from supervisor.runtime.cycle import Supervisor
from supervisor.state.store import MemoryStore
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


@pytest.mark.parametrize(("status", "exit_status", "outcome"), [
    ("SCAN_QR_CODE", CRITICAL, "needs_person"),
    ("SOMETHING_NEW", WARNING, "unknown_status"),
    ("STARTING", WARNING, "starting"),
])
async def test_dry_run_decides_on_what_the_api_just_said_as_a_real_check(
    status: str, exit_status: int, outcome: str
) -> None:
    api = FakeApi({"a": "WORKING"})
    sup = make(api)
    assert (await run_check(sup)).exit_status == OK  # remembered healthy
    remembered = list(sup.store.records())
    api.statuses["a"] = status
    dry = await run_check(sup, dry_run=True)
    assert (dry.exit_status, dry.rows[0].outcome) == (exit_status, outcome)
    assert list(sup.store.records()) == remembered  # a dry run writes nothing
    real = await run_check(sup)
    assert (real.exit_status, real.rows[0].outcome) == (dry.exit_status, dry.rows[0].outcome)
    assert [c for c in api.calls if c[0] != "list"] == []


async def test_dry_run_reports_a_configured_session_gone_without_recording_it() -> None:
    sup = make(FakeApi({"a": "WORKING"}), sessions=("a", "ghost"))
    report = await run_check(sup, dry_run=True)
    assert [(r.id, r.outcome) for r in report.rows] == [("a", "ok"), ("ghost", "gone")]
    assert report.exit_status == CRITICAL
    assert list(sup.store.records()) == []


async def test_json_has_one_object_per_session_with_the_documented_keys() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING", "b": "SCAN_QR_CODE"})))
    data = json.loads(report.to_json())
    assert data["exit_status"] == CRITICAL
    assert [set(s) for s in data["sessions"]] == [
        {"id", "name", "status", "class", "action", "outcome", "exit_status"}] * 2
    assert data["sessions"][1]["class"] == "needs_person"


async def test_table_is_the_verdict_then_one_row_per_session() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING", "b": "CONNECTED"})))
    lines = report.to_table().splitlines()
    assert lines[0] == (
        "OK: all 2 sessions healthy | sessions=2 healthy=2 recovering=0 needs_person=0"
        " gave_up=0 gone=0 restarted=0 failed=0 unknown=0 would_restart=0")
    assert lines[1].split() == ["SESSION", "NAME", "STATUS", "CLASS", "ACTION", "OUTCOME"]
    assert lines[2].split() == ["a", "name-a", "WORKING", "healthy", "none", "ok"]
    assert len(lines) == 4


async def test_verdict_names_what_is_wrong_and_how_many_of_how_many() -> None:
    statuses = {f"s{i:03}": "WORKING" for i in range(98)}
    statuses |= {"q": "SCAN_QR_CODE", "b": "STOPPED"}
    api = FakeApi(statuses)
    api.names = {"q": "marketing"}
    report = await run_check(make(api))
    verdict = report.to_table().splitlines()[0]
    assert verdict == (
        "CRITICAL: 1 of 100 sessions needs a person (marketing); 1 is recovering (name-b)"
        " | sessions=100 healthy=98 recovering=1 needs_person=1 gave_up=0 gone=0 restarted=1"
        " failed=0 unknown=0 would_restart=0")


async def test_verdict_lists_the_worst_first_and_at_most_three_names() -> None:
    api = FakeApi({"a": "WORKING", "b": "STOPPED", "c": "STOPPED", "d": "STOPPED",
                   "e": "STOPPED", "u": "WEIRD", "g": "SCAN_QR_CODE"})
    api.fail("restart", *[ApiUnreachable("reset", call="restart")] * 4)
    report = await run_check(make(api, sessions=("a", "b", "c", "d", "e", "u", "g", "ghost")))
    head, _, perfdata = report.verdict().partition(" | ")
    assert head == (
        "CRITICAL: 4 of 8 sessions failed to restart (name-b, name-c, name-d, +1 more);"
        " 1 is gone (ghost); 1 needs a person (name-g); 1 has an unknown status (name-u)")
    assert perfdata == ("sessions=8 healthy=1 recovering=0 needs_person=1 gave_up=0 gone=1"
                        " restarted=4 failed=4 unknown=1 would_restart=0")


async def test_verdict_of_a_warning_and_of_a_restart_that_took() -> None:
    api = FakeApi({"a": "WORKING", "b": "STOPPED"})
    api.after_restart = "WORKING"
    report = await run_check(make(api), wait=5)
    assert report.verdict().startswith("WARNING: 1 of 2 sessions was restarted (name-b) | ")
    assert "healthy=2" in report.verdict() and "restarted=1" in report.verdict()


async def test_verdict_when_the_api_cannot_be_asked() -> None:
    api = FakeApi({"a": "WORKING"})
    api.fail("list", ApiUnreachable("list: API unreachable (ConnectError: refused)",
                                    call="list"))
    report = await run_check(make(api))
    assert report.to_table() == (
        "UNKNOWN: API unreachable: list: API unreachable (ConnectError: refused)")


async def test_a_name_with_controls_stays_on_one_line_and_the_verdict_stays_first() -> None:
    api = FakeApi({"a": "WORKING", "x": "WORK\u2028ING"})
    api.names = {"x": "x\nOK: all fine\x1b[2J"}
    report = await run_check(make(api))
    table = report.to_table()
    lines = table.splitlines()
    assert len(lines) == 4  # verdict, header, two sessions
    assert "\x1b" not in table and "\u2028" not in table
    assert lines[0].startswith("WARNING: 1 of 2 sessions has an unknown status (x\\nOK: ")
    assert lines[3].split()[:2] == ["x", "x\\nOK:"]
    assert "\\x1b[2J" in lines[3] and "WORK\\u2028ING" in lines[3]


async def test_quiet_prints_nothing_when_all_is_well() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING"})))
    out = io.StringIO()
    report.write(out, as_json=False, quiet=True)
    assert out.getvalue() == ""
    report.write(out, as_json=True, quiet=True)
    assert out.getvalue() == ""


async def test_quiet_prints_the_verdict_and_only_the_sessions_in_trouble() -> None:
    report = await run_check(make(FakeApi({"a": "WORKING", "q": "SCAN_QR_CODE"})))
    out = io.StringIO()
    report.write(out, as_json=False, quiet=True)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("CRITICAL: 1 of 2 sessions needs a person (name-q) | ")
    assert [line.split()[0] for line in lines[1:]] == ["SESSION", "q"]


async def test_a_bar_in_a_name_or_an_error_cannot_start_the_performance_data_early() -> None:
    api = FakeApi({"q": "SCAN_QR_CODE"})
    api.names = {"q": "a | sessions=0"}
    verdict = (await run_check(make(api))).verdict()
    assert verdict.count("|") == 1 and "(a \\x7c sessions=0) | sessions=1 " in verdict
    api.fail("list", ApiUnreachable("list: <html>a|b</html>", call="list"))
    assert (await run_check(make(api))).verdict().count("|") == 0
