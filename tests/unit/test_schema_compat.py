"""A state file written by the release before the record's typed facts loads unchanged:
the same records, the same ``status`` rows, the same decisions."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from structlog.testing import capture_logs

from supervisor.domain import core
from supervisor.domain.models import Phase, Record, SessionInfo
from supervisor.domain.policy import Policy, StatusClasses
from supervisor.state.report import session_status
from supervisor.state.sqlite import SqliteStore
from tests.fakes import FakeClock, MaxRandom

T0 = 1_700_000_000.0
# Rows as that release wrote them (its canonical JSON: every field it knew, sorted).
ROWS = {
    "elsewhere": '{"attempt":0,"failures":[],"gave_up":true,"last_outcome":"starting_elsewhere",'
                 '"last_status":"STARTING","name":"Shop","next_attempt_at":null,'
                 '"phase":"starting","requested_at":null,"session_id":"elsewhere",'
                 '"since":1700000000.0,"stop_first":false,"verify_deadline":null,'
                 '"warned_statuses":[]}',
    "retry": '{"attempt":4,"failures":[1699999000.0],"gave_up":true,"last_outcome":"requested",'
             '"last_status":"FAILED","name":"Desk","next_attempt_at":null,"phase":"verifying",'
             '"requested_at":1700000000.0,"session_id":"retry","since":1699999000.0,'
             '"stop_first":false,"verify_deadline":null,"warned_statuses":[]}',
    "resting": '{"attempt":3,"failures":[],"gave_up":true,"last_outcome":"gave_up",'
               '"last_status":"FAILED","name":null,"next_attempt_at":1700003600.0,'
               '"phase":"gave_up","requested_at":null,"session_id":"resting",'
               '"since":1699999000.0,"stop_first":false,"verify_deadline":null,'
               '"warned_statuses":[]}',
    "waiting": '{"attempt":2,"failures":[],"gave_up":false,"last_outcome":"failed:relapsed",'
               '"last_status":"FAILED","name":null,"next_attempt_at":1700000020.0,'
               '"phase":"unhealthy","requested_at":null,"session_id":"waiting",'
               '"since":1700000000.0,"stop_first":false,"verify_deadline":null,'
               '"warned_statuses":[]}',
}


def old_file(path: Path) -> SqliteStore:
    with capture_logs():
        SqliteStore.open(path, clock=FakeClock()).close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for session_id, data in ROWS.items():
            conn.execute("INSERT INTO records (session_id, data, version, updated_at, writer)"
                         " VALUES (?, ?, 1, ?, 'old')", (session_id, data, T0))
    with capture_logs():
        return SqliteStore.open(path, clock=FakeClock())


def test_the_records_of_an_older_file_load_with_their_facts(tmp_path: Path) -> None:
    store = old_file(tmp_path / "state.db")
    assert store.get("elsewhere") == Record(
        "elsewhere", name="Shop", phase=Phase.STARTING, last_status="STARTING", since=T0,
        gave_up=True, last_outcome="starting_elsewhere", starting_elsewhere=True)
    assert store.get("retry") == Record(
        "retry", name="Desk", phase=Phase.VERIFYING, last_status="FAILED", attempt=4,
        failures=(T0 - 1000,), requested_at=T0, since=T0 - 1000, gave_up=True,
        last_outcome="requested")
    assert store.get("resting") == Record(
        "resting", phase=Phase.GAVE_UP, last_status="FAILED", attempt=3,
        next_attempt_at=T0 + 3600, since=T0 - 1000, gave_up=True, last_outcome="gave_up")
    waiting = store.get("waiting")
    assert waiting is not None and not waiting.starting_elsewhere and not waiting.gave_up


def test_an_older_file_shows_the_same_status_rows(tmp_path: Path) -> None:
    store = old_file(tmp_path / "state.db")
    shown = {}
    for record in store.records():
        row = session_status(record, StatusClasses(), T0, T0)
        shown[record.session_id] = (row["phase"], row["last_outcome"], row["gave_up"],
                                    row["outcome"], row["exit_status"])
    assert shown == {
        "elsewhere": ("starting", "starting_elsewhere", True, "starting", 1),
        "retry": ("verifying", "requested", True, "recovering", 1),
        "resting": ("gave_up", "gave_up", True, "gave_up", 2),
        "waiting": ("unhealthy", "failed:relapsed", False, "waiting", 1),
    }


def test_a_session_an_older_release_saw_starting_elsewhere_recovers_by_elsewhere(
    tmp_path: Path,
) -> None:
    record = old_file(tmp_path / "state.db").get("elsewhere")
    step = core.decide(SessionInfo("elsewhere", "Shop", "WORKING"), record, T0 + 5, Policy(),
                       MaxRandom())
    assert [(e.name, e.fields["by"]) for e in step.events] == [("session.recovered",
                                                                 "elsewhere")]
    assert step.record is not None and not step.record.gave_up
