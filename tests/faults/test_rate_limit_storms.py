"""429 storms with every kind of ``Retry-After``: none sent early, none waited out longer
than ``max_retry_after``, and supervision resumes after the storm."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.runtime.wiring import build
from tests.e2e.conftest import Running, SimFactory
from tests.fakes import MaxRandom
from tests.faults.conftest import settings_at
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

MAX_RETRY_AFTER = 1.0
BURST = 2
SLACK = 0.5  # scheduling on a loaded machine, on top of the pause itself

# name: (the simulator's rate_limit section, the least wait after each 429)
STORMS: dict[str, tuple[dict[str, Any], float]] = {
    "zero_seconds": ({"retry_after": 0, "retry_after_form": "seconds"}, 0.0),
    "one_second": ({"retry_after": 1, "retry_after_form": "seconds"}, 1.0),
    # The next whole second (a date cannot say less): up to 1 s ahead.
    "http_date_ahead": ({"retry_after": 0, "retry_after_form": "http-date"}, 0.0),
    "a_year": ({"retry_after_form": "raw", "retry_after_raw": "31536000"}, MAX_RETRY_AFTER),
    "http_date_past": ({"retry_after_form": "raw",
                        "retry_after_raw": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    "negative": ({"retry_after_form": "raw", "retry_after_raw": "-5"}, MAX_RETRY_AFTER),
    "garbage": ({"retry_after_form": "raw", "retry_after_raw": "soon, maybe"}, MAX_RETRY_AFTER),
    "absent": ({"retry_after_form": "absent"}, MAX_RETRY_AFTER),
}


@pytest.mark.parametrize("storm", sorted(STORMS))
async def test_a_429_storm_is_waited_out_exactly_as_long_as_allowed(
    simulator: SimFactory, storm: str,
) -> None:
    """Expectation: after each of a burst of 429s, the next request leaves no earlier
    than the server's ``Retry-After`` allows (the simulator logs no early request) and no
    later than ``max_retry_after`` (a year is capped, said once per 429 with
    ``api.retry_after_capped``; negative, garbage and absent values fall back to our own
    backoff, itself capped); then the session that failed during the storm is restarted."""
    section, least = STORMS[storm]
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    runtime = build(settings_at(server.base_url, max_retry_after=MAX_RETRY_AFTER),
                    rng=MaxRandom())
    with capture_logs() as events:
        running = Running(runtime)
        await until(lambda: running.daemon.polls >= 2)
        sim = server.simulator
        start = sim.stats()["last_seq"]
        sim.update_faults(rate_limit={**section, "burst": BURST})
        sim.set_status("b", "STOPPED")
        await until(lambda: sim.status("b") == "WORKING"
                    and any(e["event"] == "restart.succeeded" for e in events), timeout=20)
        assert await running.stop() == 0
    log = sim.requests(after=start)
    assert sim.stats()["early"] == 0 and not any(r.early for r in log)
    assert sum(r.status == 429 for r in log) == BURST
    for before, after in itertools.pairwise(log):
        if before.status == 429:
            waited = after.monotonic - before.monotonic
            assert waited >= least - 0.05, (storm, waited)
            assert waited <= MAX_RETRY_AFTER + SLACK, (storm, waited)
    limited = [e for e in events if e["event"] == "api.rate_limited"]
    assert len(limited) == BURST
    assert all(e["paused_for"] <= MAX_RETRY_AFTER for e in limited)
    capped = [e for e in events if e["event"] == "api.retry_after_capped"]
    assert len(capped) == (BURST if storm == "a_year" else 0)
    sources = {e["pause_source"] for e in limited}
    if storm in ("negative", "garbage", "absent"):
        assert sources == {"fallback"}
    assert sum(r.kind == "restart" and r.session == "b" for r in log) == 1
