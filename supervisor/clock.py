"""Time, as one injectable object.

``monotonic()`` is for deadlines inside this process (the rate gate, timeouts);
``now()`` is wall-clock epoch seconds, for anything that is remembered or shown
(supervision records, HTTP-dates, reports). Tests pass a fake clock instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
