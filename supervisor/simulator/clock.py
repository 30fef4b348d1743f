"""Clocks: the simulator reads time only through one of these.

A clock has ``monotonic()`` (seconds, for deadlines and the life cycle) and ``now()``
(wall time, epoch seconds, for ``updatedAt``, HTTP-dates and the request log).
Tests pass a :class:`ManualClock` and move it forward by hand, so they never sleep.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the simulator needs from a clock."""

    def monotonic(self) -> float: ...

    def now(self) -> float: ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`time.time`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (thread-safe)."""

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._wall = wall

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def now(self) -> float:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Move both readings forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._monotonic += seconds
            self._wall += seconds
