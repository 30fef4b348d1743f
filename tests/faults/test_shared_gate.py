"""A ``Retry-After`` is honoured by every process on the key that shares the state file:
a second ``check``, a ``check`` that may wait for it, and a daemon started again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.runtime.wiring import build
from tests.e2e.conftest import Running, SimFactory, cli
from tests.fakes import MaxRandom
from tests.faults.conftest import settings_at
from tests.faults.test_shared_state import env_for
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_a_second_check_sends_nothing_while_the_first_ones_retry_after_holds(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: the first ``check`` gets a 429 with ``Retry-After: 30`` and exits 3;
    a second ``check`` on the same state file right after sends no request at all
    (the simulator counts no early one) and exits 3, saying how long the pause lasts."""
    server = simulator({"sessions": [{"id": "a"}], "session_count": 0,
                        "rate_limit": {"burst": 1, "retry_after": 30}})
    state = tmp_path / "state.db"
    first = cli("check", "--json", env=env_for(server, state))
    assert first.returncode == 3, first.stderr
    assert "rate limited" in json.loads(first.stdout)["error"]
    second = cli("check", env=env_for(server, state))  # a moment later: a process start
    assert second.returncode == 3, second.stderr
    verdict = second.stdout.strip().splitlines()[0]
    said = re.match(r"UNKNOWN: API rate limited: the API key is paused by a Retry-After for"
                    r" (\d+) s more \(until \S+\); nothing was sent$", verdict)
    assert said is not None, verdict
    assert 20 <= int(said[1]) <= 30
    stats = server.simulator.stats()
    assert stats["early"] == 0
    assert len(server.simulator.requests()) == 1  # the first check's list, and nothing else


def test_a_check_whose_wait_covers_the_pause_waits_it_out_then_checks(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: with ``--wait`` longer than the pause left, the second ``check``
    waits it out, then lists (not a moment early) and reports the session healthy."""
    server = simulator({"sessions": [{"id": "a"}], "session_count": 0,
                        "rate_limit": {"burst": 1, "retry_after": 2}})
    state = tmp_path / "state.db"
    assert cli("check", env=env_for(server, state)).returncode == 3
    second = cli("check", "--wait", "10", env=env_for(server, state))
    assert second.returncode == 0, second.stdout + second.stderr
    [limited, listed] = server.simulator.requests()
    assert limited.status == 429 and listed.status == 200
    assert listed.monotonic - limited.monotonic >= 2.0 - 0.05
    assert server.simulator.stats()["early"] == 0


async def test_a_daemon_started_again_honours_its_predecessors_pause(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: a daemon that got a 429 with ``Retry-After: 3`` is stopped and a new
    one started on the same state file at once: the new one's first request leaves no
    earlier than the pause allows (``api.pause_adopted``), and it goes on supervising."""
    server = simulator({"sessions": [{"id": "a"}], "session_count": 0})
    state = tmp_path / "state.db"
    settings = settings_at(server.base_url, state_path=state, max_retry_after=10.0)
    with capture_logs() as events:
        running = Running(build(settings, rng=MaxRandom()))
        await until(lambda: running.daemon.polls >= 1)
        server.simulator.update_faults(rate_limit={"burst": 1, "retry_after": 3})
        await until(lambda: any(e["event"] == "api.rate_limited" for e in events))
        assert await running.stop() == 0
        stopped_at = len(server.simulator.requests())
        again = Running(build(settings, rng=MaxRandom()))
        await until(lambda: again.daemon.polls >= 2, timeout=15)
        assert await again.stop() == 0
    log = server.simulator.requests()
    limited = next(r for r in log if r.status == 429)
    after = log[stopped_at:]
    assert after and all(r.monotonic >= limited.monotonic + 3.0 - 0.05 for r in after)
    assert server.simulator.stats()["early"] == 0
    assert any(e["event"] == "api.pause_adopted" for e in events)


async def test_two_daemons_on_one_file_keep_to_one_budget_between_them(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: two daemons on one state file and key, each polling every 0.1 s
    with ``rate_limit = 4``, send no more than 4 requests a second between them (each
    alone would send 4: 8 together without a shared budget)."""
    server = simulator({"sessions": [{"id": "a"}], "session_count": 0})
    state = tmp_path / "state.db"
    settings = settings_at(server.base_url, state_path=state, rate_limit=4.0)
    with capture_logs():
        daemons = [Running(build(settings, rng=MaxRandom())) for _ in range(2)]
        await until(lambda: all(d.daemon.polls >= 2 for d in daemons))
        start = server.simulator.stats()["last_seq"]
        await until(lambda: len(server.simulator.requests(after=start)) >= 17, timeout=10)
        for running in daemons:
            assert await running.stop() == 0
    log = server.simulator.requests(after=start)
    span = log[16].monotonic - log[0].monotonic  # 17 requests: at 4 a second, 4 s at least
    assert span >= 4.0 - 0.2, span
