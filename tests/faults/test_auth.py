"""The API key is refused (revoked), then fixed in its secret file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.config.load import load_settings
from supervisor.runtime.wiring import build
from tests.e2e.conftest import API_KEY, Running, SimFactory
from tests.fakes import MaxRandom
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

REVOKED = "sk-REVOKED-RECOGNISABLE-KEY-0dd"
AUTH_RETRY = 0.5
POLL = 0.1


async def test_a_refused_key_stops_the_hammering_and_a_fixed_file_resumes_supervision(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: with a revoked key in the secret file, the daemon logs one critical
    ``api.auth_failed`` and then asks at most once per ``auth_retry_interval`` (not once
    per poll), re-reading the file each time; once the file holds a good key it logs
    ``api.auth_restored`` by itself and restarts the session that failed meanwhile.
    Neither key appears in the log."""
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    key_file = tmp_path / "api.key"
    key_file.write_text(REVOKED + "\n")
    settings = load_settings(
        env={"WASEND_BASE_URL": server.base_url, "WASEND_SUPERVISOR_API_KEY_FILE": str(key_file),
             "WASEND_SUPERVISOR_STATE_PATH": ":memory:"},
        cli={"poll_interval": POLL, "poll_jitter": 0.0, "auth_retry_interval": AUTH_RETRY,
             "request_timeout": 2.0, "starting_timeout": 2.0, "rate_limit": 50.0,
             "backoff.initial": 0.2, "backoff.max": 1.0},
        secrets_dirs=[],
    )
    sim = server.simulator
    with capture_logs() as events:
        running = Running(build(settings, rng=MaxRandom()))
        await until(lambda: any(e["event"] == "api.auth_failed" for e in events))
        sim.set_status("b", "FAILED")
        polls_then = running.daemon.polls
        await until(lambda: running.daemon.polls >= polls_then + 20, timeout=10)  # ~2 s
        refused = [r for r in sim.requests() if r.status == 401]
        key_file.write_text(API_KEY + "\n")  # the operator fixes the secret
        await until(lambda: sim.status("b") == "WORKING"
                    and any(e["event"] == "restart.succeeded" for e in events), timeout=10)
        assert await running.stop() == 0
    # Twenty-odd polls while refused, but a request only every auth_retry_interval.
    assert 2 <= len(refused) <= 2 + 20 * POLL / AUTH_RETRY + 1
    gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(refused)]
    assert all(g >= AUTH_RETRY - 0.05 for g in gaps), gaps
    names = [e["event"] for e in events]
    assert names.count("api.auth_failed") == 1
    assert next(e for e in events if e["event"] == "api.auth_failed")["log_level"] == "critical"
    assert names.count("api.auth_restored") == 1
    assert names.index("api.auth_restored") < names.index("restart.succeeded")
    assert REVOKED not in repr(events) and API_KEY not in repr(events)
