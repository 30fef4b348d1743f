"""``retry ID``: a given-up session is retried at the next poll as a first attempt. The
rule (``core.retry_now``) and the command, on a state file in tmp_path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.cli import main
from supervisor.domain import core
from supervisor.domain.models import ActionKind, Phase, Record, SessionInfo
from supervisor.domain.policy import Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.state.sqlite import SqliteStore
from tests.fakes import FakeApi, FakeClock, MaxRandom

NOW = 1_700_000_000.0
GAVE_UP = Record("a", name="Shop", phase=Phase.GAVE_UP, last_status="FAILED", attempt=5,
                 failures=(NOW - 500, NOW - 400, NOW - 300, NOW - 200, NOW - 100),
                 next_attempt_at=NOW + 3500, since=NOW - 100, stop_first=True, gave_up=True,
                 last_outcome="gave_up")


@pytest.fixture(autouse=True)
def _clean_env(no_state_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASEND_SUPERVISOR_LOG_FORMAT", "json")


# ------------------------------------------------------------------------ the rule


def test_a_retried_session_is_due_at_once_with_its_attempts_forgotten() -> None:
    step = core.retry_now(GAVE_UP, NOW)
    assert step.action is None
    assert step.record == Record(
        "a", name="Shop", phase=Phase.UNHEALTHY, last_status="FAILED", attempt=0, failures=(),
        next_attempt_at=None, since=NOW, stop_first=True, gave_up=False,
        last_outcome="retry_requested")
    [event] = step.events
    assert (event.name, event.level) == ("session.retry_requested", "info")
    assert event.fields == {"session_id": "a", "session_name": "Shop", "status": "FAILED",
                            "attempt": 5, "failures": 5}


def test_the_next_poll_restarts_it_as_a_first_attempt() -> None:
    policy = Policy()
    retried = core.retry_now(GAVE_UP, NOW).record
    assert retried is not None
    step = core.decide(SessionInfo("a", "Shop", "FAILED"), retried, NOW + 1, policy, MaxRandom())
    assert step.action is not None and step.action.attempt == 1
    assert step.action.kind is ActionKind.STOP  # it needed a stop first, and still does
    # Found healthy instead: recovered, no restart.
    healthy = core.decide(SessionInfo("a", "Shop", "WORKING"), retried, NOW + 1, policy,
                          MaxRandom())
    assert healthy.action is None and healthy.record is not None
    assert healthy.record.phase is Phase.HEALTHY
    assert [e.name for e in healthy.events] == ["session.recovered"]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (Record("a", phase=Phase.UNHEALTHY), "session a is not given up (phase: unhealthy)"),
        (Record("a", phase=Phase.HEALTHY), "session a is not given up (phase: healthy)"),
        (Record("a", phase=Phase.VERIFYING, gave_up=True, attempt=6),
         "session a has a retry in flight; wait for its outcome"),
    ],
)
def test_only_a_given_up_session_can_be_retried(record: Record, problem: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(problem)}$"):
        core.retry_now(record, NOW)


# --------------------------------------------------------------------- the command


def given_up_file(path: Path) -> None:
    with capture_logs():
        store = SqliteStore.open(path, clock=FakeClock(start=NOW))
    store.put(GAVE_UP)
    store.put(Record("b", phase=Phase.HEALTHY, last_status="WORKING"))
    store.close()


async def test_retry_clears_the_give_up_and_the_next_poll_restarts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    given_up_file(path)
    assert main(["retry", "a", "--state-path", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "session a: given up no more; the next poll restarts it as a first" \
                          " attempt"
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events if e["event"].startswith("session.")] == [
        "session.retry_requested"]
    store = SqliteStore.open_readonly(path)
    record = store.get("a")
    assert record is not None and (record.phase, record.attempt, record.gave_up) == (
        Phase.UNHEALTHY, 0, False)
    [row] = store.read_history()
    assert (row.session_id, row.event, row.outcome, row.attempt) == (
        "a", "session.retry_requested", "retry_requested", 5)
    store.close()

    # A daemon's (or a check's) next poll: a first attempt, long before gave_up_retry_interval.
    clock = FakeClock(start=NOW + 10)
    with capture_logs() as logged:
        store = SqliteStore.open(path, clock=clock)
        api = FakeApi({"a": "FAILED", "b": "WORKING"})
        await Supervisor(api, store, Policy(), clock, MaxRandom()).poll()
    requested = [e for e in logged if e["event"] == "restart.requested"]
    assert [(e["session_id"], e["attempt"]) for e in requested] == [("a", 1)]
    assert ("stop", "a") in api.calls


@pytest.mark.parametrize(
    ("session", "message"),
    [
        ("nope", "wasend-supervisor: no session 'nope' in {path}"),
        ("b", "wasend-supervisor: session b is not given up (phase: healthy); nothing changed"),
    ],
)
def test_retry_of_an_unknown_or_healthy_session_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], session: str, message: str,
) -> None:
    path = tmp_path / "state.db"
    given_up_file(path)
    before = path.read_bytes()
    assert main(["retry", session, "--state-path", str(path)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == message.format(path=path)
    store = SqliteStore.open_readonly(path)
    assert store.get("a") == GAVE_UP and store.read_history() == []
    store.close()
    assert len(path.read_bytes()) == len(before)


def test_retry_without_a_state_file_creates_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "state.db"
    assert main(["retry", "a", "--state-path", str(path)]) == 1
    assert capsys.readouterr().err.strip() == (f"wasend-supervisor: no state file at {path} yet;"
                                               " nothing to retry")
    assert not path.exists()
    assert main(["retry", "a", "--state-path", ":memory:"]) == 78
