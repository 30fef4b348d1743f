"""Where supervision records and the restart history are kept between polls.

``Store`` is what the cycle needs; two implementations:

* ``MemoryStore`` keeps them in a dict for the life of the process (unit tests);
* ``supervisor.sqlite_store.SqliteStore`` keeps them in one SQLite file that outlives the
  process and may be shared by several (a daemon and a ``check``); the default.

The cycle writes a record only when the decision core returned a different one, so a
store that writes to disk is touched only when something changed, never on every poll
of a healthy session. Writes are compare-and-set (``swap``): a record is replaced only
if it is still the one the decision was based on, so two processes never both claim the
same restart.

The cycle does its work with a store through ``run``: the SQLite store does it in a
thread of its own, where waiting for the file's lock (another process holds it for up to
the busy timeout) or for the disk cannot stall the event loop, and with it ``/livez``,
the watchdog and signal handling.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from supervisor.models import HistoryEntry, Record

MEMORY_HISTORY_ROWS = 10_000

_T = TypeVar("_T")


class StateError(Exception):
    """The state cannot be read or written: one line, naming the file and the problem."""


class Store(Protocol):
    def get(self, session_id: str) -> Record | None:
        """The record as stored now (another process may have written it)."""
        ...

    def put(self, record: Record) -> None:
        """Write ``record``, whatever is stored."""
        ...

    def delete(self, session_id: str) -> None: ...

    def records(self) -> Iterator[Record]: ...

    def swap(self, old: Record | None, new: Record | None) -> bool:
        """Compare-and-set: store ``new`` (None: delete) only if the stored record is
        still ``old`` (None: none). False, and nothing written, if it is not."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Everything inside is one atomic write that no other process interleaves with;
        reads inside see the latest committed records. May be nested."""
        ...

    def written_elsewhere_at(self, session_id: str) -> float | None:
        """When (epoch seconds) another process last wrote this record; None if this one
        did, or nobody."""
        ...

    def add_history(self, entries: Sequence[HistoryEntry]) -> None: ...

    async def run(self, work: Callable[[], _T]) -> _T:
        """Do ``work`` (reads and writes of this store) where blocking on the store does
        not block the event loop; one piece of work at a time."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """Records in a dict, the history in a bounded deque; one process only."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self.history: deque[HistoryEntry] = deque(maxlen=MEMORY_HISTORY_ROWS)

    def get(self, session_id: str) -> Record | None:
        return self._records.get(session_id)

    def put(self, record: Record) -> None:
        self._records[record.session_id] = record

    def delete(self, session_id: str) -> None:
        self._records.pop(session_id, None)

    def records(self) -> Iterator[Record]:
        return iter(list(self._records.values()))

    def swap(self, old: Record | None, new: Record | None) -> bool:
        either = new if new is not None else old
        if either is None:
            return True
        session_id = either.session_id
        if self._records.get(session_id) != old:
            return False
        if new is None:
            self._records.pop(session_id, None)
        else:
            self._records[session_id] = new
        return True

    def transaction(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def written_elsewhere_at(self, session_id: str) -> float | None:
        return None

    def add_history(self, entries: Sequence[HistoryEntry]) -> None:
        self.history.extend(entries)

    async def run(self, work: Callable[[], _T]) -> _T:
        return work()  # a dict never blocks

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._records)
