"""The sessions as the status page shows them: the daemon's own records, read in memory.

The board reads what the running daemon holds (its store's records, which the SQLite
store serves from memory, and the operator holds) and shapes each session exactly as
``status --json`` does (``state.report.session_status``), each history row as
``history --json`` does (``history_item``): the JSON API is the same data in the same
shapes. It makes no API call and writes nothing.

The page is paged on the server: a view filters the records (by status class, by a
search in the name or id), sorts them (the ones needing attention first) and shapes only
the rows of the page asked for, so that the first view of 10,000 sessions stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

import msgspec

from supervisor.clock import Clock
from supervisor.domain.models import HistoryEntry, Phase, Record
from supervisor.domain.policy import StatusClasses
from supervisor.state.report import history_item, session_status
from supervisor.state.store import Hold

_T = TypeVar("_T")

PER_PAGE = 100
MAX_PER_PAGE = 1000
HISTORY_ROWS = 50

# The summary line: what each phase counts as, in the order shown.
GROUPS: tuple[tuple[str, str], ...] = (
    ("healthy", "healthy"),
    ("recovering", "recovering"),
    ("needs_person", "need a person"),
    ("gave_up", "given up"),
    ("gone", "gone"),
)
GROUP_OF = {
    Phase.HEALTHY: "healthy",
    Phase.STARTING: "recovering",
    Phase.UNHEALTHY: "recovering",
    Phase.VERIFYING: "recovering",
    Phase.UNKNOWN: "recovering",
    Phase.NEEDS_PERSON: "needs_person",
    Phase.GAVE_UP: "gave_up",
    Phase.GONE: "gone",
}
# Sorted first: what needs a person, then what was given up, gone, recovering, healthy.
_RANK = {"needs_person": 0, "gave_up": 1, "gone": 2, "recovering": 3, "healthy": 4}
CLASSES = ("healthy", "transitional", "restartable", "needs_person", "unknown")


class Source(Protocol):
    """What the board reads: the daemon's store (``SqliteStore``)."""

    def get(self, session_id: str) -> Record | None: ...

    def records(self) -> Iterable[Record]: ...

    def holds(self) -> dict[str, Hold]: ...

    def updated_at(self, session_id: str) -> float | None: ...

    def read_history(self, *, session_ids: Sequence[str] = (), since: float | None = None,
                     limit: int | None = None) -> list[HistoryEntry]: ...

    async def run(self, work: Callable[[], _T]) -> _T: ...


class View(msgspec.Struct, frozen=True):
    """One page of sessions: its rows (``status --json``'s shape), how many matched, the
    summary of every session (by group), and where the page is."""

    sessions: list[dict[str, Any]]
    matched: int
    total: int
    summary: dict[str, int]
    page: int
    pages: int
    per_page: int


def group(record: Record) -> str:
    """The summary group of a session: healthy, recovering, needs_person, gave_up, gone."""
    return GROUP_OF[record.phase]


class Board:
    def __init__(
        self,
        source: Callable[[], Source],
        classes: Callable[[], StatusClasses],
        clock: Clock,
        *,
        last_seen: Callable[[], float | None] = lambda: None,
    ) -> None:
        """``source``, ``classes``: the daemon's store and status classes now (a reload
        swaps them); ``last_seen``: when the daemon's last successful poll was."""
        self._source = source
        self._classes = classes
        self.clock = clock
        self._last_seen = last_seen

    def _shape(self, record: Record, holds: dict[str, Hold], now: float) -> dict[str, Any]:
        source = self._source()
        seen = None if record.phase is Phase.GONE else self._last_seen()
        return session_status(record, self._classes(), now, source.updated_at(record.session_id),
                              seen, hold=holds.get(record.session_id))

    def view(self, *, klass: str = "", query: str = "", page: int = 1,
             per_page: int | None = PER_PAGE) -> View:
        """The sessions matching ``klass`` (a status class; empty: all) and ``query`` (in the
        name or id, any case), needing attention first; page ``page`` of ``per_page`` (None:
        every match on one page)."""
        now = self.clock.now()
        source = self._source()
        classes = self._classes()
        records = list(source.records())
        counts = dict.fromkeys((name for name, _ in GROUPS), 0)
        for record in records:
            counts[group(record)] += 1
        needle = query.strip().lower()
        chosen = [
            r for r in records
            if (not klass or _class_of(r, classes) == klass)
            and (not needle or needle in r.session_id.lower()
                 or (r.name is not None and needle in r.name.lower()))
        ]
        chosen.sort(key=lambda r: (_RANK[group(r)], (r.name or "").lower(), r.session_id))
        size = (len(chosen) or 1) if per_page is None else max(1, min(per_page, MAX_PER_PAGE))
        pages = max(1, -(-len(chosen) // size))
        page = max(1, min(page, pages))
        shown = chosen[(page - 1) * size: page * size]
        holds = source.holds() if shown else {}
        return View([self._shape(r, holds, now) for r in shown], len(chosen), len(records),
                    counts, page, pages, size)

    def session(self, session_id: str) -> tuple[Record, dict[str, Any]] | None:
        """One session's record and its ``status --json`` shape, or None if unknown."""
        source = self._source()
        record = source.get(session_id)
        if record is None:
            return None
        return record, self._shape(record, source.holds(), self.clock.now())

    async def history(self, session_ids: Sequence[str] = (), *, since: float | None = None,
                      limit: int = HISTORY_ROWS) -> list[dict[str, Any]]:
        """The restart history, newest last, in ``history --json``'s shape (read on the
        store's worker thread)."""
        source = self._source()
        entries = await source.run(partial(source.read_history, session_ids=tuple(session_ids),
                                           since=since, limit=limit))
        return [history_item(entry) for entry in entries]


def _class_of(record: Record, classes: StatusClasses) -> str:
    return classes.classify(record.last_status).value if record.last_status else "unknown"
