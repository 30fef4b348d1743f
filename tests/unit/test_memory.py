"""Freed memory goes back to the system after every poll of the daemon, where it can."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

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


def test_release_trims_with_glibc() -> None:
    memory.release_freed_memory()  # glibc here: trims (elsewhere: see the next test)


# A process whose C library has no malloc_trim (musl, macOS), or cannot be loaded: made so
# before the module first looks for it, in a process of its own.
WITHOUT_MALLOC_TRIM = """
import ctypes, sys

class Library:
    def __init__(self, *args, **kwargs):
        if sys.argv[1] == "no-library":
            raise OSError("cannot load the C library")

ctypes.CDLL = Library
from supervisor.runtime.memory import release_freed_memory
release_freed_memory()
release_freed_memory()
print("released")
"""


@pytest.mark.parametrize("missing", ["no-malloc-trim", "no-library"])
def test_release_does_nothing_without_malloc_trim(missing: str) -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_MALLOC_TRIM, missing],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "released\n", "")


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
