"""The API refuses connections, or hangs: the daemon rides it out."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from structlog.testing import capture_logs

from supervisor.runtime.cycle import PollResult
from supervisor.runtime.wiring import build
from tests.e2e.conftest import API_KEY, Running, SimFactory
from tests.fakes import MaxRandom
from tests.faults.conftest import settings_at
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


async def test_refused_connections_back_off_then_supervision_resumes(
    simulator: SimFactory,
) -> None:
    """Expectation: while the API refuses connections the daemon does not crash, logs
    exactly one ``poll.failed`` per failed cycle, polls less and less often (1, 2, then
    4 intervals apart), and once the API is back it restarts the session that failed
    meanwhile, at once."""
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    runtime = build(settings_at(server.base_url, poll_interval=0.1), rng=MaxRandom())
    polls: list[tuple[float, PollResult]] = []
    with capture_logs() as events:
        running = Running(runtime)
        running.daemon.listeners.append(lambda r: polls.append((time.monotonic(), r)))
        await until(lambda: running.daemon.polls >= 2)
        server.simulator.start_outage(2.0, "refuse")
        server.simulator.set_status("b", "FAILED")
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events), timeout=15)
        assert await running.stop() == 0
    failed = [(t, r) for t, r in polls if r.error is not None]
    logged = [e for e in events if e["event"] == "poll.failed"]
    assert len(logged) == len(failed) >= 4
    assert {e["error"] for e in logged} == {"unreachable"}
    assert [e["consecutive_failures"] for e in logged] == list(range(1, len(logged) + 1))
    assert any(r.skipped for _, r in polls), "polling should have backed off"
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(failed)]
    assert gaps[0] < 0.35 and max(gaps) > 0.35  # one interval first, then four
    assert all(g < 0.4 + 0.5 for g in gaps)  # never more than four intervals (and slack)
    assert not any(e["event"] == "poll.crashed" for e in events)
    assert server.simulator.status("b") == "WORKING"
    assert API_KEY not in repr(events)


async def test_a_hanging_api_times_out_every_call_and_the_loop_stays_responsive(
    simulator: SimFactory,
) -> None:
    """Expectation: with every list request held unanswered, each poll ends with
    ``poll.failed`` (``error=timeout``) at ``request_timeout``, never later; the event
    loop keeps running other work meanwhile (a 20 ms ticker never stalls for 0.4 s); and
    a stop request is honoured within one request timeout."""
    server = simulator({"session_count": 2,
                        "hang": {"always": True, "seconds": 30, "kinds": ["list"]}})
    runtime = build(settings_at(server.base_url, request_timeout=0.5, poll_interval=0.1),
                    rng=MaxRandom())
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.02)

    ticking = asyncio.create_task(ticker())
    with capture_logs() as events:
        running = Running(runtime)
        await until(lambda: sum(e["event"] == "poll.failed" for e in events) >= 3, timeout=15)
        asked_to_stop = loop.time()
        assert await running.stop() == 0
        stopped_after = loop.time() - asked_to_stop
    ticking.cancel()
    failed = [e for e in events if e["event"] == "poll.failed"]
    assert {e["error"] for e in failed} == {"timeout"}
    assert all(450 <= e["duration_ms"] <= 1500 for e in failed), [
        e["duration_ms"] for e in failed]
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.4
    assert stopped_after < 0.5 + 1.0
    assert [r.status for r in server.simulator.requests() if r.kind == "list"] != []
    assert not any(e["event"] == "poll.crashed" for e in events)
