"""Alert episodes against the simulator over real HTTP: the real client, cycle, daemon
and state file, with ``Alerting`` after each poll; what reaches the outbox."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.domain.episodes import Change, Kind
from supervisor.runtime.alerting import Alerting
from supervisor.runtime.check import run_check
from supervisor.runtime.wiring import Runtime, build
from supervisor.state.sqlite import SqliteStore
from supervisor.state.store import Store
from tests.e2e.conftest import Running, SimFactory, runtime_for, settings_for
from tests.fakes import MaxRandom
from tests.waiting import until

pytestmark = pytest.mark.e2e

CHANNELS = ("apprise-1", "alertmanager")


def attach(runtime: Runtime) -> Running:
    running = Running(runtime)  # the daemon's first poll waits for the loop: hook it now
    alerts = Alerting(runtime.store, CHANNELS, unreachable_after=120.0, clock=runtime.clock)
    running.daemon.after_poll.append(alerts.after_poll)
    return running


def rows(store: Store) -> list[tuple[str, Change, Kind, str]]:
    return [(p.channel, p.transition.change, p.transition.episode.kind,
             p.transition.episode.subject)
            for channel in CHANNELS for p in store.due(channel, float("inf"), 1000)]


async def test_one_qr_session_opens_once_and_resolves_once_across_a_crash(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "q"}], "session_count": 0})
    state = str(tmp_path / "state.db")
    with capture_logs() as events:
        first = attach(runtime_for(server, state_path=state))
        await until(lambda: first.daemon.polls >= 2)
        server.simulator.set_status("q", "SCAN_QR_CODE")
        await until(lambda: any(e["event"] == "alert.opened" for e in events))
        polls = first.daemon.polls
        await until(lambda: first.daemon.polls >= polls + 3)  # more polls, nothing new
        # The daemon dies: no clean stop, no close. Another starts on the same file.
        first.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first.task
        second = attach(runtime_for(server, state_path=state))
        await until(lambda: second.daemon.polls >= 3)
        server.simulator.set_status("q", "WORKING")
        await until(lambda: any(e["event"] == "alert.resolved" for e in events))
        polls = second.daemon.polls
        await until(lambda: second.daemon.polls >= polls + 3)
        assert await second.stop() == 0
    await first.runtime.client.aclose()
    first.runtime.store.close()
    alerts = [(e["event"], e["kind"], e["session_id"], e["status"]) for e in events
              if e["event"].startswith("alert.")]
    assert alerts == [("alert.opened", "needs_person", "q", "SCAN_QR_CODE"),
                      ("alert.resolved", "needs_person", "q", "SCAN_QR_CODE")]
    store = SqliteStore.open_readonly(state)
    try:
        assert store.open_episodes() == []
        assert rows(store) == [
            (channel, change, Kind.NEEDS_PERSON, "q")
            for channel in CHANNELS for change in (Change.OPENED, Change.RESOLVED)]
    finally:
        store.close()


async def test_check_run_ten_times_over_one_open_episode_queues_one_opening(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "q", "status": "SCAN_QR_CODE"}, {"id": "a"}],
                        "session_count": 0})
    state = str(tmp_path / "state.db")
    with capture_logs() as events:
        for _ in range(10):
            runtime = build(settings_for(server, state_path=state), rng=MaxRandom(), check=True)
            alerts = Alerting(runtime.store, CHANNELS, unreachable_after=120.0,
                              clock=runtime.clock)
            report = await run_check(runtime.supervisor, after_poll=alerts.after_poll)
            assert report.exit_status == 2
            await runtime.aclose()
    assert [e["event"] for e in events if e["event"].startswith("alert.")] == ["alert.opened"]
    store = SqliteStore.open_readonly(state)
    try:
        assert rows(store) == [(channel, Change.OPENED, Kind.NEEDS_PERSON, "q")
                               for channel in CHANNELS]
    finally:
        store.close()
