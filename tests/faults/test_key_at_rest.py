"""The API key is written nowhere: not in a log line, a history row, the state file (its
WAL included), ``status`` or ``history`` output, or an error's text."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from supervisor.api.errors import ApiError
from supervisor.cli import main
from supervisor.runtime.wiring import build
from supervisor.state.sqlite import SqliteStore
from tests.e2e.conftest import API_KEY, Running, SimFactory
from tests.fakes import MaxRandom
from tests.faults.conftest import settings_at
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

FAULTS: dict[str, dict[str, Any]] = {
    "retry_after_is_the_key": {"rate_limit": {"burst": 2, "retry_after_form": "raw",
                                              "retry_after_raw": API_KEY}},
    "conflicts": {"conflict_on_failed_restart": True},
    "server_errors": {"server_errors": {"rate": 0.5, "status": 502}},
    "malformed": {"malformed_json": {"rate": 0.5}},
    "outage": {"outage": {"duration": 0.4, "mode": "refuse"}},
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_the_key_is_nowhere_at_rest(
    simulator: SimFactory, log_buffer: io.StringIO, tmp_path: Path, fault: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Expectation: under each fault, with a failing session restarted (so that records
    and history rows are written), the recognisable key is in no log line, no error
    text, no byte of the state file or its WAL, no history row and no ``status`` or
    ``history`` output."""
    server = simulator({"sessions": [{"id": "a"}, {"id": "b", "status": "ERROR",
                                                  "outcome": ["FAILED", "WORKING"]}],
                        "session_count": 0, "start_delay": 0.1, **FAULTS[fault]})
    state = tmp_path / "state.db"
    runtime = build(settings_at(server.base_url, state_path=state, request_timeout=0.5),
                    rng=MaxRandom())
    errors: list[ApiError] = []
    running = Running(runtime)
    running.daemon.listeners.append(lambda r: errors.append(r.error) if r.error else None)
    await until(lambda: '"restart.requested"' in log_buffer.getvalue()
                and running.daemon.polls >= 8, timeout=20)
    assert await running.stop() == 0
    assert API_KEY not in log_buffer.getvalue()
    assert all(API_KEY not in f"{e} {e!r} {getattr(e, 'excerpt', '')}" for e in errors)
    for path in tmp_path.iterdir():  # state.db, and its -wal and -shm if still there
        assert API_KEY.encode() not in path.read_bytes(), path.name
    store = SqliteStore.open_readonly(state)
    rows = store.read_history()
    assert rows and all(API_KEY not in repr(row) for row in rows)
    assert all(API_KEY not in repr(record) for record in store.records())
    for command in ("status", "history"):
        done = main([command, "--json", "--state-path", str(state)])
        assert done in ((0, 1, 2) if command == "status" else (0,))  # status: as check's
        shown = capsys.readouterr()
        assert '"state_path"' in shown.out and API_KEY not in shown.out + shown.err
