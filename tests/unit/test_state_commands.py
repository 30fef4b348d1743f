"""``status`` and ``history``: rows built from events, ``--since`` parsing, the tables and
JSON, and the commands run in-process on a state file in tmp_path (no API, no key)."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.api.errors import ServerError
from supervisor.cli import main
from supervisor.domain import history
from supervisor.domain.models import Action, ActionKind, Event, HistoryEntry, Phase, Record
from supervisor.domain.policy import Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.state.report import parse_since, span
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import Beat, GateRow
from tests.fakes import FakeApi, FakeClock, MaxRandom

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC).timestamp()


pytestmark = pytest.mark.usefixtures("no_state_env")


# ------------------------------------------------------------------- history rows


def test_history_rows_come_from_the_events_that_matter() -> None:
    requested = Event("restart.requested", "info",
                      {"session_id": "a", "attempt": 2, "via": "stop_then_restart",
                       "status": "ERROR"})
    failed = Event("restart.failed", "warning",
                   {"session_id": "a", "attempt": 2, "outcome": "failed", "reason": "timeout",
                    "http_status": None, "duration_ms": 15000.4, "next_attempt_in": 20.0})
    recovered_by_us = Event("session.recovered", "info", {"session_id": "a", "by": "restart"})
    recovered_alone = Event("session.recovered", "info", {"session_id": "a", "by": "itself"})
    chatter = Event("session.stable", "debug", {"session_id": "a"})
    rows = history.entries([requested, failed, recovered_by_us, recovered_alone, chatter],
                           100.0, Action(ActionKind.RESTART, "a", 2))
    assert rows == [
        HistoryEntry(100.0, "a", "restart.requested", action="stop_then_restart", attempt=2,
                     outcome="requested", status="ERROR"),
        HistoryEntry(100.0, "a", "restart.failed", action="restart", attempt=2,
                     outcome="failed", reason="timeout", duration_ms=15000,
                     next_attempt_at=120.0),
        HistoryEntry(100.0, "a", "session.recovered", action="restart", outcome="recovered",
                     reason="itself"),
    ]


# --------------------------------------------------------------------- --since


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("2h", NOW - 7200),
        ("7d", NOW - 7 * 86400),
        ("1w", NOW - 7 * 86400),
        ("1h30m", NOW - 5400),
        ("1.5h", NOW - 5400),
        ("2025-01-31T08:00:00Z", NOW - 4 * 3600),
        ("2025-01-31T08:00:00+01:00", NOW - 5 * 3600),
        ("2025-01-31 08:00", NOW - 4 * 3600),  # no zone: UTC
        ("2025-01-31", NOW - 12 * 3600),
    ],
)
def test_since_takes_iso_times_and_durations(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2x", "h2", "-2h", "2025-13-01"])
def test_since_refuses_anything_else_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--since: .* is neither an ISO time") as caught:
        parse_since(text, NOW)
    assert "\n" not in str(caught.value)


def test_spans_are_short() -> None:
    assert [span(s) for s in (0, 42, 250, 3 * 3600 + 300, 2 * 86400 + 3 * 3600, -90)] == [
        "0s", "42s", "4m10s", "3h05m", "2d03h", "1m30s"]


# ------------------------------------------------------------------- the commands


HOST, PID = socket.gethostname(), os.getpid()


def fill(path: Path, *beats: Beat) -> None:
    """Three sessions (healthy, waiting, needing a person) written ten minutes ago, the
    history, and the heartbeats given (none: the file was never polled by this version)."""
    clock = FakeClock(start=NOW - 600)
    with capture_logs():
        store = SqliteStore.open(path, clock=clock)
    store.put(Record("ok", name="Shop", phase=Phase.HEALTHY, last_status="WORKING",
                     since=NOW - 3600))
    store.put(Record("down", name="Desk", phase=Phase.UNHEALTHY, last_status="FAILED",
                     attempt=2, failures=(NOW - 700, NOW - 650), next_attempt_at=NOW + 250,
                     last_outcome="failed:relapsed"))
    store.put(Record("qr", phase=Phase.NEEDS_PERSON, last_status="SCAN_QR_CODE",
                     last_outcome="needs_person"))
    store.add_history([
        HistoryEntry(NOW - 7200, "down", "restart.requested", action="restart", attempt=1,
                     outcome="requested"),
        HistoryEntry(NOW - 700, "down", "restart.failed", action="restart", attempt=1,
                     outcome="failed", reason="relapsed", next_attempt_at=NOW - 690),
        HistoryEntry(NOW - 600, "qr", "session.needs_person", outcome="needs_person",
                     status="SCAN_QR_CODE"),
        HistoryEntry(NOW - 60, "down", "restart.failed", action="restart", attempt=2,
                     outcome="failed", reason="server_error", http_status=503,
                     duration_ms=120, next_attempt_at=NOW + 250),
    ])
    for beat in beats:
        store.beat(beat)
    store.close()


def daemon_beat(ago: float, *, ok: bool = True, interval: float = 30.0) -> Beat:
    return Beat("run", NOW - ago, listed=True, ok=ok, poll_interval=interval)


def status(path: Path, *args: str) -> int:
    return main(["status", "--state-path", str(path), *args])


def test_status_is_a_table_of_every_session_from_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "state.db"
    fill(path, daemon_beat(20))
    monkeypatch.setattr("time.time", lambda: NOW)
    assert status(path) == 2  # one needs a person
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"CRITICAL: 3 session(s) in {path}"  # the verdict first, as check's
    assert out[1].split() == ["SESSION", "NAME", "CLASS", "STATUS", "PHASE", "ATTEMPTS", "NEXT",
                              "ATTEMPT", "LAST", "OUTCOME", "UPDATED", "LAST", "SEEN"]
    rows = {line.split()[0]: line for line in out[2:-3]}
    assert set(rows) == {"ok", "down", "qr"}
    assert rows["down"].split()[:9] == [
        "down", "Desk", "restartable", "FAILED", "unhealthy", "2", "in", "4m10s",
        "(2025-01-31T12:04:10Z)"]
    assert "failed:relapsed" in rows["down"]
    assert rows["down"].endswith("2025-01-31T11:50:00Z  20s ago")  # changed, and last seen
    assert rows["qr"].split()[2:5] == ["needs_person", "SCAN_QR_CODE", "needs_person"]
    assert out[-3:] == [
        f"last poll: 2025-01-31T11:59:40Z (20s ago) by run on {HOST} (pid {PID}): ok",
        f"last successful poll: 2025-01-31T11:59:40Z (20s ago) by run on {HOST} (pid {PID})",
        f"daemon: running on {HOST} (pid {PID}), heartbeat 20s ago, polls every 30s",
    ]


def test_status_json_has_every_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "state.db"
    fill(path, daemon_beat(20))
    monkeypatch.setenv("WASEND_SUPERVISOR_STATE_PATH", str(path))
    monkeypatch.setattr("time.time", lambda: NOW)
    assert main(["status", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["state_path"] == str(path)
    down = next(s for s in report["sessions"] if s["id"] == "down")
    assert down == {
        "id": "down", "name": "Desk", "class": "restartable", "status": "FAILED",
        "phase": "unhealthy", "attempts": 2, "failures_in_window": 2,
        "next_attempt_at": "2025-01-31T12:04:10Z", "next_attempt_in": 250.0,
        "last_outcome": "failed:relapsed", "gave_up": False, "requested_at": None,
        "since": None, "updated_at": "2025-01-31T11:50:00Z",
        "last_seen": "2025-01-31T11:59:40Z", "last_seen_ago": 20.0,
        "outcome": "waiting", "exit_status": 1,
        "paused": False, "paused_by": None, "paused_at": None,
    }
    assert {k: report[k] for k in ("exit_status", "verdict", "problem", "stale_after")} == {
        "exit_status": 2, "verdict": "CRITICAL", "problem": None, "stale_after": 600.0}
    poll = {"at": "2025-01-31T11:59:40Z", "ago": 20.0, "kind": "run", "host": HOST,
            "pid": PID, "ok": True}
    assert report["last_poll"] == report["last_successful_poll"] == poll
    assert report["daemon"] == {
        "running": True, "kind": "run", "host": HOST, "pid": PID,
        "started_at": "2025-01-31T11:59:40Z", "heartbeat_at": "2025-01-31T11:59:40Z",
        "heartbeat_ago": 20.0, "last_poll_at": "2025-01-31T11:59:40Z",
        "last_ok_at": "2025-01-31T11:59:40Z", "poll_interval": 30.0, "sessions": "all",
        "stopped_at": None, "waiting_until": None,
        "last_record_write_at": "2025-01-31T11:50:00Z"}
    assert report["processes"] == [report["daemon"]]


def test_status_exits_like_check_by_the_worst_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("time.time", lambda: NOW)
    path = tmp_path / "state.db"
    with capture_logs():
        store = SqliteStore.open(path, clock=FakeClock(start=NOW - 60))
    store.put(Record("a", phase=Phase.HEALTHY, last_status="WORKING"))
    store.beat(daemon_beat(10))
    assert status(path) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"OK: 1 session(s) in {path}"
    for phase, expected in [(Phase.VERIFYING, 1), (Phase.STARTING, 1), (Phase.UNHEALTHY, 1),
                            (Phase.UNKNOWN, 1), (Phase.GAVE_UP, 2), (Phase.GONE, 2),
                            (Phase.NEEDS_PERSON, 2)]:
        store.put(Record("b", phase=phase, last_status="WHATEVER"))
        assert status(path) == expected, phase
    store.close()


@pytest.mark.parametrize(
    ("beats", "args", "expected", "problem"),
    [
        ((), (), 3, "no successful poll is recorded in this file"),
        ((daemon_beat(700),), (), 3,
         "stale: the last successful poll was 11m40s ago (stale after 10m00s)"),
        ((daemon_beat(700),), ("--stale-after", "800"), 2, None),
        # The last poll failed, and the last one that worked is too old: stale.
        ((daemon_beat(700), daemon_beat(5, ok=False)), (), 3,
         "stale: the last successful poll was 11m40s ago (stale after 10m00s)"),
        # A check from a timer five minutes ago keeps the file fresh without a daemon.
        ((Beat("check", NOW - 300, listed=True, ok=True),), (), 2, None),
    ],
)
def test_status_exits_3_when_the_file_is_stale_or_never_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    beats: tuple[Beat, ...], args: tuple[str, ...], expected: int, problem: str | None,
) -> None:
    path = tmp_path / "state.db"
    fill(path, *beats)
    monkeypatch.setattr("time.time", lambda: NOW)
    assert status(path, *args) == expected
    verdict = capsys.readouterr().out.splitlines()[0]
    assert verdict == f"{'UNKNOWN' if expected == 3 else 'CRITICAL'}: 3 session(s) in {path}" + (
        f"; {problem}" if problem else "")
    assert status(path, "--json", *args) == expected
    assert json.loads(capsys.readouterr().out)["problem"] == problem


def test_the_default_staleness_follows_a_long_poll_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    fill(path, daemon_beat(700, interval=300))
    monkeypatch.setattr("time.time", lambda: NOW)
    monkeypatch.setenv("WASEND_SUPERVISOR_POLL_INTERVAL", "300")
    assert status(path, "--json") == 2
    report = json.loads(capsys.readouterr().out)
    assert report["stale_after"] == 900.0
    assert report["daemon"]["running"] is True  # 700 s < 3 x 300 s + 30 s


def test_status_says_when_no_daemon_is_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    fill(path, daemon_beat(200), Beat("check", NOW - 5, listed=True, ok=True))
    monkeypatch.setattr("time.time", lambda: NOW)
    assert status(path) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3] == (f"last poll: 2025-01-31T11:59:55Z (5s ago) by check on {HOST}"
                         f" (pid {PID}): ok")
    assert lines[-1] == (f"daemon: none running; the last was {HOST} (pid {PID}), heartbeat"
                         " 3m20s ago, no clean stop recorded")
    fresh = tmp_path / "fresh.db"
    fill(fresh, Beat("check", NOW - 5, listed=True, ok=True))
    assert status(fresh) == 2
    assert capsys.readouterr().out.splitlines()[-1] == "daemon: none has polled with this file"


def test_last_seen_is_the_last_good_poll_of_a_process_that_supervises_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A daemon listing every session saw them all 40 s ago; a check of ``down`` alone
    saw it 5 s ago; a gone session is not seen at all."""
    path = tmp_path / "state.db"
    fill(path, daemon_beat(40), Beat("check", NOW - 5, listed=True, ok=True, scope=("down",)))
    with capture_logs():
        store = SqliteStore.open(path, clock=FakeClock(start=NOW - 900))
    store.put(Record("gone", phase=Phase.GONE, last_status="FAILED"))
    store.close()
    monkeypatch.setattr("time.time", lambda: NOW)
    status(path, "--json")
    seen = {s["id"]: s["last_seen_ago"] for s in json.loads(capsys.readouterr().out)["sessions"]}
    assert seen == {"ok": 40.0, "down": 5.0, "qr": 40.0, "gone": None}


async def test_a_poll_leaves_the_heartbeat_status_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Polls write their heartbeat (a failed one too; a dry run none), and ``status``
    tells a check's from a daemon's."""
    path = tmp_path / "state.db"
    clock = FakeClock(start=NOW - 30)
    with capture_logs():
        store = SqliteStore.open(path, clock=clock)
        api = FakeApi({"a": "WORKING"})
        check = Supervisor(api, store, Policy(), clock, MaxRandom())  # no interval: a check
        await check.poll(dry_run=True)
        assert store.heartbeats() == []
        await check.poll()
        clock.advance(10)
        api.fail("list", ServerError("list: HTTP 503", call="list", http_status=503))
        await check.poll()
    [beat] = store.heartbeats()
    assert (beat.kind, beat.seen_at, beat.last_poll_at, beat.last_ok_at) == (
        "check", NOW - 20, NOW - 20, NOW - 30)
    store.close()
    monkeypatch.setattr("time.time", lambda: NOW)
    assert status(path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3].endswith(f"by check on {HOST} (pid {PID}): failed")
    assert out[-2].startswith("last successful poll: 2025-01-31T11:59:30Z (30s ago) by check")


def test_history_filters_by_session_and_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "state.db"
    fill(path)
    monkeypatch.setattr("time.time", lambda: NOW)
    assert main(["history", "--state-path", str(path), "--session", "down", "--since", "1h",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["history"]
    assert [(r["event"], r["reason"], r["http_status"]) for r in rows] == [
        ("restart.failed", "relapsed", None), ("restart.failed", "server_error", 503)]
    assert rows[1]["time"] == "2025-01-31T11:59:00Z"
    assert rows[1]["next_attempt_at"] == "2025-01-31T12:04:10Z"
    assert main(["history", "--state-path", str(path), "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["TIME", "SESSION", "EVENT", "ACTION"]
    assert [line.split()[1] for line in lines[1:-1]] == ["qr", "down"]
    assert "503" in lines[2] and "120ms" in lines[2]


def test_history_refuses_a_bad_since(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--since", "last tuesday"]) == 2
    assert capsys.readouterr().err.startswith("wasend-supervisor: --since: 'last tuesday'")


def test_no_state_file_yet_is_said_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["status"]) == 3  # a monitoring status: nothing is known
    err = capsys.readouterr().err
    expected = tmp_path / "xdg" / "wasend-supervisor" / "state.db"
    assert err.strip() == f"wasend-supervisor: no state file at {expected} yet (run or check " \
                          "creates it)"
    assert not (tmp_path / "xdg").exists()
    assert main(["history"]) == 0  # history has nothing to show, and says so
    capsys.readouterr()


def test_status_of_a_corrupt_file_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"<html>not a database</html>" * 100)
    assert main(["status", "--state-path", str(path)]) == 3
    assert capsys.readouterr().err.startswith(f"wasend-supervisor: state error: state_path: {path}")


def test_a_corrupt_file_is_reported_in_one_line_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"<html>not a database</html>" * 100)
    assert main(["history", "--state-path", str(path)]) == 78
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"wasend-supervisor: state error: state_path: {path} ")
    assert err.endswith("(from command line --state-path)")
    assert "\n" not in err
    assert path.read_bytes().startswith(b"<html>")


def test_memory_has_no_status_to_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--state-path", ":memory:"]) == 78
    assert "no state is kept" in capsys.readouterr().err


def test_a_daemon_that_stopped_cleanly_is_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    fill(path)
    with capture_logs():
        store = SqliteStore.open(path, clock=FakeClock(start=NOW))
    store.beat(daemon_beat(20))
    store.retire("run", NOW - 10)
    store.close()
    monkeypatch.setattr("time.time", lambda: NOW)
    assert status(path) == 2  # the file is fresh: the sessions decide
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"daemon: none running; the last was {HOST} (pid {PID}), stopped at"
        " 2025-01-31T11:59:50Z")
    with capture_logs():
        store = SqliteStore.open(path, clock=FakeClock(start=NOW))
    store.beat(daemon_beat(5))  # started again on this host: running again
    store.close()
    assert status(path, "--json") == 2
    assert json.loads(capsys.readouterr().out)["daemon"]["running"] is True


def test_a_record_changed_by_a_person_is_not_a_sighting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """``retry`` (or any write that is no poll's) changes the record, not when the
    session was last seen; checks of other sessions on the same host keep their own
    heartbeat, so neither hides the other's sightings."""
    path = tmp_path / "state.db"
    fill(path, Beat("check", NOW - 300, listed=True, ok=True, scope=("down",)),
         Beat("check", NOW - 100, listed=True, ok=True, scope=("qr",)))
    with capture_logs():
        store = SqliteStore.open(path, clock=FakeClock(start=NOW - 1))
    store.put(Record("ok", phase=Phase.HEALTHY, last_status="WORKING"))  # written just now
    store.close()
    monkeypatch.setattr("time.time", lambda: NOW)
    status(path, "--json")
    report = json.loads(capsys.readouterr().out)
    seen = {s["id"]: s["last_seen_ago"] for s in report["sessions"]}
    assert seen == {"ok": None, "down": 300.0, "qr": 100.0}
    assert len(report["processes"]) == 2


def test_a_daemon_busy_restarting_is_running_by_its_record_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A poll restarting many sessions beats only when it is done: a daemon whose last
    heartbeat is old but who wrote a record a moment ago is at work, not gone."""
    path = tmp_path / "state.db"
    fill(path)
    clock = FakeClock(start=NOW - 200)
    with capture_logs():
        store = SqliteStore.open(path, clock=clock)
    store.beat(daemon_beat(200))
    clock.advance(190)
    store.put(Record("down", phase=Phase.VERIFYING, last_status="FAILED", attempt=3,
                     requested_at=NOW - 10))
    store.close()
    monkeypatch.setattr("time.time", lambda: NOW)
    status(path, "--json")
    daemon = json.loads(capsys.readouterr().out)["daemon"]
    assert daemon["running"] is True
    assert (daemon["heartbeat_ago"], daemon["last_record_write_at"]) == (
        200.0, "2025-01-31T11:59:50Z")


def test_status_says_when_a_retry_after_holds_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    fill(path, daemon_beat(20))
    with capture_logs():
        store = SqliteStore.open(path, clock=FakeClock(start=NOW))
    store.update_gate_row("0123456789abcdef", lambda row: GateRow(NOW + 90))
    store.close()
    monkeypatch.setattr("time.time", lambda: NOW)
    assert status(path) == 2
    assert capsys.readouterr().out.splitlines()[-1] == (
        "api: paused by a Retry-After until 2025-01-31T12:01:30Z (1m30s more); no process"
        " sends a request before then")
    status(path, "--json")
    report = json.loads(capsys.readouterr().out)
    assert (report["api_paused_until"], report["api_paused_for"]) == (
        "2025-01-31T12:01:30Z", 90.0)
    monkeypatch.setattr("time.time", lambda: NOW + 91)  # over: not shown
    status(path, "--json")
    assert json.loads(capsys.readouterr().out)["api_paused_until"] is None


async def test_a_daemon_waiting_out_a_retry_after_is_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A daemon's poll that waits out a long ``Retry-After`` beats only after it: the
    gate says in its heartbeat until when it waits, and ``status`` sees it at work."""
    from pydantic import SecretStr

    from supervisor.config.model import Settings
    from supervisor.runtime.wiring import build

    path = tmp_path / "state.db"
    clock = FakeClock(start=NOW - 150)
    with capture_logs():
        runtime = build(Settings(api_key=SecretStr("sk-status-test"), state_path=path,
                                 base_url="https://api.example", poll_interval=30.0),
                        clock=clock)
        runtime.store.beat(Beat("run", clock.now(), listed=True, ok=True, poll_interval=30.0))
        await runtime.gate.rate_limited(300)
        await runtime.gate.acquire()  # the fake clock jumps over the wait
    runtime.store.close()
    monkeypatch.setattr("time.time", lambda: NOW)  # 150 s into the 300 s wait
    status(path, "--json")
    daemon = json.loads(capsys.readouterr().out)["daemon"]
    assert daemon["running"] is True
    assert (daemon["heartbeat_ago"], daemon["waiting_until"]) == (150.0, "2025-01-31T12:02:30Z")
