"""Reload on SIGHUP: what is applied, what is refused, what is kept."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.api.errors import ApiTimeout
from supervisor.clock import SystemClock
from supervisor.config.load import load_settings
from supervisor.config.model import BackoffSettings, Settings, StatusSettings
from supervisor.config.problems import ConfigError
from supervisor.domain.models import Phase, Record
from supervisor.domain.policy import Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.runtime.daemon import Daemon
from supervisor.runtime.reload import Reloader, changed_keys
from supervisor.runtime.wiring import build
from supervisor.simulator import SimulatorServer, parse_scenario
from supervisor.state.store import MemoryStore
from tests.fakes import FakeApi, FakeClock, MaxRandom
from tests.waiting import until

KEY = "sk-reload-test-key-0001"


def settings(**values: Any) -> Settings:
    return Settings(api_key=SecretStr(KEY), base_url="https://api.example", **values)


def test_changed_keys_in_reference_order_and_the_key_by_value() -> None:
    old = settings(poll_interval=30, rate_limit=5)
    new = Settings(api_key=SecretStr(KEY + "x"), base_url="https://api.example",
                   poll_interval=10, rate_limit=5, backoff=BackoffSettings(max=60))
    assert changed_keys(old, new) == ["api_key", "poll_interval", "backoff.max"]
    assert changed_keys(old, settings(poll_interval=30, rate_limit=5)) == []


def test_a_valid_configuration_is_applied_and_reported() -> None:
    applied: list[tuple[Settings, Settings]] = []
    reports: list[bool] = []
    old = settings(poll_interval=30)
    reloader = Reloader(lambda: settings(poll_interval=10, rate_limit=2), old,
                        lambda a, b: applied.append((a, b)), reported=reports.append)
    with capture_logs() as events:
        assert reloader.reload()
    assert applied == [(old, reloader.settings)]
    assert reloader.settings.poll_interval == 10
    [event] = events
    assert event["event"] == "config.reloaded" and event["log_level"] == "info"
    assert event["changed"] == ["poll_interval", "rate_limit"]
    assert event["restart_required"] == []
    assert reports == [True]


def test_an_invalid_configuration_is_reported_and_the_old_one_stays() -> None:
    applied: list[object] = []
    reports: list[bool] = []
    old = settings()

    def broken() -> Settings:
        raise ConfigError(["poll_interval: must be greater than 0 (got -1, from x.toml)",
                           "rate_limit: must be a number (got lots, from x.toml)"])

    reloader = Reloader(broken, old, lambda a, b: applied.append(b), reported=reports.append)
    with capture_logs() as events:
        assert not reloader.reload()
    assert applied == [] and reloader.settings is old
    [event] = events
    assert event["event"] == "config.reload_failed" and event["log_level"] == "error"
    assert event["problems"] == ["poll_interval: must be greater than 0 (got -1, from x.toml)",
                                 "rate_limit: must be a number (got lots, from x.toml)"]
    assert reports == [False]


def test_settings_that_need_a_restart_keep_their_old_value() -> None:
    old = settings(http_listen="127.0.0.1:9187")
    reloader = Reloader(lambda: settings(http_listen="0.0.0.0:9999", poll_interval=5), old,
                        lambda a, b: None)
    with capture_logs() as events:
        reloader.reload()
    assert reloader.settings.http_listen == "127.0.0.1:9187"
    assert reloader.settings.poll_interval == 5
    assert events[0]["changed"] == ["poll_interval"]
    assert events[0]["restart_required"] == ["http_listen"]


def test_a_real_config_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("poll_interval = 30.0\n")
    env = {"WASEND_API_KEY": KEY}

    def load() -> Settings:
        return load_settings(config_path=path, env=env, secrets_dirs=[])

    reloader = Reloader(load, load(), lambda a, b: None)
    path.write_text("poll_interval = 12.5\n[backoff]\ninitial = 1.0\n")
    with capture_logs() as events:
        assert reloader.reload()
    assert events[0]["changed"] == ["poll_interval", "backoff.initial"]
    assert events[0]["config_file"] == str(path)


# --- applying to the running parts --------------------------------------------------------


async def test_runtime_reconfigure_keeps_records_and_the_gates_pause() -> None:
    clock = FakeClock()
    # Plain HTTP before and after: the same httpx client, given the new timeout.
    old = Settings(api_key=SecretStr(KEY), base_url="http://127.0.0.1:9", sessions=("a", "b"))
    runtime = build(old, clock=clock, rng=MaxRandom())
    # The new API answers only the rotated key, and holds every GET unanswered.
    server = SimulatorServer(
        scenario=parse_scenario({"session_count": 1, "start_delay": 0,
                                 "hang": {"always": True, "seconds": 30, "kinds": ["get"]}}),
        api_key=KEY + "-rotated").start()
    try:
        runtime.store.put(Record("a", phase=Phase.GAVE_UP, gave_up=True, attempt=5))
        runtime.store.put(Record("b", phase=Phase.UNHEALTHY, attempt=2))
        await runtime.gate.rate_limited(120.0, call="list")
        runtime.supervisor.auth_blocked_until = clock.monotonic() + 300
        new = Settings(api_key=SecretStr(KEY + "-rotated"), base_url=server.base_url,
                       sessions=("a",), request_timeout=0.3, max_restarts=9,
                       statuses=StatusSettings(healthy=("RUNNING",)),
                       rate_limit=1.0)
        runtime.reconfigure(new)
        assert runtime.store.get("a") == Record("a", phase=Phase.GAVE_UP, gave_up=True,
                                                attempt=5)
        assert runtime.store.get("b") is None  # no longer supervised: forgotten
        assert runtime.gate.paused_for() == 120.0
        assert runtime.supervisor.policy.max_restarts == 9
        assert runtime.supervisor.policy.classes.classify("RUNNING").value == "healthy"
        assert runtime.supervisor.configured == ("a",)
        assert runtime.supervisor.auth_blocked_until == clock.monotonic()  # try the new key
        assert repr(runtime.client) == f"<WasendClient {server.base_url}>"
        assert runtime.settings is new
        # The client asks the new API with the new key, and gives up at the new timeout
        # (the old one was the default 15 s).
        assert len((await runtime.client.list_sessions()).sessions) == 1
        asked = time.monotonic()
        with pytest.raises(ApiTimeout):
            await runtime.client.get_session("sess-0001")
        assert time.monotonic() - asked < 3
    finally:
        await runtime.aclose()
        server.stop()


async def test_daemon_reschedules_its_poll_job_on_a_new_interval() -> None:
    sup = Supervisor(FakeApi({"a": "WORKING"}), MemoryStore(), Policy(), SystemClock(),
                     MaxRandom())
    daemon = Daemon(sup, poll_interval=3600, shutdown_grace=1)
    task = asyncio.create_task(daemon.run())
    try:
        # The first poll is immediate; the next one an hour later.
        await until(lambda: daemon.polls >= 1, timeout=5)
        daemon.reconfigure(poll_interval=0.05, poll_jitter=0.0, shutdown_grace=2)
        await until(lambda: daemon.polls >= 4, timeout=5, describe="not rescheduled")
        assert daemon.shutdown_grace == 2
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 5) == 0


async def test_sighup_only_flags_and_the_reload_runs_on_the_loop() -> None:
    sup = Supervisor(FakeApi({"a": "WORKING"}), MemoryStore(), Policy(), SystemClock(),
                     MaxRandom())
    daemon = Daemon(sup, poll_interval=3600, shutdown_grace=1)
    calls: list[str] = []
    sent = ["the pair"]  # which SIGHUP a reload answers: the last one sent before it ran
    daemon.on_reload = lambda: calls.append(sent[0])
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.alive()[0], timeout=5)
    daemon.handle_signal(signal.SIGHUP)
    daemon.handle_signal(signal.SIGHUP)  # two before the loop turns: one reload
    assert calls == []  # the handler itself did nothing but set a flag
    await until(lambda: calls, timeout=5)
    # A third SIGHUP, told apart from the pair: reloads run one after another, so a
    # second reload for the pair would come before this one's.
    sent[0] = "the third"
    daemon.handle_signal(signal.SIGHUP)
    await until(lambda: "the third" in calls, timeout=5)
    assert calls == ["the pair", "the third"]
    daemon.handle_signal(signal.SIGTERM)
    daemon.handle_signal(signal.SIGHUP)  # too late: stopping
    assert await asyncio.wait_for(task, 5) == 0
    assert calls == ["the pair", "the third"]
