"""Where supervision records are kept between polls.

``MemoryStore`` keeps them in a dict for the life of the process. The cycle writes a
record only when the decision core returned a different one, so a store that writes to
disk is touched only when something changed, never on every poll of a healthy session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from supervisor.models import Record


class Store(Protocol):
    def get(self, session_id: str) -> Record | None: ...

    def put(self, record: Record) -> None: ...

    def delete(self, session_id: str) -> None: ...

    def records(self) -> Iterator[Record]: ...


class MemoryStore:
    def __init__(self) -> None:
        self._records: dict[str, Record] = {}

    def get(self, session_id: str) -> Record | None:
        return self._records.get(session_id)

    def put(self, record: Record) -> None:
        self._records[record.session_id] = record

    def delete(self, session_id: str) -> None:
        self._records.pop(session_id, None)

    def records(self) -> Iterator[Record]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)
