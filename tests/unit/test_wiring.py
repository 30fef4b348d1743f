"""``wiring.build``: every mode put together by one function, and a reload by the same."""

from __future__ import annotations

from pydantic import SecretStr

from supervisor.config.model import Settings
from supervisor.runtime.wiring import build, rebuild
from tests.fakes import FakeClock

KEY = "sk-wiring-test-key-0001"


def settings(**values: object) -> Settings:
    return Settings(api_key=SecretStr(KEY), base_url="https://api.example",
                    state_path=":memory:", **values)  # type: ignore[arg-type]


async def test_a_check_is_built_without_poll_backoff_and_with_its_wait() -> None:
    runtime = build(settings(poll_interval=30), clock=FakeClock(), check=True, max_wait=5.0)
    reloaded = rebuild(runtime, settings(poll_interval=10))
    try:
        for built in (runtime, reloaded):  # a rebuild is the same kind of runtime
            assert built.supervisor.poll_interval is None
            assert built.gate.max_wait == 5.0
    finally:
        await reloaded.client.aclose()
        await runtime.aclose()


async def test_a_daemon_is_built_with_its_poll_interval_and_no_wait() -> None:
    runtime = build(settings(poll_interval=30), clock=FakeClock())
    try:
        assert runtime.supervisor.poll_interval == 30
        assert runtime.gate.max_wait is None
    finally:
        await runtime.aclose()
