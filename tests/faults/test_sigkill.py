"""``run`` killed with SIGKILL at random points, again and again, on one state file."""

from __future__ import annotations

import itertools
import json
import random
import signal
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import pytest

from supervisor.domain.models import Phase
from supervisor.simulator import RequestRecord
from supervisor.state.sqlite import SqliteStore
from tests.e2e.conftest import SimFactory, cli
from tests.faults.conftest import start_run
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

KILLS = 6
START_DELAY = 0.3
# Short timeouts and backoffs, so that six kills fit in a test; restarts never given up.
SIGKILL_SETTINGS = {
    "REQUEST_TIMEOUT": "1", "MAX_RETRY_AFTER": "1", "BACKOFF__INITIAL": "0.2",
    "BACKOFF__MAX": "1", "STABLE_AFTER": "2", "MAX_RESTARTS": "100",
}


def all_healthy(statuses: dict[str, str], state: Path) -> bool:
    """Every session up, and the supervisor has seen it so (from its state file)."""
    if set(statuses.values()) != {"WORKING"}:
        return False
    store = SqliteStore.open_readonly(state)
    try:
        records = list(store.records())
    finally:
        store.close()
    return len(records) == len(statuses) and all(r.phase is Phase.HEALTHY for r in records)


def by_session(records: list[RequestRecord]) -> dict[str, list[RequestRecord]]:
    found: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        found[r.session or ""].append(r)
    return found


def test_sigkill_at_random_points_never_restarts_twice_or_loses_history(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: a ``run`` daemon SIGKILLed six times at random moments (sessions
    failing at random, restarts slowed so that kills land mid-request) and started again
    on the same state file each time:

    - sends no restart for a session already restarting (the simulator answers none 409),
      none within ``start_delay`` of the previous one for that session, none before the
      previous attempt was judged (a verdict row lies between any two), and none before
      the backoff that the history says was set;
    - has a ``restart.requested`` history row, written before the request, for every
      restart request the simulator received (none lost); a row with no request is one
      recorded just before a kill (the cycle records its restarts, then sends them); no
      row twice;
    - leaves a state file that passes an integrity check, and recovers every session once
      the failures stop (the last run then stops cleanly on SIGTERM).
    """
    server = simulator({
        "session_count": 12, "start_delay": START_DELAY, "seed": 7,
        "random_failures": {"rate": 0.25},
        "latency": {"seconds": 0.05, "jitter": 0.25, "kinds": ["restart"]},
        # Two sessions fail after every restart: their backoff is what a kill must not reset.
        "sessions": [{"id": f"flap-{n}", "status": "FAILED", "outcome": "FAILED"}
                     for n in (1, 2)],
    })
    sim = server.simulator
    state = tmp_path / "state.db"
    chance = random.Random(20240611)
    kills: list[float] = []
    for i in range(KILLS):
        proc = start_run(server, state, tmp_path / f"run-{i}.log", **SIGKILL_SETTINGS)
        # The fault itself: a kill at a random moment (not a wait standing in for a
        # condition). Start-up takes about half a second; some kills land before the
        # first poll, most in the middle of polls and restarts.
        time.sleep(chance.uniform(0.5, 1.5))
        kills.append(time.time())
        proc.kill()
        assert proc.wait(timeout=10) == -signal.SIGKILL
    sim.update_faults(random_failures={"rate": 0.0})
    for n in (1, 2):
        sim.set_outcome(f"flap-{n}", "WORKING")
    last = start_run(server, state, tmp_path / "run-last.log", **SIGKILL_SETTINGS)
    try:
        wait_for(lambda: all_healthy(sim.statuses(), state), 20, describe=sim.statuses)
        last.send_signal(signal.SIGTERM)
        assert last.wait(timeout=10) == 0
    finally:
        if last.poll() is None:
            last.kill()

    restarts = [r for r in sim.requests() if r.kind == "restart"]
    assert len(restarts) >= KILLS, "the scenario should have made restarts to interrupt"
    assert [r for r in restarts if r.status == 409] == []
    for session, theirs in by_session(restarts).items():
        gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(theirs)]
        assert all(g >= START_DELAY - 0.02 for g in gaps), (session, gaps)

    conn = sqlite3.connect(state)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    duplicated = conn.execute(
        "SELECT session_id, event, attempt, at, count(*) FROM history"
        " GROUP BY session_id, event, attempt, at HAVING count(*) > 1").fetchall()
    assert duplicated == []
    rows = conn.execute(
        "SELECT session_id, event, at, next_attempt_at FROM history ORDER BY id").fetchall()
    requested: dict[str, list[float]] = defaultdict(list)
    for session, at in conn.execute(
            "SELECT session_id, at FROM history WHERE event = 'restart.requested' ORDER BY id"):
        requested[session].append(at)
    accepted = dict(conn.execute(
        "SELECT session_id, count(*) FROM history WHERE event = 'restart.accepted'"
        " GROUP BY session_id").fetchall())
    conn.close()
    sent = by_session(restarts)
    verdicts = {"restart.failed", "restart.succeeded", "restart.conflict", "restart.deferred",
                "session.recovered", "session.gone", "session.needs_person"}
    for session, theirs in sent.items():
        mine = [row for row in rows if row[0] == session]
        for first, second in itertools.pairwise(theirs):
            assert any(event in verdicts and first.wall <= at <= second.wall + 0.01
                       for _, event, at, _ in mine), (session, first.wall, second.wall)
        previous = None
        for row in mine:
            if row[1] == "restart.requested" and previous is not None and previous[3]:
                assert row[2] >= previous[3] - 0.001, ("inside its backoff", session, row)
            previous = row
    assert any(row[1] == "restart.failed" and row[0].startswith("flap") for row in rows)
    unsent: list[float] = []
    for session, rows in requested.items():
        unmatched = list(rows)
        for request in sent.get(session, []):  # each request has its own earlier row
            before = [at for at in unmatched if at <= request.wall + 0.01]
            assert before, f"no history row for the restart of {session} at {request.wall}"
            assert request.wall - before[-1] < 3.0
            unsent += before[:-1]
            unmatched = [at for at in unmatched if at > before[-1]]
        unsent += unmatched
        assert accepted.get(session, 0) <= sum(r.status == 200 for r in sent.get(session, []))
    assert set(sent) <= set(requested)
    for at in unsent:  # recorded, then the process died before sending it
        assert any(0.0 <= kill - at <= 2.5 for kill in kills), (at, kills)

    for log in tmp_path.glob("run-*.log"):
        text = log.read_text()
        assert "Traceback" not in text and "poll.crashed" not in text, log.name
        for line in text.splitlines():
            json.loads(line)  # every line is one JSON event: nothing torn or stray
    status = cli("status", "--json", env={"WASEND_SUPERVISOR_STATE_PATH": str(state)})
    sessions = json.loads(status.stdout)["sessions"]
    assert {s["phase"] for s in sessions} == {"healthy"}
