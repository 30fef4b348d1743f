"""Freed memory goes back to the system after every poll of the daemon, where it can."""

from __future__ import annotations

import asyncio
import signal

import pytest

from supervisor.clock import SystemClock
from supervisor.domain.policy import Policy
from supervisor.runtime import daemon as daemon_module
from supervisor.runtime import memory
from supervisor.runtime.cycle import Supervisor
from supervisor.runtime.daemon import Daemon
from supervisor.state.store import MemoryStore
from tests.fakes import FakeApi, MaxRandom
from tests.waiting import until


def test_release_is_harmless_with_or_without_malloc_trim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory.release_freed_memory()  # glibc here: trims; elsewhere: nothing
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    memory.release_freed_memory()


async def test_the_daemon_releases_memory_after_each_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    releases: list[int] = []
    daemon = Daemon(Supervisor(FakeApi({"a": "WORKING"}), MemoryStore(), Policy(),
                               SystemClock(), MaxRandom()),
                    poll_interval=0.05, shutdown_grace=2.0)
    monkeypatch.setattr(daemon_module, "release_freed_memory",
                        lambda: releases.append(daemon.polls))
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.polls >= 3, describe="no polls")
    daemon.handle_signal(signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0
    assert releases[:3] == [0, 1, 2]  # once per poll, as each one ends
