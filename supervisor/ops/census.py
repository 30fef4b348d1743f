"""What the supervision records add up to after a poll: sessions by status class and by
phase, and the one-line summary that systemd shows as the service's status.

Taken from the store's records after each poll (a few milliseconds for 10,000 sessions),
so the metrics and the status line agree with what the supervisor remembers. Pure: the
records, the status classes and the time come in as arguments.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

import msgspec

from supervisor.domain.models import Phase, Record, StatusClass
from supervisor.domain.policy import StatusClasses
from supervisor.runtime.cycle import PollResult

RECOVERING = frozenset({Phase.UNHEALTHY, Phase.VERIFYING, Phase.STARTING})


class Census(msgspec.Struct, frozen=True):
    records: tuple[Record, ...]
    classes: StatusClasses
    by_class: dict[StatusClass, int]
    by_phase: dict[Phase, int]
    given_up: int  # sessions given up on (until seen healthy), whatever their phase now

    @classmethod
    def take(cls, records: Iterable[Record], classes: StatusClasses) -> Census:
        kept = tuple(records)
        by_class = Counter(cls.class_of(record, classes) for record in kept)
        by_phase = Counter(record.phase for record in kept)
        return cls(
            records=kept,
            classes=classes,
            by_class={klass: by_class.get(klass, 0) for klass in StatusClass},
            by_phase={phase: by_phase.get(phase, 0) for phase in Phase},
            given_up=sum(1 for record in kept if record.gave_up),
        )

    @staticmethod
    def class_of(record: Record, classes: StatusClasses) -> StatusClass:
        if not record.last_status:
            return StatusClass.UNKNOWN
        return classes.classify(record.last_status)

    @property
    def total(self) -> int:
        return len(self.records)

    @property
    def recovering(self) -> int:
        """Being restarted, verified or waiting for their next attempt (not given up)."""
        return sum(1 for r in self.records if r.phase in RECOVERING and not r.gave_up)

    def summary(self) -> str:
        """``12 sessions: 10 healthy, 1 recovering, 1 given up``."""
        parts = [f"{self.by_phase[Phase.HEALTHY]} healthy"]
        for count, label in (
            (self.recovering, "recovering"),
            (self.given_up, "given up"),
            (self.by_phase[Phase.NEEDS_PERSON], "need a person"),
            (self.by_phase[Phase.GONE], "gone"),
            (self.by_phase[Phase.UNKNOWN], "in an unknown status"),
        ):
            if count:
                parts.append(f"{count} {label}")
        noun = "session" if self.total == 1 else "sessions"
        return f"{self.total} {noun}: " + ", ".join(parts)


def poll_outcome(result: PollResult) -> str:
    """``ok``, ``failed (unreachable)``, ``skipped (key refused)`` or ``skipped (backing
    off)``."""
    if result.ok:
        return "ok"
    if result.skipped:
        return "skipped (backing off)" if result.skip_reason == "api_unavailable" else (
            "skipped (key refused)")
    return f"failed ({result.error.kind})" if result.error is not None else "failed"


def status_line(census: Census, result: PollResult, when: float) -> str:
    """``12 sessions: 10 healthy, 1 recovering, 1 given up; last poll 12:03:05Z ok``."""
    stamp = time.strftime("%H:%M:%SZ", time.gmtime(when))
    return f"{census.summary()}; last poll {stamp} {poll_outcome(result)}"
