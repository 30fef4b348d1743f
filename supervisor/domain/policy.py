"""Policy: how statuses are classified and how long to wait between attempts.

Pure functions of their arguments; randomness comes in as a ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import msgspec

from supervisor.domain.models import StatusClass

DEFAULT_HEALTHY = ("WORKING", "CONNECTED")
DEFAULT_TRANSITIONAL = ("STARTING", "CREATED")
DEFAULT_RESTARTABLE = ("STOPPED", "ERROR", "FAILED")
DEFAULT_NEEDS_PERSON = ("SCAN_QR_CODE",)


def _upper(statuses: Iterable[str]) -> frozenset[str]:
    return frozenset(s.strip().upper() for s in statuses)


def overlaps(
    classes: Sequence[tuple[StatusClass, Iterable[str]]],
) -> list[tuple[str, StatusClass, StatusClass]]:
    """The rule that a status is in one class at most: every status named again in a later
    class, as ``(status, first class, later class)``, in the order the classes and their
    members are given (an empty list: the classes are disjoint)."""
    first: dict[str, StatusClass] = {}
    found: list[tuple[str, StatusClass, StatusClass]] = []
    for klass, members in classes:
        for status in members:
            if status in first:
                found.append((status, first[status], klass))
            else:
                first[status] = klass
    return found


class StatusClasses(msgspec.Struct, frozen=True):
    """Which status falls in which class. Compared case-insensitively; a status is in one
    class at most."""

    healthy: frozenset[str] = _upper(DEFAULT_HEALTHY)
    transitional: frozenset[str] = _upper(DEFAULT_TRANSITIONAL)
    restartable: frozenset[str] = _upper(DEFAULT_RESTARTABLE)
    needs_person: frozenset[str] = _upper(DEFAULT_NEEDS_PERSON)

    @classmethod
    def of(
        cls,
        *,
        healthy: Iterable[str] = DEFAULT_HEALTHY,
        transitional: Iterable[str] = DEFAULT_TRANSITIONAL,
        restartable: Iterable[str] = DEFAULT_RESTARTABLE,
        needs_person: Iterable[str] = DEFAULT_NEEDS_PERSON,
    ) -> StatusClasses:
        return cls(
            healthy=_upper(healthy),
            transitional=_upper(transitional),
            restartable=_upper(restartable),
            needs_person=_upper(needs_person),
        )

    def __post_init__(self) -> None:
        found = overlaps(self._classes())
        if found:
            status, first, second = found[0]
            raise ValueError(f"status {status!r} is in both {first.value} and {second.value}")

    def _classes(self) -> tuple[tuple[StatusClass, frozenset[str]], ...]:
        return (
            (StatusClass.HEALTHY, self.healthy),
            (StatusClass.TRANSITIONAL, self.transitional),
            (StatusClass.RESTARTABLE, self.restartable),
            (StatusClass.NEEDS_PERSON, self.needs_person),
        )

    def classify(self, status: str) -> StatusClass:
        if status in self.healthy:  # the common case: one lookup
            return StatusClass.HEALTHY
        for key in (status, status.strip().upper()):
            for klass, members in self._classes():
                if key in members:
                    return klass
        return StatusClass.UNKNOWN


class Backoff(msgspec.Struct, frozen=True):
    """Exponential backoff with full jitter: ``uniform(0, min(max, initial * multiplier**n))``."""

    initial: float = 5.0
    max: float = 300.0
    multiplier: float = 2.0

    def cap(self, n: int) -> float:
        """The upper bound of the n-th delay (n = 0, 1, 2...), overflow-safe for any n."""
        if n <= 0 or self.multiplier <= 1.0:
            return min(self.max, self.initial)
        if self.initial <= 0.0:
            return 0.0
        # Compare in log space so that huge n never computes multiplier**n.
        if math.log(self.initial) + n * math.log(self.multiplier) >= math.log(self.max):
            return self.max
        return min(self.max, self.initial * self.multiplier**n)

    def delay(self, n: int, rng: random.Random) -> float:
        """A jittered delay for the n-th retry."""
        return rng.uniform(0.0, self.cap(n))


class Policy(msgspec.Struct, frozen=True):
    """Every knob of the decision core, in seconds where it is a time. Its defaults (and
    those of ``Backoff`` and ``StatusClasses``) are the settings' defaults too."""

    classes: StatusClasses = msgspec.field(default_factory=StatusClasses)
    backoff: Backoff = msgspec.field(default_factory=Backoff)
    max_restarts: int = 5
    restart_window: float = 3600.0
    stable_after: float = 300.0
    starting_timeout: float = 120.0
    gave_up_retry_interval: float = 3600.0
    zombie_after: float = 120.0  # healthy by its status, engine not connected: failed; 0 off


# While the list call keeps failing, polls are skipped: the n-th failure in a row waits
# min(POLL_BACKOFF_INTERVALS, 2**(n-1)) poll intervals before the next poll.
POLL_BACKOFF_INTERVALS = 4


def poll_backoff(poll_interval: float, failures: int) -> float:
    """Seconds from a failed poll to the next, after ``failures`` failed polls in a row:
    1, 2, then 4 poll intervals (overflow-safe at any count)."""
    return poll_interval * min(POLL_BACKOFF_INTERVALS, 1 << min(max(failures - 1, 0), 16))


def poll_resume_at(started: float, poll_interval: float, next_poll_in: float) -> float | None:
    """When polls run again after one that began at ``started`` failed and backs off
    ``next_poll_in`` seconds: half an interval early, so that the scheduler's tick due
    then is not skipped for its jitter; None when the wait is one interval (no backoff).
    Times in the clock's ``monotonic()`` seconds."""
    return started + next_poll_in - poll_interval / 2 if next_poll_in > poll_interval else None
