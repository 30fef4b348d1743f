"""The request log: every API request (admin requests excluded), bounded, with counters."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any, Final

DEFAULT_LOG_SIZE: Final = 100_000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request, logged when its answer was sent (or the client went away).

    ``wall`` and ``monotonic`` are the arrival times (``monotonic`` is the simulator's
    clock, :func:`time.monotonic` for a real server). ``status`` is None when the client
    went away before an answer (a hang). ``early`` is true when the request arrived before
    a ``Retry-After`` given earlier to its API key had passed. ``fault`` names the fault
    that shaped the answer (``auth``, ``early``, ``burst``, ``rate_limit``, ``outage``,
    ``server_error``, ``hang``, ``malformed_json``) or is None. ``seq`` counts from 1 in
    the order entries were logged.
    """

    seq: int
    wall: float
    monotonic: float
    method: str
    path: str
    kind: str
    session: str | None
    status: int | None
    early: bool
    fault: str | None
    duration: float
    agent: str = ""  # the request's User-Agent ("" when it sent none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """The last ``size`` records, and counters over every request since the last clear."""

    def __init__(self, size: int = DEFAULT_LOG_SIZE) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=size)
        self._seq = 0
        self._by_kind: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._by_fault: Counter[str] = Counter()
        self._early = 0

    def append(
        self,
        *,
        wall: float,
        monotonic: float,
        method: str,
        path: str,
        kind: str,
        session: str | None,
        status: int | None,
        early: bool,
        fault: str | None,
        duration: float,
        agent: str = "",
    ) -> RequestRecord:
        self._seq += 1
        record = RequestRecord(
            self._seq, wall, monotonic, method, path, kind, session, status, early, fault,
            duration, agent,
        )
        self._records.append(record)
        self._by_kind[kind] += 1
        self._by_status["none" if status is None else str(status)] += 1
        if fault is not None:
            self._by_fault[fault] += 1
        self._early += early
        return record

    def records(self, since: float | None = None, after: int | None = None) -> list[RequestRecord]:
        """Records that arrived at or after ``since`` (monotonic) and were logged after
        sequence number ``after``, oldest first."""
        return [
            r
            for r in self._records
            if (since is None or r.monotonic >= since) and (after is None or r.seq > after)
        ]

    def clear(self) -> None:
        """Forget the records and zero the counters (sequence numbers keep counting)."""
        self._records.clear()
        self._by_kind.clear()
        self._by_status.clear()
        self._by_fault.clear()
        self._early = 0

    def counters(self) -> dict[str, Any]:
        return {
            "requests": sum(self._by_kind.values()),
            "by_kind": dict(sorted(self._by_kind.items())),
            "by_status": dict(sorted(self._by_status.items())),
            "by_fault": dict(sorted(self._by_fault.items())),
            "rate_limited": self._by_status.get("429", 0),
            "early": self._early,
            "unanswered": self._by_status.get("none", 0),
            "logged": len(self._records),
            "last_seq": self._seq,
        }
