"""Policy: how statuses are classified and how long to wait between attempts.

Pure functions of their arguments; randomness comes in as a ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from supervisor.models import StatusClass

DEFAULT_HEALTHY = ("WORKING", "CONNECTED")
DEFAULT_TRANSITIONAL = ("STARTING", "CREATED")
DEFAULT_RESTARTABLE = ("STOPPED", "ERROR", "FAILED")
DEFAULT_NEEDS_PERSON = ("SCAN_QR_CODE",)


def _upper(statuses: Iterable[str]) -> frozenset[str]:
    return frozenset(s.strip().upper() for s in statuses)


@dataclass(frozen=True, slots=True)
class StatusClasses:
    """Which status falls in which class. Compared case-insensitively."""

    healthy: frozenset[str] = _upper(DEFAULT_HEALTHY)
    transitional: frozenset[str] = _upper(DEFAULT_TRANSITIONAL)
    restartable: frozenset[str] = _upper(DEFAULT_RESTARTABLE)
    needs_person: frozenset[str] = _upper(DEFAULT_NEEDS_PERSON)
    _lookup: dict[str, StatusClass] = field(init=False, repr=False, compare=False)

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
        lookup: dict[str, StatusClass] = {}
        for klass, members in (
            (StatusClass.HEALTHY, self.healthy),
            (StatusClass.TRANSITIONAL, self.transitional),
            (StatusClass.RESTARTABLE, self.restartable),
            (StatusClass.NEEDS_PERSON, self.needs_person),
        ):
            for status in members:
                if status in lookup:
                    raise ValueError(
                        f"status {status!r} is in both {lookup[status].value} and {klass.value}"
                    )
                lookup[status] = klass
        object.__setattr__(self, "_lookup", lookup)

    def classify(self, status: str) -> StatusClass:
        found = self._lookup.get(status)
        if found is None:
            found = self._lookup.get(status.strip().upper(), StatusClass.UNKNOWN)
        return found


@dataclass(frozen=True, slots=True)
class Backoff:
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


@dataclass(frozen=True, slots=True)
class Policy:
    """Every knob of the decision core, in seconds where it is a time."""

    classes: StatusClasses = field(default_factory=StatusClasses)
    backoff: Backoff = field(default_factory=Backoff)
    max_restarts: int = 5
    restart_window: float = 3600.0
    stable_after: float = 300.0
    starting_timeout: float = 120.0
    gave_up_retry_interval: float = 3600.0
