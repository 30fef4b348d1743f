"""The failover benchmark's harness (bench/failover.py) on a tiny scenario, so that it does
not rot: three real replicas on a real PostgreSQL server, against the simulator over real
HTTP. As the other harness tests, it asserts the shape of the result and what holds
whatever the machine's speed (one replica polling, one request per cycle, never a request
from a resigned leader after its successor's first), never timings."""

from __future__ import annotations

import json
import os

import pytest

from bench import failover
from bench.report import table
from supervisor.simulator import RequestRecord

pytestmark = pytest.mark.e2e

KEYS = {"failover.requests_per_cycle", "failover.replicas_polling", "failover.sigkill",
        "failover.sigkill_ratio", "failover.sigterm", "failover.sigterm_overlap"}


def record(seq: int, at: float, agent: str, kind: str = "list") -> RequestRecord:
    return RequestRecord(seq=seq, wall=at, monotonic=at, method="GET", path="/api/sessions",
                         kind=kind, session=None, status=200, early=False, fault=None,
                         duration=0.001, agent=agent)


def test_the_replica_is_read_from_the_user_agent() -> None:
    assert failover.replica_of(record(1, 0, "wasend-supervisor/1.2.0 (replica b)")) == "b"
    assert failover.replica_of(record(1, 0, "wasend-supervisor/1.2.0 (replica web-1)")) == "web-1"
    assert failover.replica_of(record(1, 0, "wasend-supervisor/1.2.0")) is None
    assert failover.replica_of(record(1, 0, "")) is None


def test_the_window_counts_polls_on_schedule_whatever_their_jitter() -> None:
    # The leader polls every second with up to 0.3 s of jitter; a standby sends one list.
    leader = [record(i, 10.0 + i + (0.3 if i % 2 else 0.0), "x (replica a)") for i in range(12)]
    per_cycle, senders = failover.cycle_window(leader, 10.0, 1.0, 10)
    assert (per_cycle, senders) == (1.0, {"a"})
    stray = [*leader, record(99, 14.2, "x (replica c)")]
    per_cycle, senders = failover.cycle_window(stray, 10.0, 1.0, 10)
    assert (per_cycle, senders) == (1.1, {"a", "c"})


def test_failover_three_replicas_one_polls_and_a_standby_takes_over() -> None:
    """Needs Debian's PostgreSQL (.ci/run installs it); under CI a missing one fails."""
    from tests.pg import missing

    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed under CI: {why}")
        pytest.skip(why)
    size = failover.Size(runs=1, sessions=20, poll_interval=0.5, poll_jitter=0.0, lease=2.0,
                         renew=0.5, cycles=4, warmup=1, timeout=30.0)
    result = failover.run(size)
    assert result.error is None, result.notes
    assert {f.key for f in result.figures} == KEYS
    for figure in result.figures:
        assert len(figure.ours) == 1, figure.key
    doc = json.loads(json.dumps(result.to_dict()))
    assert [f["key"] for f in doc["figures"]] == [f.key for f in result.figures]
    assert "failover" in table([result])
    # What holds whatever the machine's speed.
    assert list(result.figure("failover.replicas_polling").ours) == [1]
    assert list(result.figure("failover.requests_per_cycle").ours) == [1.0]
    assert list(result.figure("failover.sigterm_overlap").ours) == [0]
    [killed] = result.figure("failover.sigkill").ours
    [resigned] = result.figure("failover.sigterm").ours
    assert killed > 0 and resigned > 0
    assert result.figure("failover.sigkill_ratio").ours[0] == pytest.approx(killed / 2.5)
    # Three leaders in turn, each a different replica from the one before.
    leaders = result.notes[1].split("SIGTERM): ")[1].split(".")[0].split(" -> ")
    assert len(leaders) == 3 and leaders[0] != leaders[1] != leaders[2]
    assert set(leaders) <= {"a", "b", "c"}
    assert "SIGTERM exit statuses: 0." in result.notes[1]
