"""The API key never appears in a log line or an exception text, whatever happens.

Every fault the simulator can inject is run against the real supervisor with a
recognisable key, JSON logging at debug level into a buffer, and every error kept.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from supervisor.api.errors import ApiError
from tests.e2e.conftest import API_KEY, Running, SimFactory, runtime_for
from tests.waiting import until

pytestmark = pytest.mark.e2e

FAULTS: dict[str, dict[str, Any]] = {
    "restart": {},
    "conflict": {"conflict_on_failed_restart": True},
    "rate_limit": {"rate_limit": {"burst": 3, "retry_after": 1}},
    "rate_limit_date": {"rate_limit": {"burst": 2, "retry_after": 1,
                                       "retry_after_form": "http-date"}},
    "rate_limit_garbage": {"rate_limit": {"burst": 2, "retry_after_form": "raw",
                                          "retry_after_raw": API_KEY}},
    "server_errors": {"server_errors": {"rate": 0.5, "status": 502}},
    "malformed": {"malformed_json": {"rate": 0.5}},
    "hang": {"hang": {"rate": 0.5, "seconds": 5}},
    "outage": {"outage": {"duration": 0.5, "mode": "refuse"}},
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_key_never_logged_or_raised(
    simulator: SimFactory, log_buffer: io.StringIO, fault: str,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b", "status": "ERROR"}],
                        "session_count": 0, **FAULTS[fault]})
    runtime = runtime_for(server, request_timeout=0.5)
    errors: list[ApiError] = []
    running = Running(runtime)
    running.daemon.listeners.append(lambda r: errors.append(r.error) if r.error else None)
    await until(lambda: running.daemon.polls >= 8, timeout=20)
    await running.stop()
    text = log_buffer.getvalue()
    assert text.count("\n") > 5, "the scenario should have logged something"
    assert API_KEY not in text
    for error in errors:
        assert API_KEY not in str(error) and API_KEY not in repr(error)
        assert API_KEY not in getattr(error, "excerpt", "")
    assert API_KEY not in repr(runtime.client) and API_KEY not in repr(runtime.settings)


async def test_wrong_key_is_not_logged_either(
    simulator: SimFactory, log_buffer: io.StringIO,
) -> None:
    server = simulator({"session_count": 1})
    wrong = "sk-WRONG-RECOGNISABLE-KEY-77"
    runtime = runtime_for(server, api_key=__import__("pydantic").SecretStr(wrong))
    running = Running(runtime)
    await until(lambda: "api.auth_failed" in log_buffer.getvalue())
    await running.stop()
    assert wrong not in log_buffer.getvalue()
