"""Reload on SIGHUP: what is applied, what is refused, what is kept."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.api.errors import ApiTimeout
from supervisor.clock import SystemClock
from supervisor.config.load import load_settings
from supervisor.config.model import BackoffSettings, Settings, StatusSettings
from supervisor.config.problems import ConfigError
from supervisor.domain.auth import AuthBlock
from supervisor.domain.models import Phase, Record, SessionList
from supervisor.domain.policy import Policy
from supervisor.runtime.cycle import Supervisor
from supervisor.runtime.daemon import Daemon, Schedule
from supervisor.runtime.reload import Reloader, changed_keys
from supervisor.runtime.wiring import build, rebuild
from supervisor.service import Service
from supervisor.simulator import SimulatorServer, parse_scenario
from supervisor.state.store import MemoryStore
from tests.fakes import FakeApi, FakeClock, ManualClock, MaxRandom, VirtualScheduler
from tests.waiting import until

KEY = "sk-reload-test-key-0001"
_T = TypeVar("_T")


def settings(**values: Any) -> Settings:
    return Settings(api_key=SecretStr(KEY), base_url="https://api.example", **values)


def test_changed_keys_in_reference_order_and_the_key_by_value() -> None:
    old = settings(poll_interval=30, rate_limit=5)
    new = Settings(api_key=SecretStr(KEY + "x"), base_url="https://api.example",
                   poll_interval=10, rate_limit=5, backoff=BackoffSettings(max=60))
    assert changed_keys(old, new) == ["api_key", "poll_interval", "backoff.max"]
    assert changed_keys(old, settings(poll_interval=30, rate_limit=5)) == []


async def nothing(old: Settings, new: Settings) -> None:
    """An ``apply`` that applies nothing."""


async def test_a_valid_configuration_is_applied_and_reported() -> None:
    applied: list[tuple[Settings, Settings]] = []
    reports: list[bool] = []
    old = settings(poll_interval=30)

    async def apply(a: Settings, b: Settings) -> None:
        applied.append((a, b))

    reloader = Reloader(lambda: settings(poll_interval=10, rate_limit=2), old, apply,
                        reported=reports.append)
    with capture_logs() as events:
        assert await reloader.reload()
    assert applied == [(old, reloader.settings)]
    assert reloader.settings.poll_interval == 10
    [event] = events
    assert event["event"] == "config.reloaded" and event["log_level"] == "info"
    assert event["changed"] == ["poll_interval", "rate_limit"]
    assert event["restart_required"] == []
    assert reports == [True]


async def test_an_invalid_configuration_is_reported_and_the_old_one_stays() -> None:
    applied: list[object] = []
    reports: list[bool] = []
    old = settings()

    def broken() -> Settings:
        raise ConfigError(["poll_interval: must be greater than 0 (got -1, from x.toml)",
                           "rate_limit: must be a number (got lots, from x.toml)"])

    async def apply(a: Settings, b: Settings) -> None:
        applied.append(b)

    reloader = Reloader(broken, old, apply, reported=reports.append)
    with capture_logs() as events:
        assert not await reloader.reload()
    assert applied == [] and reloader.settings is old
    [event] = events
    assert event["event"] == "config.reload_failed" and event["log_level"] == "error"
    assert event["problems"] == ["poll_interval: must be greater than 0 (got -1, from x.toml)",
                                 "rate_limit: must be a number (got lots, from x.toml)"]
    assert reports == [False]


async def test_settings_that_need_a_restart_keep_their_old_value() -> None:
    old = settings(http_listen="127.0.0.1:9187")
    reloader = Reloader(lambda: settings(http_listen="0.0.0.0:9999", poll_interval=5), old,
                        nothing)
    with capture_logs() as events:
        await reloader.reload()
    assert reloader.settings.http_listen == "127.0.0.1:9187"
    assert reloader.settings.poll_interval == 5
    assert events[0]["changed"] == ["poll_interval"]
    assert events[0]["restart_required"] == ["http_listen"]


async def test_the_webhooks_keep_their_old_settings_until_a_restart() -> None:
    from supervisor.config.model import WebhookSettings

    old = settings(webhooks=WebhookSettings(hmac_key=SecretStr("whk-old-key-0123456789")))
    new = settings(webhooks=WebhookSettings(hmac_key=SecretStr("whk-new-key-0123456789"),
                                            max_skew=60.0))
    reloader = Reloader(lambda: new, old, nothing)
    with capture_logs() as events:
        await reloader.reload()
    kept = reloader.settings.webhooks
    assert kept.key() == SecretStr("whk-old-key-0123456789") and kept.max_skew == 300.0
    assert events[0]["restart_required"] == ["webhooks"]
    assert "whk-" not in repr(events)


async def test_another_state_url_waits_for_the_next_start() -> None:
    old = settings(state_url=SecretStr("postgresql://u:pw-one@db/a"))
    reloader = Reloader(lambda: settings(state_url="postgresql://u:pw-two@db/b"), old, nothing)
    with capture_logs() as events:
        await reloader.reload()
    dsn = reloader.settings.state_dsn()
    assert dsn is not None and dsn.get_secret_value() == "postgresql://u:pw-one@db/a"
    assert events[0]["restart_required"] == ["state_url"]
    assert "pw-" not in repr(events)


async def test_a_real_config_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("poll_interval = 30.0\n")
    env = {"WASEND_API_KEY": KEY}

    def load() -> Settings:
        return load_settings(config_path=path, env=env, secrets_dirs=[])

    reloader = Reloader(load, load(), nothing)
    path.write_text("poll_interval = 12.5\n[backoff]\ninitial = 1.0\n")
    with capture_logs() as events:
        assert await reloader.reload()
    assert events[0]["changed"] == ["poll_interval", "backoff.initial"]
    assert events[0]["config_file"] == str(path)


# --- applying: the runtime built again ---------------------------------------------------


async def test_a_rebuilt_runtime_keeps_records_and_the_gates_pause() -> None:
    clock = FakeClock()
    # Plain HTTP before and after.
    old = Settings(api_key=SecretStr(KEY), base_url="http://127.0.0.1:9", sessions=("a", "b"))
    first = build(old, clock=clock, rng=MaxRandom())
    # The new API answers only the rotated key, and holds every GET unanswered.
    server = SimulatorServer(
        scenario=parse_scenario({"session_count": 1, "start_delay": 0,
                                 "hang": {"always": True, "seconds": 30, "kinds": ["get"]}}),
        api_key=KEY + "-rotated").start()
    runtime = first
    try:
        first.store.put(Record("a", phase=Phase.GAVE_UP, gave_up=True, attempt=5))
        first.store.put(Record("b", phase=Phase.UNHEALTHY, attempt=2))
        await first.gate.rate_limited(120.0, call="list")
        first.supervisor.auth = AuthBlock(clock.monotonic() + 300)
        new = Settings(api_key=SecretStr(KEY + "-rotated"), base_url=server.base_url,
                       sessions=("a",), request_timeout=0.3, max_restarts=9,
                       statuses=StatusSettings(healthy=("RUNNING",)),
                       rate_limit=1.0)
        runtime = rebuild(first, new)
        await runtime.forget_unconfigured()
        await first.client.aclose()
        assert runtime.store is first.store
        assert runtime.store.get("a") == Record("a", phase=Phase.GAVE_UP, gave_up=True,
                                                attempt=5)
        assert runtime.store.get("b") is None  # no longer supervised: forgotten
        assert runtime.gate.paused_for() == 120.0
        assert runtime.supervisor.policy.max_restarts == 9
        assert runtime.supervisor.policy.classes.classify("RUNNING").value == "healthy"
        assert runtime.supervisor.configured == ("a",)
        assert runtime.supervisor.auth.until == clock.monotonic()  # try the new key
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


async def test_a_rebuild_changes_nothing_of_the_old_runtime() -> None:
    clock = FakeClock()
    first = build(settings(sessions=("a", "b"), rate_limit=5), clock=clock, rng=MaxRandom())
    try:
        first.store.put(Record("b", phase=Phase.UNHEALTHY, attempt=2))
        second = rebuild(first, settings(sessions=("a",), rate_limit=1, max_restarts=9))
        for part in ("client", "gate", "supervisor"):
            assert getattr(second, part) is not getattr(first, part)
        assert first.supervisor.configured == ("a", "b")
        assert first.supervisor.policy.max_restarts != 9
        assert first.store.get("b") is not None  # forgotten only by forget_unconfigured
        await second.client.aclose()
    finally:
        await first.aclose()


class Recorded(MemoryStore):
    """A store that says whether each delete was made inside its ``run`` (where the
    real one does its work: on its worker thread, not on the event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.deleted: list[tuple[str, bool]] = []

    async def run(self, work: Callable[[], _T]) -> _T:
        self.inside = True
        try:
            return work()
        finally:
            self.inside = False

    def delete(self, session_id: str) -> None:
        self.deleted.append((session_id, self.inside))
        super().delete(session_id)


async def test_the_records_of_sessions_no_longer_configured_are_dropped_through_run() -> None:
    store = Recorded()
    first = build(settings(sessions=("a", "b")), clock=FakeClock(), store=store)
    for sid in ("a", "b", "c"):
        store.put(Record(sid, phase=Phase.UNHEALTHY, attempt=1))
    runtime = rebuild(first, settings(sessions=("a",)))
    await first.client.aclose()
    try:
        await runtime.forget_unconfigured()
        assert sorted(store.deleted) == [("b", True), ("c", True)]
        assert [r.session_id for r in store.records()] == ["a"]
        unfiltered = rebuild(runtime, settings())  # every session supervised: none dropped
        await runtime.client.aclose()
        runtime = unfiltered
        await runtime.forget_unconfigured()
        assert [r.session_id for r in store.records()] == ["a"]
    finally:
        await runtime.aclose()


async def test_the_gates_pause_and_counters_survive_a_reload_that_changes_rate_limit() -> None:
    clock = FakeClock()
    first = build(settings(rate_limit=5), clock=clock, rng=MaxRandom())
    runtime = first
    try:
        await first.gate.rate_limited(120.0, call="list")
        runtime = rebuild(first, settings(rate_limit=1))
        await first.client.aclose()
        assert runtime.gate is not first.gate
        assert runtime.gate.paused_for() == 120.0
        assert runtime.gate.rate_limited_total == 1
        await runtime.gate.acquire()  # the pause is waited out first
        await runtime.gate.acquire()  # then the new budget: one a second
        assert clock.sleeps == [120.0, 1.0]
        assert runtime.gate.paused_seconds_total == 120.0
    finally:
        await runtime.aclose()


LISTING = [{"uniqueSessionId": "a", "status": "WORKING", "sessionName": "Shop"}]


def answering(seen: list[str]) -> httpx.MockTransport:
    """The list, answered 200 to every key; ``seen`` gets each request's key."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"].removeprefix("Bearer "))
        return httpx.Response(200, json=LISTING)

    return httpx.MockTransport(answer)


@pytest.mark.parametrize("rotated", [True, False], ids=["new key", "same key"])
async def test_a_new_key_lifts_an_auth_block_and_the_same_key_keeps_it(rotated: bool) -> None:
    clock = FakeClock()
    seen: list[str] = []
    first = build(settings(), clock=clock, rng=MaxRandom(), transport=answering(seen))
    runtime = first
    try:
        first.supervisor.auth = AuthBlock(clock.monotonic() + 300)
        first.supervisor.last_success = clock.now() - 60
        first.supervisor.consecutive_failures = 4
        key = KEY + "-rotated" if rotated else KEY
        runtime = rebuild(first, Settings(api_key=SecretStr(key),
                                          base_url="https://api.example", poll_interval=7))
        await first.client.aclose()
        with capture_logs() as events:
            result = await runtime.supervisor.poll()
        if rotated:  # tried at the next poll, and it works
            assert result.ok and seen == [key]
            assert "api.auth_restored" in [e["event"] for e in events]
            assert runtime.supervisor.last_success == clock.now()
        else:  # still blocked: the same key is not tried again before its time
            assert result.skip_reason == "auth_failed" and seen == []
            assert runtime.supervisor.auth.until == clock.monotonic() + 300
            assert runtime.supervisor.last_success == clock.now() - 60
            assert runtime.supervisor.consecutive_failures == 4
    finally:
        await runtime.aclose()


# --- the service: a reload between two polls ----------------------------------------------


class HeldList:
    """A list endpoint on every base URL that holds the first request until ``release``;
    ``seen`` gets (host, key) of each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.host,
                          request.headers["Authorization"].removeprefix("Bearer ")))
        if len(self.seen) == 1:
            self.arrived.set()
            await self.release.wait()
        return httpx.Response(200, json=LISTING)


def service_settings(host: str, key: str, **values: Any) -> Settings:
    return Settings(api_key=SecretStr(key), base_url=f"https://{host}",
                    state_path=Path(":memory:"), **values)


async def test_a_poll_in_flight_finishes_on_the_old_runtime_and_the_next_uses_the_new() -> None:
    clock = ManualClock()
    scheduler = VirtualScheduler(clock)
    held = HeldList()
    new = service_settings("b.example", KEY + "-new", poll_interval=5, shutdown_grace=30)
    service = Service.build(service_settings("a.example", KEY, poll_interval=3600,
                                             shutdown_grace=30),
                            env={}, load=lambda: new, scheduler=scheduler, clock=clock,
                            rng=MaxRandom(), transport=httpx.MockTransport(held))
    old = service.runtime
    with capture_logs() as events:
        task = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(held.arrived.wait(), 5)
            service.daemon.handle_signal(signal.SIGHUP)
            # The reload waits for the poll in flight: nothing is applied meanwhile.
            await until(lambda: len(clock.deadlines()) >= 2, describe="the reload waits")
            assert service.runtime is old and "config.reloaded" not in str(events)
            held.release.set()
            await until(lambda: service.runtime is not old, describe="not swapped")
            await until(lambda: any(e["event"] == "config.reloaded" for e in events))
            # The old client is closed after the swap; the next poll comes at the new
            # interval, counted from the reload, on the new client with the new key.
            await until(lambda: old.client.closed, describe="the old client is open")
            with pytest.raises(RuntimeError, match="closed"):
                await old.client.list_sessions()
            clock.advance(5)
            await until(lambda: service.daemon.polls >= 2,
                        describe=lambda: f"{service.daemon.polls} polls")
        finally:
            service.daemon.request_stop()
            assert await asyncio.wait_for(task, 5) == 0
            await service.aclose()
    assert held.seen == [("a.example", KEY), ("b.example", KEY + "-new")]
    names = [e["event"] for e in events]
    assert names.index("poll.completed") < names.index("config.reloaded")
    assert service.daemon.supervisor is service.runtime.supervisor


async def test_a_reload_keeps_the_services_observers_and_watches_the_new_gate() -> None:
    clock = ManualClock()
    seen: list[str] = []
    new = service_settings("api.example", KEY, sessions=("a",), rate_limit=2)
    service = Service.build(service_settings("api.example", KEY), env={}, load=lambda: new,
                            scheduler=VirtualScheduler(clock), clock=clock, rng=MaxRandom(),
                            transport=answering(seen))
    old = service.runtime
    try:
        await old.gate.rate_limited(30.0, call="list")
        assert service.reloader is not None
        assert await service.reloader.reload()
        assert service.runtime is not old
        assert service.runtime.supervisor.observers == old.supervisor.observers != []
        assert service.runtime.gate.paused_for() == 30.0
        assert b"wasend_supervisor_api_rate_limited_total 1.0" in service.metrics.render()
        await service.runtime.gate.rate_limited(5.0, call="list")  # on the new gate
        assert b"wasend_supervisor_api_rate_limited_total 2.0" in service.metrics.render()
    finally:
        await service.aclose()


# --- the daemon's part --------------------------------------------------------------------


async def test_daemon_reschedules_its_poll_job_on_a_new_interval() -> None:
    """On APScheduler itself, the real clock: ``switch`` to a new interval reschedules."""
    sup = Supervisor(FakeApi({"a": "WORKING"}), MemoryStore(), Policy(), SystemClock(),
                     MaxRandom())
    daemon = Daemon(sup, poll_interval=3600, shutdown_grace=1)
    task = asyncio.create_task(daemon.run())
    try:
        # The first poll is immediate; the next one an hour later.
        await until(lambda: daemon.polls >= 1, timeout=5)
        daemon.switch(sup, Schedule(poll_interval=0.05, shutdown_grace=2, poll_jitter=0.0))
        await until(lambda: daemon.polls >= 4, timeout=5, describe="not rescheduled")
        assert daemon.shutdown_grace == 2
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 5) == 0


async def test_sighup_only_flags_and_the_reload_runs_on_the_loop() -> None:
    clock = ManualClock()
    sup = Supervisor(FakeApi({"a": "WORKING"}), MemoryStore(), Policy(), clock, MaxRandom())
    daemon = Daemon(sup, poll_interval=3600, shutdown_grace=1,
                    scheduler=VirtualScheduler(clock), clock=clock)
    calls: list[str] = []
    sent = ["the pair"]  # which SIGHUP a reload answers: the last one sent before it ran

    async def reload() -> None:
        calls.append(sent[0])

    daemon.on_reload = reload
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


async def test_a_poll_that_outlasts_the_reloads_wait_does_not_hold_the_reload() -> None:
    """The reload waits for the poll in flight at most ``shutdown_grace``, then goes on;
    the poll goes on too, on what it began with."""
    clock = ManualClock()
    arrived, release = asyncio.Event(), asyncio.Event()

    class Held(FakeApi):
        async def list_sessions(self) -> SessionList:
            arrived.set()
            await release.wait()
            return await super().list_sessions()

    sup = Supervisor(Held({"a": "WORKING"}), MemoryStore(), Policy(), clock, MaxRandom())
    daemon = Daemon(sup, poll_interval=3600, shutdown_grace=4,
                    scheduler=VirtualScheduler(clock), clock=clock)
    reloaded: list[bool] = []

    async def reload() -> None:
        reloaded.append(True)

    daemon.on_reload = reload
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(arrived.wait(), 5)
        daemon.request_reload()
        end = clock.monotonic() + 4
        await until(lambda: end in clock.deadlines(), describe=clock.deadlines)
        assert reloaded == []
        clock.advance(4)
        await until(lambda: reloaded, describe="the reload still waits")
        assert daemon.polls == 0  # the poll is still in flight, not cancelled
        release.set()
        await until(lambda: daemon.polls == 1)
    finally:
        release.set()
        daemon.request_stop()
        assert await asyncio.wait_for(task, 5) == 0
