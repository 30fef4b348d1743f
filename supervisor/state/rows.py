"""What the two SQL stores (``SqliteStore``, ``PostgresStore``) do the same way, written
once: the records read from their cache, a record put, the heartbeats, the open episodes
and the outage watch, the outbox's rows queued, read and counted, and the heartbeat and
outbox writes of one statement. Each store brings its connection (``_run``, ``_many``),
its driver's parameter mark (``MARK``), its transactions and how it keeps its cache fresh
(``_refresh``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

import msgspec

from supervisor.domain import episodes
from supervisor.domain.episodes import Episode, Pending, Transition
from supervisor.domain.models import Record
from supervisor.state.store import (
    EPISODE_COLUMNS,
    HEARTBEAT_COLUMNS,
    Heartbeat,
    Outage,
    episode_of,
    heartbeat_id,
    heartbeat_of,
    zero_counts,
)

__all__ = ["Row", "SqlRows"]


class Row(msgspec.Struct, frozen=True):
    """A record as the cache holds it: its version (for compare-and-set), when and by whom
    it was last written."""

    record: Record
    version: int
    updated_at: float
    writer: str


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...


class SqlRows:
    """The shared part of a SQL store (see the module)."""

    MARK: ClassVar[str]  # "?" for sqlite3, "%s" for psycopg
    schema_version: int
    writer: str
    _cache: dict[str, Row]
    _lock: AbstractContextManager[Any]

    # What each store brings.
    def _run(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        raise NotImplementedError

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """``sql`` (in this driver's mark) once for each of ``rows``."""
        raise NotImplementedError

    def _refresh(self) -> None:
        raise NotImplementedError

    def _write(self, record: Record) -> None:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _small_write(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _marked(self, sql: str) -> str:
        """``sql`` written with ``?`` for each parameter, in this driver's mark."""
        return sql if self.MARK == "?" else sql.replace("?", self.MARK)

    # ----------------------------------------------------------------- records

    def _row(self, session_id: str) -> Row | None:
        with self._lock:
            self._refresh()
            return self._cache.get(session_id)

    def get(self, session_id: str) -> Record | None:
        row = self._row(session_id)
        return None if row is None else row.record

    def records(self) -> Iterator[Record]:
        with self._lock:
            self._refresh()
            return iter([row.record for row in self._cache.values()])

    def updated_at(self, session_id: str) -> float | None:
        """When the record was last written (epoch seconds), by anyone."""
        row = self._row(session_id)
        return None if row is None else row.updated_at

    def written_elsewhere_at(self, session_id: str) -> float | None:
        row = self._row(session_id)
        if row is None or row.writer == self.writer:
            return None
        return row.updated_at

    def put(self, record: Record) -> None:
        with self.transaction():
            self._write(record)

    # -------------------------------------------------------------- heartbeats

    def heartbeats(self) -> list[Heartbeat]:
        if self.schema_version < 3:
            return []
        with self._lock:
            rows = self._run(
                f"SELECT {HEARTBEAT_COLUMNS} FROM heartbeats ORDER BY seen_at DESC"  # noqa: S608
            ).fetchall()
        return [heartbeat_of(row) for row in rows]

    def retire(self, kind: str, at: float) -> None:
        with self._small_write():
            self._run(self._marked("UPDATE heartbeats SET stopped_at = ? WHERE id = ?"),
                      (at, heartbeat_id(self.writer, kind)))

    def waiting(self, kind: str, until: float) -> None:
        with self._small_write():
            self._run(self._marked("UPDATE heartbeats SET waiting_until = ? WHERE id = ?"),
                      (until, heartbeat_id(self.writer, kind)))

    # ------------------------------------------------- alert episodes, the outbox

    def open_episodes(self) -> list[Episode]:
        if self.schema_version < 4:
            return []
        with self._lock:
            rows = self._run(f"SELECT {EPISODE_COLUMNS} FROM episodes"  # noqa: S608
                             " ORDER BY opened_at, id").fetchall()
        return [e for e in (episode_of(row) for row in rows) if e is not None]

    def open_counts(self) -> dict[episodes.Kind, int]:
        counts = zero_counts()
        if self.schema_version < 4:
            return counts
        with self._lock:
            rows = self._run("SELECT kind, count(*) FROM episodes GROUP BY kind").fetchall()
        for kind, count in rows:
            if kind in counts:
                counts[episodes.Kind(kind)] = int(count)
        return counts

    def _outage_row(self) -> Outage | None:
        if self.schema_version < 4:
            return None
        with self._lock:
            found = self._run(
                "SELECT since, failure FROM alert_watch WHERE name = 'api'").fetchone()
        return None if found is None else Outage(float(found[0]), str(found[1]))

    def outage(self, reached: bool | None, now: float, failure: str = "") -> Outage | None:
        # Read first: a poll that changes nothing (the usual one) writes nothing.
        found = self._outage_row()
        if reached is None or (found is None) == bool(reached):
            return found
        with self._small_write():
            if reached:
                self._run("DELETE FROM alert_watch WHERE name = 'api'")
            else:
                self._run(self._marked("INSERT INTO alert_watch (name, since, failure)"
                                       " VALUES ('api', ?, ?) ON CONFLICT (name) DO NOTHING"),
                          (now, failure))
        return self._outage_row()

    def enqueue(
        self, channels: Sequence[str], transitions: Sequence[Transition], now: float
    ) -> None:
        if not channels or not transitions:
            return
        rows = [(channel, msgspec.json.encode(t).decode(), now)
                for t in transitions for channel in channels]
        with self._small_write():
            self._many(self._marked("INSERT INTO outbox (channel, transition, created_at)"
                                    " VALUES (?, ?, ?)"), rows)

    def due(self, channel: str, now: float, limit: int) -> list[Pending]:
        if self.schema_version < 4 or limit <= 0:
            return []
        with self._lock:
            rows = self._run(self._marked(
                "SELECT id, channel, transition, created_at, attempts, next_try_at FROM outbox"
                " WHERE channel = ? AND next_try_at <= ? ORDER BY id LIMIT ?"),
                (channel, now, limit),
            ).fetchall()
        found: list[Pending] = []
        for row_id, row_channel, data, created_at, attempts, next_try_at in rows:
            try:
                transition = msgspec.json.decode(data, type=Transition)
            except msgspec.DecodeError:  # another version's kind: left for expire
                continue
            found.append(Pending(int(row_id), row_channel, transition, float(created_at),
                                 int(attempts), float(next_try_at)))
        return found

    def pending_count(self) -> int:
        if self.schema_version < 4:
            return 0
        with self._lock:
            return int(self._run("SELECT count(*) FROM outbox").fetchone()[0])

    def expire(self, created_before: float) -> int:
        with self._small_write():
            return int(self._run(self._marked("DELETE FROM outbox WHERE created_at < ?"),
                                 (created_before,)).rowcount)

    def trim(self, keep: int) -> int:
        with self._small_write():
            return int(self._run(self._marked(
                "DELETE FROM outbox WHERE id <= (SELECT id FROM outbox ORDER BY id DESC"
                " LIMIT 1 OFFSET ?)"), (max(0, keep),)).rowcount)
