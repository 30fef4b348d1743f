"""Where supervision records and the restart history are kept between polls.

``Store`` is what the cycle needs; two implementations:

* ``MemoryStore`` keeps them in a dict for the life of the process (unit tests);
* ``supervisor.state.sqlite.SqliteStore`` keeps them in one SQLite file that outlives the
  process and may be shared by several (a daemon and a ``check``); the default.

The cycle writes a record only when the decision core returned a different one, so a
record is written only when something changed, never on every poll of a healthy session
(each poll writes one small heartbeat row, ``beat``, in the same transaction). Writes
are compare-and-set (``swap``): a record is replaced only if it is still the one the
decision was based on, so two processes never both claim the same restart.

The cycle does its work with a store through ``run``: the SQLite store does it in a
thread of its own, where waiting for the file's lock (another process holds it for up to
the busy timeout) or for the disk cannot stall the event loop, and with it ``/livez``,
the watchdog and signal handling.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec

from supervisor.domain.episodes import Change, Episode, Kind, Pending, Transition
from supervisor.domain.models import HistoryEntry, Record

MEMORY: Final = ":memory:"  # the state location that keeps the state in memory (no file)
DEFAULT_HISTORY_MAX_AGE: Final = 30 * 86400.0  # seconds a history row is kept
DEFAULT_HISTORY_MAX_ROWS: Final = 100_000  # history rows kept at most
MEMORY_HISTORY_ROWS = 10_000
PRUNE_EVERY: Final = 3600.0  # seconds between prunes of the history by age
HEARTBEAT_MAX_AGE: Final = 7 * 86400.0  # seconds a process's heartbeat row is kept unseen
HISTORY_COLUMNS: Final = (
    "at", "session_id", "event", "action", "attempt", "outcome", "reason", "status",
    "http_status", "duration_ms", "next_attempt_at",
)

_T = TypeVar("_T")


class StateError(Exception):
    """The state cannot be read or written: one line, naming the file and the problem."""


class Fenced(StateError):
    """This process may not act: it leads no longer (or not yet) among the replicas that
    share the state (``supervisor.runtime.leadership``). Nothing was written or sent."""


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

    # What the processes sharing the state share besides records: the rate gate of
    # each API key, and a heartbeat per process.

    def gate_row(self, key: str) -> GateRow | None:
        """The rate gate's shared row for this key fingerprint, as last committed (cheap:
        served from memory unless another process has written since)."""
        ...

    def update_gate_row(
        self, key: str, change: Callable[[GateRow | None], GateRow | None]
    ) -> GateRow | None:
        """Read-modify-write the gate row atomically (no other process interleaves):
        ``change`` gets the row as stored and returns the row to store (None: leave it).
        Returns the row as stored afterwards."""
        ...

    def beat(self, beat: Beat) -> None:
        """Record that this process polled (or tried to): its heartbeat row."""
        ...

    def heartbeats(self) -> list[Heartbeat]:
        """Every process's heartbeat row, most recently seen first."""
        ...

    def retire(self, kind: str, at: float) -> None:
        """This process of ``kind`` stopped cleanly at ``at``: its heartbeat says so."""
        ...

    def waiting(self, kind: str, until: float) -> None:
        """This process of ``kind`` waits out a ``Retry-After`` until ``until`` (epoch
        seconds) and will not beat before then: its heartbeat says so."""
        ...

    # Alerts: the open episodes, the outbox of transitions to deliver (the protocol
    # ``supervisor.alerts.outbox.Outbox``: ``run`` and the methods below ``enqueue``),
    # and since when polls have failed to reach the API.

    def open_episodes(self) -> list[Episode]:
        """The open alert episodes (of every process on the state), oldest first."""
        ...

    def open_counts(self) -> dict[Kind, int]:
        """How many episodes are open, per kind (every kind, 0 included)."""
        ...

    def apply_transitions(
        self, transitions: Sequence[Transition], channels: Sequence[str], now: float
    ) -> list[Transition]:
        """In one transaction: each opening whose kind and subject has no open episode
        opens it, each resolution of the episode open now (the same ``opened_at``)
        deletes it; what was applied is enqueued for every channel and returned. What
        another process (or an earlier ``check``) applied already is not news: left out."""
        ...

    def outage(self, reached: bool | None, now: float, failure: str = "") -> Outage | None:
        """This poll's word on the API: ``True`` it listed (the outage, if any, is over),
        ``False`` it could not reach it (an outage starts now unless one is on, seen by
        this or another process; ``failure`` its kind), ``None`` it cannot tell. The
        outage on afterwards (None: none)."""
        ...

    def enqueue(
        self, channels: Sequence[str], transitions: Sequence[Transition], now: float
    ) -> None:
        """One outbox row per channel and transition, due at once."""
        ...

    def due(self, channel: str, now: float, limit: int) -> list[Pending]:
        """The channel's rows due by ``now`` (``next_try_at <= now``), oldest first."""
        ...

    def claim(self, ids: Sequence[int], now: float, until: float) -> bool:
        """Take these rows for one send: if every one is still due at ``now``, move their
        ``next_try_at`` to ``until`` (in one write: no other process's claim between) and
        say True; else change none and say False (another sender has one)."""
        ...

    def delivered(self, ids: Sequence[int]) -> None:
        """These rows were delivered: gone from the outbox."""
        ...

    def retry(self, ids: Sequence[int], next_try_at: float) -> None:
        """These rows failed once more: ``attempts`` + 1, due again at ``next_try_at``."""
        ...

    def expire(self, created_before: float) -> int:
        """Drop the rows made before ``created_before``; how many were dropped."""
        ...

    def trim(self, keep: int) -> int:
        """Drop the oldest rows beyond the newest ``keep``; how many were dropped."""
        ...

    def pending_count(self) -> int:
        """Rows in the outbox, every channel's."""
        ...

    # Operator holds: sessions a person paused supervision of (``pause ID``, the page).
    # Not the API's ``Retry-After`` pause (the gate row's ``paused_until``).

    def holds(self) -> dict[str, Hold]:
        """The sessions on hold now, by id, as committed by any process (inside a
        ``transaction()``: the latest)."""
        ...

    def hold(self, h: Hold) -> None:
        """Put ``h.session_id`` on hold (replacing a hold it has)."""
        ...

    def fenced(self) -> None:
        """Inside a ``transaction()`` that claims a request (a restart, a stop): raise
        ``Fenced`` unless this process may still act, and keep it so until the commit: with
        replicas, the lease is still its own at the epoch it won (``state.lease.FENCE``).
        A store without replicas has nothing to check."""
        ...

    def release(self, session_id: str) -> Hold | None:
        """Take the session off hold; the hold it had (None: it had none)."""
        ...


class Hold(msgspec.Struct, frozen=True):
    """A person paused supervision of one session: every cycle (of any process on the
    state) observes and records it but leaves it alone until the hold is released.
    ``by`` is who paused it (the authenticated name, or the OS user); ``at`` when
    (epoch seconds)."""

    session_id: str
    by: str
    at: float


class Outage(msgspec.Struct, frozen=True):
    """Polls have failed to reach the API since ``since`` (epoch seconds); ``failure``
    is the kind of the first failure (``unreachable``, ``timeout``...)."""

    since: float
    failure: str = ""


def zero_counts() -> dict[Kind, int]:
    return dict.fromkeys(Kind, 0)


class MemoryStore:
    """Records in a dict, the history in a bounded deque; one process only."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self.history: deque[HistoryEntry] = deque(maxlen=MEMORY_HISTORY_ROWS)
        self._gate: dict[str, GateRow] = {}
        self._beats: dict[str, Heartbeat] = {}
        self._writer = f"{socket.gethostname()}:{os.getpid()}:memory"
        self._episodes: dict[tuple[Kind, str], Episode] = {}
        self._outbox: dict[int, Pending] = {}
        self._outbox_ids = 0
        self._outage: Outage | None = None
        self._holds: dict[str, Hold] = {}

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

    def gate_row(self, key: str) -> GateRow | None:
        return self._gate.get(key)

    def update_gate_row(
        self, key: str, change: Callable[[GateRow | None], GateRow | None]
    ) -> GateRow | None:
        new = change(self._gate.get(key))
        if new is not None:
            self._gate[key] = new
        return self._gate.get(key)

    def beat(self, beat: Beat) -> None:
        row_id = heartbeat_id(self._writer, beat.kind, beat.scope)
        self._beats[row_id] = next_heartbeat(self._beats.get(row_id), beat, row_id, self._writer)

    def heartbeats(self) -> list[Heartbeat]:
        return sorted(self._beats.values(), key=lambda h: h.seen_at, reverse=True)

    def retire(self, kind: str, at: float) -> None:
        row_id = heartbeat_id(self._writer, kind)
        known = self._beats.get(row_id)
        if known is not None:
            self._beats[row_id] = msgspec.structs.replace(known, stopped_at=at)

    def waiting(self, kind: str, until: float) -> None:
        row_id = heartbeat_id(self._writer, kind)
        known = self._beats.get(row_id)
        if known is not None:
            self._beats[row_id] = msgspec.structs.replace(known, waiting_until=until)

    def open_episodes(self) -> list[Episode]:
        return sorted(self._episodes.values(), key=lambda e: e.opened_at)

    def open_counts(self) -> dict[Kind, int]:
        counts = zero_counts()
        for kind, _ in self._episodes:
            counts[kind] += 1
        return counts

    def apply_transitions(
        self, transitions: Sequence[Transition], channels: Sequence[str], now: float
    ) -> list[Transition]:
        applied: list[Transition] = []
        for transition in transitions:
            episode = transition.episode
            known = self._episodes.get(episode.key)
            if transition.change is Change.OPENED and known is None:
                self._episodes[episode.key] = episode
            elif (
                transition.change is Change.RESOLVED
                and known is not None
                and known.opened_at == episode.opened_at
            ):
                del self._episodes[episode.key]
            else:
                continue
            applied.append(transition)
        self.enqueue(channels, applied, now)
        return applied

    def outage(self, reached: bool | None, now: float, failure: str = "") -> Outage | None:
        if reached:
            self._outage = None
        elif reached is not None and self._outage is None:
            self._outage = Outage(now, failure)
        return self._outage

    def enqueue(
        self, channels: Sequence[str], transitions: Sequence[Transition], now: float
    ) -> None:
        for transition in transitions:
            for channel in channels:
                self._outbox_ids += 1
                self._outbox[self._outbox_ids] = Pending(self._outbox_ids, channel,
                                                         transition, now)

    def due(self, channel: str, now: float, limit: int) -> list[Pending]:
        found = [p for p in self._outbox.values()
                 if p.channel == channel and p.next_try_at <= now]
        return found[: max(0, limit)]

    def claim(self, ids: Sequence[int], now: float, until: float) -> bool:
        rows = [self._outbox.get(row_id) for row_id in ids]
        if any(row is None or row.next_try_at > now for row in rows):
            return False
        for row in rows:
            if row is not None:
                self._outbox[row.id] = msgspec.structs.replace(row, next_try_at=until)
        return True

    def delivered(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            self._outbox.pop(row_id, None)

    def retry(self, ids: Sequence[int], next_try_at: float) -> None:
        for row_id in ids:
            row = self._outbox.get(row_id)
            if row is not None:
                self._outbox[row_id] = msgspec.structs.replace(
                    row, attempts=row.attempts + 1, next_try_at=next_try_at)

    def expire(self, created_before: float) -> int:
        old = [i for i, p in self._outbox.items() if p.created_at < created_before]
        self.delivered(old)
        return len(old)

    def trim(self, keep: int) -> int:
        extra = sorted(self._outbox)[: max(0, len(self._outbox) - max(0, keep))]
        self.delivered(extra)
        return len(extra)

    def pending_count(self) -> int:
        return len(self._outbox)

    def holds(self) -> dict[str, Hold]:
        return dict(self._holds)

    def hold(self, h: Hold) -> None:
        self._holds[h.session_id] = h

    def fenced(self) -> None:
        """One process's memory: no replicas, nothing to check."""

    def release(self, session_id: str) -> Hold | None:
        return self._holds.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._records)


# ------------------------------------------------------- gate rows and heartbeats


class GateRow(msgspec.Struct, frozen=True):
    """The rate gate's state shared by the processes on one API key (epoch seconds):
    every request waits until ``paused_until``; ``sends`` are the times of the most
    recent requests, newest last, for the shared budget."""

    paused_until: float = 0.0
    sends: tuple[float, ...] = ()


class Beat(msgspec.Struct, frozen=True):
    """What one poll of this process leaves in the heartbeat: ``kind`` is ``run`` or
    ``check``; ``listed`` whether it asked the API for the list, ``ok`` whether that
    worked; ``scope`` the configured sessions (empty: every session of the account)."""

    kind: str
    at: float
    listed: bool
    ok: bool
    poll_interval: float | None = None
    scope: tuple[str, ...] = ()


class Heartbeat(msgspec.Struct, frozen=True):
    """A process's heartbeat row: when it was last seen polling (``seen_at``), last
    asked the API (``last_poll_at``) and last listed successfully (``last_ok_at``)."""

    id: str
    kind: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    last_poll_at: float | None = None
    last_ok_at: float | None = None
    poll_interval: float | None = None
    scope: tuple[str, ...] = ()
    stopped_at: float | None = None  # it stopped cleanly then (None: running, or died)
    waiting_until: float | None = None  # it waits out a Retry-After until then


def heartbeat_id(writer: str, kind: str, scope: Sequence[str] = ()) -> str:
    """The row a process beats in: one per daemon (``run:host:pid:tag``); for ``check``,
    one per host and set of configured sessions (a check from a timer every few minutes
    would otherwise leave a row each, and checks of other sessions must not hide it)."""
    if kind == "check":
        host = writer.split(":", 1)[0]
        if not scope:
            return f"check:{host}"
        digest = hashlib.sha256("\n".join(sorted(scope)).encode()).hexdigest()[:8]
        return f"check:{host}:{digest}"
    return f"{kind}:{writer}"


def next_heartbeat(known: Heartbeat | None, beat: Beat, row_id: str, writer: str) -> Heartbeat:
    """The heartbeat row after ``beat`` (the one rule for every store)."""
    host, _, rest = writer.partition(":")
    pid_text = rest.partition(":")[0]
    pid = int(pid_text) if pid_text.isdigit() else 0
    fresh = known is None or known.kind != beat.kind or known.pid != pid
    return Heartbeat(
        id=row_id,
        kind=beat.kind,
        host=host,
        pid=pid,
        started_at=beat.at if fresh or known is None else known.started_at,
        seen_at=beat.at,
        last_poll_at=beat.at if beat.listed else (None if known is None else known.last_poll_at),
        last_ok_at=beat.at if beat.ok else (None if known is None else known.last_ok_at),
        poll_interval=beat.poll_interval,
        scope=beat.scope,
        stopped_at=None,
        waiting_until=None,
    )


# ------------------------------------------- rows as the stores on disk keep them
#
# What the SQLite and the PostgreSQL stores share: the writer's name, the columns of
# the history, heartbeats and episodes, and how a row of the gate, of the heartbeats
# and of the episodes is read back.

EPISODE_COLUMNS: Final = ", ".join(Episode.__struct_fields__)
HEARTBEAT_COLUMNS: Final = ", ".join(Heartbeat.__struct_fields__)
_SCOPE: Final = Heartbeat.__struct_fields__.index("scope")


def writer_id() -> str:
    """A store's name as a writer of records: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def gate_row_of(paused_until: float, sends: str) -> GateRow:
    """The gate row a stored row holds (``sends``: a JSON list of epoch seconds)."""
    try:
        times = tuple(float(t) for t in json.loads(sends))
    except (ValueError, TypeError):
        times = ()
    return GateRow(float(paused_until), times)


def heartbeat_of(row: Sequence[Any]) -> Heartbeat:
    """The heartbeat a stored row holds (columns ``HEARTBEAT_COLUMNS``; ``scope`` JSON)."""
    values = dict(zip(Heartbeat.__struct_fields__, row, strict=True))
    scope = values.pop("scope") or ""
    try:
        ids = tuple(str(s) for s in json.loads(scope)) if scope else ()
    except (ValueError, TypeError):
        ids = ()
    return Heartbeat(**values, scope=ids)


def heartbeat_values(beat: Heartbeat) -> list[Any]:
    """A heartbeat as the row's values, in ``HEARTBEAT_COLUMNS`` order."""
    values = [getattr(beat, name) for name in Heartbeat.__struct_fields__]
    values[_SCOPE] = json.dumps(list(beat.scope)) if beat.scope else ""
    return values


def episode_of(row: Sequence[Any]) -> Episode | None:
    """The episode a row holds (``EPISODE_COLUMNS``); None for a kind this version does
    not know."""
    try:
        return msgspec.convert(dict(zip(Episode.__struct_fields__, row, strict=True)),
                               type=Episode)
    except msgspec.ValidationError:
        return None


# ------------------------------------------------------- a PostgreSQL DSN (state_url)


def describe_dsn(url: str) -> str:
    """The database a DSN names, as it may be shown: scheme, host, port and database,
    never the user's password nor the query (``postgresql://db.example:5432/wasend``);
    ``postgresql://`` alone (libpq's ``PG*`` variables) says so."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "postgresql://(unreadable URL)"
    if ":" in host:
        host = f"[{host}]"
    where = host + (f":{port}" if port else "")
    database = unquote(parts.path.lstrip("/"))
    if not where and not database:
        return "postgresql:// (from the PG* environment variables)"
    return f"postgresql://{where}/{database}"


def db_problem(exc: BaseException, secrets: Iterable[str]) -> str:
    """One line about a database error, with none of ``secrets`` (the DSN, its password:
    ``dsn_secrets``) in it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "********")
    return text[:300]


def dsn_secrets(url: str) -> tuple[str, ...]:
    """What of a DSN must never be printed: the DSN itself and its password."""
    found = [url]
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            found += [password, unquote(password)]
    return tuple(dict.fromkeys(found))
