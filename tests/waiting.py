"""Waiting on a condition with a deadline: the one home of the tests' waits.

A test never sleeps for a fixed time in place of a condition: it names the condition and
waits for it, failing with a message once the deadline passes. ``until`` is for tests on
an event loop (it yields to the loop between looks); ``wait_for`` is for tests that watch
a thread or another process.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

Describe = str | Callable[[], object]


def _failure(timeout: float, describe: Describe | None) -> str:
    detail = describe() if callable(describe) else describe
    return f"condition not met within {timeout} s" + (f": {detail}" if detail else "")


async def until(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.01,
                describe: Describe | None = None) -> None:
    """Wait on the running loop until ``condition()`` is truthy; fail after ``timeout`` s.
    ``describe`` (a string, or a callable for the state at the deadline) explains a failure.
    The condition may be a coroutine function (say, a request that asks the service)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _holds(condition):
        if loop.time() > deadline:
            raise AssertionError(_failure(timeout, describe))
        await asyncio.sleep(step)


async def _holds(condition: Callable[[], object]) -> object:
    value = condition()
    return await value if inspect.isawaitable(value) else value


def wait_for(condition: Callable[[], object], timeout: float = 15.0, step: float = 0.02,
             describe: Describe | None = None) -> None:
    """Block until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(_failure(timeout, describe))
        time.sleep(step)
