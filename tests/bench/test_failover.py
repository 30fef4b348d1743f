"""The failover benchmark's harness (bench/failover.py) on a tiny scenario, so that it does
not rot: three real replicas on a real PostgreSQL server, against the simulator over real
HTTP. As the other harness tests, it asserts the shape of the result and what holds
whatever the machine's speed (one replica polling, one request per cycle, never a request
from a resigned leader after its successor's first), never timings."""

from __future__ import annotations

import json
import os
import re

import pytest

from bench import failover
from bench.report import table
from supervisor.simulator import RequestRecord

pytestmark = pytest.mark.e2e

KEYS = {"failover.requests_per_cycle", "failover.replicas_polling", "failover.sigkill",
        "failover.sigkill_ratio", "failover.sigterm", "failover.elected_to_request",
        "failover.sigterm_overlap"}


def record(seq: int, at: float, agent: str, kind: str = "list") -> RequestRecord:
    return RequestRecord(seq=seq, wall=at, monotonic=at, method="GET", path="/api/sessions",
                         kind=kind, session=None, status=200, early=False, fault=None,
                         duration=0.001, agent=agent)


def test_the_replica_is_read_from_the_user_agent() -> None:
    assert failover.replica_of(record(1, 0, "wasend-supervisor/1.2.0 (replica b)")) == "b"
    assert failover.replica_of(record(1, 0, "wasend-supervisor/1.2.0 (replica web-1)")) == "web-1"
    assert failover.replica_of(record(1, 0, "wasend-supervisor/1.2.0")) is None
    assert failover.replica_of(record(1, 0, "")) is None


def test_the_cycles_are_the_leaders_and_every_replicas_requests_count() -> None:
    # The leader polls about every second, late by up to 0.3 s (its jitter adds up).
    leader = [record(i, 10.0 + 1.05 * i + (0.3 if i % 2 else 0.0), "x (replica a)")
              for i in range(14)]
    assert failover.cycle_counts(leader, "a", 2, 10) == (1.0, {"a"})
    # A standby's list in those cycles counts, and so does a request naming no replica.
    stray = [*leader, record(98, 14.2, "x (replica c)"), record(99, 15.0, "curl/8")]
    assert failover.cycle_counts(stray, "a", 2, 10) == (1.2, {"a", "c", "(none)"})
    # Not its lists, nor anything outside the cycles.
    assert failover.cycle_counts(stray, "a", 6, 5) == (1.0, {"a"})


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
    for figure in result.figures:  # one run; two takeovers
        assert len(figure.ours) == (2 if figure.over == "takeover" else 1), figure.key
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
    # Three leaders in turn, each a different replica from the one before, each with a
    # higher epoch; the resigned one exited cleanly.
    found = re.search(r"SIGTERM\): (\S+) -> (\S+) -> (\S+)\. Their epochs: (\d+) -> (\d+) "
                      r"-> (\d+)\. SIGTERM exit statuses: 0\.$", result.notes[1])
    assert found is not None, result.notes[1]
    first, second, third = found.group(1, 2, 3)
    assert first != second != third and {first, second, third} <= {"a", "b", "c"}
    epochs = [int(e) for e in found.group(4, 5, 6)]
    assert epochs[0] < epochs[1] < epochs[2]
