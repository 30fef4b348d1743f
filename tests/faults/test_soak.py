"""A short soak: a few hundred cycles at a short interval over hundreds of sessions that
fail at random. The long version is ``python -m bench.soak``."""

from __future__ import annotations

import asyncio
import os
import random
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.typing import EventDict, WrappedLogger

from supervisor.domain.models import Phase
from supervisor.runtime.wiring import build
from tests.e2e.conftest import SimFactory
from tests.faults.conftest import settings_at
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

SESSIONS = 200
CYCLES = 200
WARMUP = 80  # cycles before memory is traced (tracing slows everything down)
MEMORY_BOUND = 1024 * 1024  # bytes of Python memory the traced cycles may add
PACE = 0.005


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def event_counts() -> Iterator[Counter[str]]:
    """Count events by name instead of keeping them (keeping them would grow memory)."""
    counts: Counter[str] = Counter()

    def count(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        counts[str(event_dict["event"])] += 1
        raise structlog.DropEvent

    structlog.configure(processors=[count])
    yield counts
    structlog.reset_defaults()


async def test_a_short_soak_recovers_every_failure_and_leaks_nothing(
    simulator: SimFactory, tmp_path: Path, event_counts: Counter[str],
) -> None:
    """Expectation: over 200 cycles at a 5 ms pace on 200 sessions that fail at random
    (and 5 % of restart requests answered 500), on a state file: every failure is
    recovered (at the end every session is up and its record healthy, none given up,
    nothing crashed); Python memory grows by less than 1 MiB over the last 120 cycles;
    the history stays within ``history_max_rows`` (and a tenth); and as many asyncio tasks
    and file descriptors are open after as before."""
    server = simulator({"session_count": SESSIONS, "start_delay": 0.05, "seed": 11,
                        "list_shape": "flat", "random_failures": {"rate": 0.02},
                        "server_errors": {"rate": 0.05, "kinds": ["restart"]}})
    sim = server.simulator
    await asyncio.sleep(0)
    fds_before = open_fds()
    tasks_before = len(asyncio.all_tasks())
    runtime = build(settings_at(server.base_url, state_path=tmp_path / "state.db",
                                max_restarts=1000, history_max_rows=500, rate_limit=1000.0,
                                starting_timeout=2.0),
                    rng=random.Random(3))
    sup = runtime.supervisor
    try:
        for cycle in range(CYCLES):
            if cycle == WARMUP:
                tracemalloc.start()
            if cycle % 5 == 0:  # failures that do not depend on how fast the cycles run
                sim.set_status(f"sess-{(cycle * 7) % SESSIONS + 1:04d}", "FAILED")
            assert (await sup.poll()).ok
            await asyncio.sleep(PACE)
        grown = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        failed_during = sim.stats()["by_kind"].get("restart", 0)
        sim.update_faults(random_failures={"rate": 0.0}, server_errors={"rate": 0.0})

        def all_recovered() -> bool:
            records = list(sup.store.records())
            return (set(sim.statuses().values()) == {"WORKING"} and len(records) == SESSIONS
                    and all(r.phase is Phase.HEALTHY for r in records))

        for _ in range(500):
            if all_recovered():
                break
            await sup.poll()
            await asyncio.sleep(0.02)
        assert all_recovered()
        history_rows = runtime.store.history_count()  # type: ignore[attr-defined]
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await runtime.aclose()
    assert failed_during >= 20, "the soak should have had failures to recover from"
    assert event_counts["restart.succeeded"] >= failed_during * 0.5
    assert event_counts["session.gave_up"] == 0 and event_counts["poll.crashed"] == 0
    assert grown < MEMORY_BOUND, f"memory grew by {grown} bytes"
    assert history_rows <= 500 + 100
    await until(lambda: open_fds() <= fds_before, timeout=5)
    assert len(asyncio.all_tasks()) == tasks_before
