"""Supervision records and the restart history in one SQLite file: the default store.

Tables (schema version 5)::

    schema_migrations  version PK, applied_at, description     one row per applied migration
    records            session_id PK, data (the Record as JSON), version, updated_at, writer
    history            id PK, at, session_id, event, action, attempt, outcome, reason,
                       status, http_status, duration_ms, next_attempt_at   (append-only)
    gate               key PK (a fingerprint of the API key), paused_until, sends, updated_at
    heartbeats         id PK, kind, host, pid, started_at, seen_at, last_poll_at, last_ok_at,
                       poll_interval, scope, stopped_at, waiting_until   one per process
    episodes           id PK, kind, subject (UNIQUE together), opened_at, session_name,
                       status, detail                   the open alert episodes
    outbox             id PK, channel, transition (msgspec JSON), created_at, attempts,
                       next_try_at                      alerts waiting to be delivered
    alert_watch        name PK ('api'), since, failure  since when polls have failed
    holds              session_id PK, held_by, held_at  sessions a person paused (v5)

The connection uses WAL journaling (readers never block the writer), ``synchronous=FULL``
(a commit is on disk before it returns, so a restart recorded as in flight survives a
crash, a SIGKILL or a power cut), a busy timeout (a second process waits for the lock
rather than failing) and a journal size limit (the WAL is cut back to 1 MiB after each
checkpoint). The schema, its migrations and the records' JSON are in
``supervisor.state.schema``; the file as a file (whether it is ours, making it, holding
it, moving it aside) in ``supervisor.state.file``.

Several processes may share the file (a daemon and a ``check`` from a timer). Each
record row carries a ``version`` (incremented on every write), the time of the write
and the writer (host, pid and a random tag of the store that wrote it). Writes are
compare-and-set: ``swap(old, new)`` replaces the row only if it still holds ``old``
(``UPDATE ... WHERE session_id = ? AND version = ?``), inside ``BEGIN IMMEDIATE``, so
two processes never both claim the same restart. ``transaction()`` takes the write lock
and re-reads what other processes committed (``PRAGMA data_version`` says whether they
did), so a decision made inside it is made on the latest records.

Reads are served from an in-memory copy of the records, refreshed when another
connection has committed; on a poll where nothing changed a healthy supervisor reads no
record row and writes one: its heartbeat, in the poll's own transaction. ``run`` does a
piece of work with the store in the store's own thread, so that waiting for the file's
lock (or the disk) never stalls the event loop; a lock serialises every use of the
connection.

Bad files. Only a file that is ours is ever used, moved or written to (see
``state_file``); anything else at the path is a ``StateError`` with one line, and is left
as it was. A state file that fails ``PRAGMA quick_check`` (or is found corrupt while
running) is moved aside to ``<name>.corrupt-<UTC time>`` with its ``-wal`` and ``-shm``,
unless another process holds it, and ``state.corrupt_moved_aside`` is logged at error
level. Before each transaction the store checks that its path still names the file it
holds; if that file (or its ``-wal``) was deleted, moved, replaced, truncated or
overwritten, it logs ``state.file_replaced``, fails that write, and copies what the file
it held still has (read through its open connection: a deleted or renamed file stays
readable) and what it holds in memory into the file the path names now (made afresh if
there is none), then logs ``state.file_restored``. No row the old file still holds is
lost to that.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar
from urllib.parse import quote

import msgspec
import structlog

from supervisor.clock import Clock, SystemClock
from supervisor.domain import events as ev
from supervisor.domain.episodes import Change, Episode, Transition
from supervisor.domain.models import HistoryEntry, Record
from supervisor.state.file import (
    APPLICATION_ID,
    Held,
    Identity,
    Kind,
    create,
    move_aside,
    refusal,
)
from supervisor.state.rows import Row, SqlRows
from supervisor.state.schema import SCHEMA_VERSION, applied_versions, decode, encode, migrate
from supervisor.state.store import (
    DEFAULT_HISTORY_MAX_AGE,
    DEFAULT_HISTORY_MAX_ROWS,
    EPISODE_COLUMNS,
    HEARTBEAT_COLUMNS,
    HEARTBEAT_MAX_AGE,
    HISTORY_COLUMNS,
    MEMORY,
    PRUNE_EVERY,
    Beat,
    GateRow,
    Hold,
    StateError,
    gate_row_of,
    heartbeat_id,
    heartbeat_of,
    heartbeat_values,
    next_heartbeat,
    writer_id,
)

log = structlog.get_logger("supervisor.state")

DEFAULT_BUSY_TIMEOUT: Final = 10.0
WAL_SIZE_LIMIT: Final = 1024 * 1024  # bytes the write-ahead log is cut back to after a checkpoint

_T = TypeVar("_T")

# The held file is no longer at its path, or was emptied: its -wal and -shm there must
# not outlive it (a database made at the path would read them as its own).
_GONE: Final = frozenset({"deleted", "moved", "replaced", "truncated"})


# ------------------------------------------------------------------------- errors


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


class _Corrupt(Exception):
    """The file is not a usable database; the message says why. ``ours``: it is known
    to be a state file (its header or its tables say so)."""

    def __init__(self, problem: str, *, ours: bool) -> None:
        super().__init__(problem)
        self.ours = ours


def _problem(exc: sqlite3.Error) -> str:
    """One line about an SQLite error: its message, without anything else."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _describe(path: Path, exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_READONLY"):
        return f"{path} is read-only ({_problem(exc)})"
    if name.startswith("SQLITE_BUSY") or "locked" in str(exc):
        return f"{path} is locked by another process ({_problem(exc)})"
    return f"cannot use {path}: {_problem(exc)}"


def _prepare_directory(path: Path) -> None:
    if path.is_dir():
        raise StateError(f"{path} is a directory; state_path names a file")
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise StateError(f"{directory} exists and is not a directory") from None
    except OSError as exc:
        raise StateError(
            f"cannot create directory {directory}: {exc.strerror or type(exc).__name__}"
        ) from None
    if not directory.is_dir():
        raise StateError(f"{directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateError(f"directory {directory} is not writable")


# ------------------------------------------------------------------ opening a file


def _initialise(file: Path, clock: Clock, named: Path) -> None:
    """Make ``file`` (new, empty) a state file: our id, the schema, WAL journaling."""
    conn = sqlite3.connect(file, isolation_level=None)
    try:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        migrate(conn, clock.now())
        conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.Error as exc:
        raise StateError(_describe(named, exc)) from None
    finally:
        conn.close()


def _probe(file: Path) -> None:
    """Whether an SQLite file without our id is a state file made before the id was
    written (its tables say so), looked at read-only so that nothing in it changes.
    Raises StateError (somebody else's database) or _Corrupt (cannot be told)."""
    uri = f"file:{quote(str(file.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StateError(_describe(file, exc)) from None
    try:
        if not applied_versions(conn):
            raise StateError("is an SQLite database but not a wasend-supervisor state file"
                             " (it has no tables)")
    except sqlite3.DatabaseError as exc:
        if _is_corrupt(exc):
            raise _Corrupt(_problem(exc), ours=False) from None
        raise StateError(_describe(file, exc)) from None
    except StateError as exc:
        raise StateError(f"{file} {exc}; it was left as it was") from None
    finally:
        conn.close()


def _connect(file: Path, clock: Clock, busy_timeout: float) -> tuple[sqlite3.Connection, int]:
    """The read-write connection to a file known to be ours, checked and migrated."""
    try:
        conn = sqlite3.connect(
            file, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StateError(_describe(file, exc)) from None
    try:
        checked = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if checked != ["ok"]:
            raise _Corrupt("; ".join(str(c) for c in checked)[:200], ours=True)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        version = migrate(conn, clock.now())
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # a file made before it
    except sqlite3.DatabaseError as exc:
        conn.close()
        if _is_corrupt(exc):
            raise _Corrupt(_problem(exc), ours=True) from None
        raise StateError(_describe(file, exc)) from None
    except StateError as exc:
        conn.close()
        raise StateError(f"{file} {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn, version


def _attach(
    file: Path, clock: Clock, busy_timeout: float, *, known: Identity | None = None,
) -> tuple[sqlite3.Connection, int, Held]:
    """Hold and open the state file ``file`` names, making one if there is none.

    ``known``: the file this process held at that path until it found it corrupt or
    emptied; that file is ours whatever its bytes say now. A file that is not ours is
    refused (StateError) and left as it was; a corrupt one of ours is moved aside,
    unless another process holds it.
    """
    for _ in range(6):
        try:
            held = Held.open(file, wait=busy_timeout)
        except FileNotFoundError:
            create(file, lambda new: _initialise(new, clock, file))
            continue
        try:
            ours = held.identity == known
            kind, application_id = held.kind()
            if kind is Kind.EMPTY and ours:  # emptied under us: nothing in it to keep
                create(file, lambda new: _initialise(new, clock, file), over=held.identity)
                held.release()
                continue
            if kind in (Kind.EMPTY, Kind.NOT_SQLITE, Kind.FOREIGN):
                if not ours:
                    raise StateError(refusal(file, kind, application_id))
                raise _Corrupt(f"its header was overwritten ({kind.value})", ours=True)
            if kind is Kind.UNMARKED:
                _probe(file)
            conn, version = _connect(file, clock, busy_timeout)
        except _Corrupt as exc:
            if not (exc.ours or ours):
                held.release()
                raise StateError(f"{file} is damaged and cannot be told to be a state file"
                                 f" ({exc}); it was left as it was") from None
            if not held.alone():
                held.release()
                raise StateError(f"{file} is corrupt ({exc}) but in use by another process;"
                                 " it was not moved aside") from None
            try:
                moved = move_aside(held, clock.now())
            finally:
                held.release()
            log.error(
                ev.STATE_CORRUPT_MOVED_ASIDE,
                path=str(file),
                moved_to=str(moved),
                problem=str(exc),
                action="started a fresh state file from what this process held" if known
                else "started a fresh state file; backoff and history were lost",
            )
            continue
        except BaseException:
            held.release()
            raise
        held.note_side_files()
        return conn, version, held
    raise StateError(f"{file} keeps changing under this process")


# -------------------------------------------------------------------------- store



class _Lost(msgspec.Struct):
    """What the file this process held still had, kept until the path can be used."""

    known: Identity
    records: list[tuple[str, str, float, str]]  # session_id, data, updated_at, writer
    history: list[tuple[Any, ...]]  # HISTORY_COLUMNS, oldest first
    # The alert tables' rows (schema version 4): open episodes, the outbox, the watch.
    alerts: dict[str, list[tuple[Any, ...]]] = msgspec.field(default_factory=dict)


_UPSERT = (
    "INSERT INTO records (session_id, data, version, updated_at, writer) VALUES (?, ?, 1, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET data = excluded.data,"
    " version = records.version + 1, updated_at = excluded.updated_at, writer = excluded.writer"
    " RETURNING version"
)
_HISTORY_INSERT: Final = (
    f"INSERT INTO history ({', '.join(HISTORY_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join('?' for _ in HISTORY_COLUMNS)})"
)


class SqliteStore(SqlRows):
    """The ``Store`` in an SQLite file (or ``:memory:``). Build it with ``open``."""

    MARK = "?"

    def __init__(
        self,
        conn: sqlite3.Connection,
        location: str,
        *,
        clock: Clock,
        schema_version: int,
        history_max_age: float = DEFAULT_HISTORY_MAX_AGE,
        history_max_rows: int = DEFAULT_HISTORY_MAX_ROWS,
        readonly: bool = False,
        writer: str | None = None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        held: Held | None = None,
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._held = held
        self.location = location
        self.schema_version = schema_version
        self.readonly = readonly
        self.writer = writer or writer_id()
        self.history_max_age = history_max_age
        self.history_max_rows = history_max_rows
        self._clock = clock
        self._cache: dict[str, Row] = {}
        self._data_version: int | None = None
        self._depth = 0
        self._added_since_prune = 0
        self._pruned_at = -math.inf
        self._closed = False
        self._busy_timeout = busy_timeout
        self._lost: _Lost | None = None  # the file held was lost; this waits to be copied
        self._lock = threading.RLock()  # one user of the connection at a time
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"<SqliteStore {self.location} v{self.schema_version}>"

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        clock: Clock | None = None,
        history_max_age: float = DEFAULT_HISTORY_MAX_AGE,
        history_max_rows: int = DEFAULT_HISTORY_MAX_ROWS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> SqliteStore:
        """Open (making it if there is none) and migrate the state file; ``:memory:``
        touches no disk.

        A corrupt state file is moved aside and a fresh one started (logged at error
        level). Raises StateError, with a one-line message, when the file cannot be used
        or is not a state file (left as it was, then).
        """
        clock = clock or SystemClock()
        location = str(path)
        options: dict[str, Any] = {
            "clock": clock,
            "history_max_age": history_max_age,
            "history_max_rows": history_max_rows,
            "busy_timeout": busy_timeout,
        }
        if location == MEMORY:
            conn = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
            version = migrate(conn, clock.now())
            store = cls(conn, MEMORY, schema_version=version, **options)._loaded()
            log.debug(ev.STATE_OPENED, path=MEMORY, schema_version=version)
            return store
        file = Path(location)
        _prepare_directory(file)
        conn, version, held = _attach(file, clock, busy_timeout)
        store = cls(conn, str(file), schema_version=version, held=held, **options)._loaded()
        store.prune()
        log.info(ev.STATE_OPENED, path=str(file), schema_version=version,
                 records=len(store._cache), history_rows=store.history_count())
        return store

    @classmethod
    def open_readonly(cls, path: str | Path, *, clock: Clock | None = None) -> SqliteStore:
        """Open an existing state file for reading only (``status``, ``history``): nothing
        is created, migrated, moved or deleted, and a file that is not a state file is
        not opened with SQLite at all. Raises FileNotFoundError or StateError."""
        file = Path(path)
        if not file.exists():
            raise FileNotFoundError(str(file))
        if file.is_dir():
            raise StateError(f"{file} is a directory; state_path names a file")
        held = Held.open(file, wait=DEFAULT_BUSY_TIMEOUT)
        try:
            kind, application_id = held.kind()
            if kind in (Kind.EMPTY, Kind.NOT_SQLITE, Kind.FOREIGN):
                # Never an SQLite connection to an empty file: opening one deletes the
                # -wal beside it, which may be a running daemon's.
                raise StateError(refusal(file, kind, application_id))
            if kind is Kind.UNMARKED:
                _probe(file)
            uri = f"file:{quote(str(file.resolve()))}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            held.release()
            raise StateError(_describe(file, exc)) from None
        except _Corrupt as exc:
            held.release()
            raise StateError(f"{file} is corrupt: {exc}") from None
        except BaseException:
            held.release()
            raise
        try:
            done = applied_versions(conn)
            version = max(done, default=0)
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"has schema version {version}, newer than this supervisor knows "
                    f"({SCHEMA_VERSION})"
                )
            store = cls(conn, str(file), clock=clock or SystemClock(), schema_version=version,
                        readonly=True, held=held)
            return store._loaded()
        except sqlite3.DatabaseError as exc:
            conn.close()
            held.release()
            what = "is corrupt" if _is_corrupt(exc) else "cannot be read"
            raise StateError(f"{file} {what}: {_problem(exc)}") from None
        except StateError as exc:
            conn.close()
            held.release()
            raise StateError(f"{file} {exc}") from None

    def _loaded(self) -> SqliteStore:
        if self.schema_version > 0:
            self._reload()
        return self

    def close(self) -> None:
        """Close the file. What was read stays readable (from memory); writes fail."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
        with self._lock:
            if self._closed:
                return
            if self._lost is not None:  # a last try to keep what the lost file had
                with contextlib.suppress(StateError):
                    self._reattach()
                self._lost = None  # each poll said why it could not (state.unavailable)
            self._closed = True
            self._detach()

    def _detach(self) -> None:
        """Close the connection and let go of the file. If the path names another file
        now (or the held one emptied), closing touches no file by name."""
        conn, held = self._conn, self._held
        self._conn = self._held = None
        if held is not None and held.problem() is not None:
            held.quiet()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if held is not None:
            held.release()

    async def run(self, work: Callable[[], _T]) -> _T:
        """Do ``work`` (which uses this store) in the store's own thread, one piece of
        work at a time, so that waiting for the file's lock, or for the disk, does not
        stall the event loop. ``:memory:`` never waits: its work is done at once."""
        if self._held is None and self._lost is None:
            return work()
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="state")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, contextvars.copy_context().run, work)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._closed:
                raise StateError(f"cannot use {self.location}: it was closed")
            raise StateError(f"cannot use {self.location} until the file its path names"
                             " can be used")
        return self._conn

    # ------------------------------------------------------------- the cache

    def _reload(self) -> None:
        """Re-read the rows other connections changed (all of them, cheaply compared)."""
        if self.schema_version == 0:
            return
        conn = self._db()
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        writer = "writer" if self.schema_version >= 2 else "''"
        rows = conn.execute(
            f"SELECT session_id, version, updated_at, {writer}, data FROM records"  # noqa: S608
        ).fetchall()
        fresh: dict[str, Row] = {}
        for session_id, version, updated_at, row_writer, data in rows:
            known = self._cache.get(session_id)
            if known is not None and (known.version, known.updated_at, known.writer) == (
                version, updated_at, row_writer
            ):
                fresh[session_id] = known
                continue
            try:
                record = decode(session_id, data)
            except (ValueError, TypeError) as exc:
                log.warning(ev.STATE_RECORD_UNREADABLE, session_id=session_id,
                            problem=str(exc)[:200])
                continue
            fresh[session_id] = Row(record, version, updated_at, row_writer)
        self._cache = fresh

    def _refresh(self) -> None:
        """Make the cache current, unless inside a transaction (it is, then)."""
        if self._depth or self.schema_version == 0 or self._conn is None:
            return
        try:
            self._reload_if_changed()
        except sqlite3.Error as exc:
            self._fail(exc)

    # ----------------------------------------------------------- transactions

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._lock:
            self._check_file()
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._reload_if_changed()
            except sqlite3.Error as exc:
                self._abort()
                self._fail(exc)
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._abort()
                raise
            self._depth = 0
            try:
                self._db().execute("COMMIT")
            except sqlite3.Error as exc:
                self._abort()
                self._fail(exc)

    def _reload_if_changed(self) -> None:
        """Re-read the records if another connection has committed since they were read."""
        version = self._db().execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._reload()

    def _check_file(self) -> None:
        """Before a transaction: make sure the path still names the file held. If not,
        say so, fail this write, and copy what that file had into the one it names now."""
        if self._closed:
            raise StateError(f"cannot use {self.location}: it was closed")
        if self._lost is not None:
            self._reattach()  # the path could not be used last time: try again
            return
        found = None if self._held is None or self.readonly else self._held.problem()
        if found is None:
            return
        named, problem = found
        log.error(ev.STATE_FILE_REPLACED, path=str(named), problem=problem,
                  action="copying what this process holds into the file the path names now")
        self._lose()
        raise StateError(f"{named} was {problem} while this process was using it; "
                         f"{self._try_reattach()}; this write was not made")

    def _fail(self, exc: sqlite3.Error) -> NoReturn:
        """Raise the StateError for ``exc``. A state file found corrupt while running is
        first moved aside (unless another process holds it) and started afresh from what
        this process holds, so the next poll works again."""
        path = Path(self.location)
        if (
            not isinstance(exc, sqlite3.DatabaseError)
            or not _is_corrupt(exc)
            or self._held is None
            or self.readonly
        ):
            raise StateError(_describe(path, exc)) from None
        self._lose()
        raise StateError(f"{path} was found corrupt ({_problem(exc)}); "
                         f"{self._try_reattach()}; this write was not made") from None

    def _lose(self) -> None:
        """Stop using the file held: keep what it still has (read through the open
        connection, which a deleted or renamed file leaves readable) and what is in
        memory, for the file the path names next."""
        conn, held = self._conn, self._held
        assert conn is not None
        assert held is not None
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._reload()  # forget what the cache learnt from the writes rolled back
        records: list[tuple[str, str, float, str]] = []
        history: list[tuple[Any, ...]] = []
        with contextlib.suppress(sqlite3.Error):
            records = conn.execute(
                "SELECT session_id, data, updated_at, writer FROM records").fetchall()
        with contextlib.suppress(sqlite3.Error):
            history = conn.execute(
                f"SELECT {', '.join(HISTORY_COLUMNS)} FROM history ORDER BY id"  # noqa: S608
            ).fetchall()
        have = {row[0] for row in records}
        records += [(session_id, encode(row.record), row.updated_at, row.writer)
                    for session_id, row in self._cache.items() if session_id not in have]
        alerts: dict[str, list[tuple[Any, ...]]] = {}
        for table, columns in _ALERT_TABLES.items():
            with contextlib.suppress(sqlite3.Error):
                alerts[table] = conn.execute(
                    f"SELECT {columns} FROM {table} ORDER BY rowid"  # noqa: S608
                ).fetchall()
        self._lost = _Lost(held.identity, records, history, alerts)
        found = held.problem()
        self._detach()
        if found is not None and found[0] == held.path and found[1] in _GONE:
            held.drop_stale_side_files()

    def _try_reattach(self) -> str:
        try:
            copied = self._reattach()
        except StateError as exc:
            return f"{exc}; what it had is kept in memory until the path can be used"
        return f"what it had was copied into {self.location} ({copied})"

    def _reattach(self) -> str:
        """Open the file the path names now and copy what was lost into it: records
        written later than the one there, history rows it does not have."""
        lost = self._lost
        assert lost is not None
        file = Path(self.location)
        conn, version, held = _attach(file, self._clock, self._busy_timeout, known=lost.known)
        try:
            records, rows = _merge(conn, lost)
        except sqlite3.Error as exc:
            held.quiet()
            conn.close()
            held.release()
            raise StateError(_describe(file, exc)) from None
        self._conn, self._held, self.schema_version = conn, held, version
        self._lost = None
        self._cache, self._data_version = {}, None
        self._reload()
        log.warning(ev.STATE_FILE_RESTORED, path=str(file), records=records, history_rows=rows)
        return f"{records} records and {rows} history rows"

    def _abort(self) -> None:
        """Roll back, and forget what the cache learnt from the writes rolled back."""
        conn = self._conn
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error, StateError):
            self._reload()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db().execute(sql, params)
        except sqlite3.Error as exc:
            self._fail(exc)


    # ----------------------------------------------------------------- records

    def delete(self, session_id: str) -> None:
        with self.transaction():
            self._run("DELETE FROM records WHERE session_id = ?", (session_id,))
            self._cache.pop(session_id, None)

    def swap(self, old: Record | None, new: Record | None) -> bool:
        either = new if new is not None else old
        if either is None:
            return True
        session_id = either.session_id
        with self.transaction():
            row = self._cache.get(session_id)
            if (None if row is None else row.record) != old:
                return False
            if row is None:
                assert new is not None
                self._write(new)
                return True
            if new is None:
                done = self._run(
                    "DELETE FROM records WHERE session_id = ? AND version = ?",
                    (session_id, row.version),
                ).rowcount
                if done == 1:
                    self._cache.pop(session_id, None)
                return done == 1
            now = self._clock.now()
            done = self._run(
                "UPDATE records SET data = ?, version = version + 1, updated_at = ?, writer = ?"
                " WHERE session_id = ? AND version = ?",
                (encode(new), now, self.writer, session_id, row.version),
            ).rowcount
            if done == 1:
                self._cache[session_id] = Row(new, row.version + 1, now, self.writer)
            return done == 1

    def _write(self, record: Record) -> None:
        now = self._clock.now()
        (version,) = self._run(
            _UPSERT, (record.session_id, encode(record), now, self.writer)
        ).fetchone()
        self._cache[record.session_id] = Row(record, version, now, self.writer)

    # ------------------------------------------------------------------ history

    def add_history(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        rows = [tuple(getattr(e, c) for c in HISTORY_COLUMNS) for e in entries]
        with self.transaction():
            try:
                self._db().executemany(_HISTORY_INSERT, rows)
            except sqlite3.Error as exc:
                self._fail(exc)
            self._added_since_prune += len(rows)
            if (
                self._added_since_prune >= max(100, self.history_max_rows // 10)
                or self._clock.now() - self._pruned_at >= PRUNE_EVERY
            ):
                self.prune()

    def prune(self) -> int:
        """Drop history rows older than ``history_max_age`` and beyond the newest
        ``history_max_rows``; the number dropped. Runs by itself every ``PRUNE_EVERY``
        seconds, and whenever a tenth of ``history_max_rows`` rows were added."""
        now = self._clock.now()
        with self.transaction():
            dropped = self._run(
                "DELETE FROM history WHERE at < ?", (now - self.history_max_age,)
            ).rowcount
            dropped += self._run(
                "DELETE FROM history WHERE id <= (SELECT id FROM history ORDER BY id DESC"
                " LIMIT 1 OFFSET ?)",
                (self.history_max_rows,),
            ).rowcount
        self._added_since_prune = 0
        self._pruned_at = now
        if dropped:
            log.debug(ev.STATE_HISTORY_PRUNED, rows=dropped)
        return dropped

    def read_history(
        self,
        *,
        session_ids: Sequence[str] = (),
        since: float | None = None,
        limit: int | None = None,
    ) -> list[HistoryEntry]:
        """History rows, oldest first: of these sessions (all if none), at or after
        ``since``, the last ``limit`` of them."""
        with self._lock:
            return self._read_history(session_ids, since, limit)

    def _read_history(
        self, session_ids: Sequence[str], since: float | None, limit: int | None,
    ) -> list[HistoryEntry]:
        if self.schema_version == 0:
            return []
        where: list[str] = []
        params: list[Any] = []
        if session_ids:
            where.append(f"session_id IN ({', '.join('?' for _ in session_ids)})")
            params.extend(session_ids)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        sql = "SELECT * FROM history"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        cursor = self._run(sql, params)
        names = [d[0] for d in cursor.description]
        found: list[HistoryEntry] = []
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            found.append(HistoryEntry(
                at=row["at"], session_id=row["session_id"], event=row["event"],
                action=row.get("action"), attempt=row.get("attempt"),
                outcome=row.get("outcome"), reason=row.get("reason"), status=row.get("status"),
                http_status=row.get("http_status"), duration_ms=row.get("duration_ms"),
                next_attempt_at=row.get("next_attempt_at"),
            ))
        found.reverse()
        return found

    def history_count(self) -> int:
        if self.schema_version == 0:
            return 0
        with self._lock:
            return int(self._run("SELECT count(*) FROM history").fetchone()[0])
    # ------------------------------------------- the shared rate gate, heartbeats
    #
    # Schema version 3 adds two small tables: ``gate`` (one row per API key fingerprint:
    # the pause every process honours, and the send times of the shared budget) and
    # ``heartbeats`` (one row per daemon, one per host for ``check``). Their writes take
    # the write lock for one or two statements and leave the records' cache alone: a
    # write here does not make this process re-read the records.

    _gate_rows: dict[str, GateRow] | None = None
    _gate_seen: tuple[int, int] | None = None  # (connection, data_version) when read
    _beats_pruned: bool = False

    def gate_row(self, key: str) -> GateRow | None:
        if self.schema_version < 3:
            return None
        with self._lock:
            if self._closed or self._conn is None:
                return None if self._gate_rows is None else self._gate_rows.get(key)
            conn = self._conn
            try:
                (version,) = conn.execute("PRAGMA data_version").fetchone()
                seen = (id(conn), version)
                if self._gate_rows is None or seen != self._gate_seen:
                    rows = conn.execute("SELECT key, paused_until, sends FROM gate").fetchall()
                    self._gate_rows = {k: gate_row_of(p, s) for k, p, s in rows}
                    self._gate_seen = seen
            except sqlite3.Error as exc:
                self._fail(exc)
            return self._gate_rows.get(key)

    def update_gate_row(
        self, key: str, change: Callable[[GateRow | None], GateRow | None]
    ) -> GateRow | None:
        with self._small_write():
            found = self._run(
                "SELECT paused_until, sends FROM gate WHERE key = ?", (key,)
            ).fetchone()
            row = None if found is None else gate_row_of(*found)
            new = change(row)
            if new is None or new == row:
                return row
            self._run(
                "INSERT INTO gate (key, paused_until, sends, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET paused_until = excluded.paused_until,"
                " sends = excluded.sends, updated_at = excluded.updated_at",
                (key, new.paused_until, json.dumps(list(new.sends)), self._clock.now()),
            )
        if self._gate_rows is not None:
            self._gate_rows[key] = new
        return new

    def beat(self, beat: Beat) -> None:
        row_id = heartbeat_id(self.writer, beat.kind, beat.scope)
        with self._small_write():
            if not self._beats_pruned:
                self._run("DELETE FROM heartbeats WHERE seen_at < ?",
                          (beat.at - HEARTBEAT_MAX_AGE,))
                self._beats_pruned = True
            found = self._run(
                f"SELECT {HEARTBEAT_COLUMNS} FROM heartbeats WHERE id = ?",  # noqa: S608
                (row_id,),
            ).fetchone()
            known = None if found is None else heartbeat_of(found)
            new = next_heartbeat(known, beat, row_id, self.writer)
            values = heartbeat_values(new)
            self._run(
                f"INSERT OR REPLACE INTO heartbeats ({HEARTBEAT_COLUMNS})"  # noqa: S608
                f" VALUES ({', '.join('?' for _ in values)})",
                values,
            )

    def paused_until(self) -> float | None:
        """The latest ``Retry-After`` pause stored for any key (epoch seconds), or None."""
        if self.schema_version < 3:
            return None
        with self._lock:
            (latest,) = self._run("SELECT max(paused_until) FROM gate").fetchone()
        return None if latest is None else float(latest)

    def last_writes(self) -> dict[str, float]:
        """When each writer (host, pid and tag) last wrote a record (epoch seconds): a
        daemon busy restarting for longer than its heartbeat allows is seen at work."""
        with self._lock:
            self._refresh()
        found: dict[str, float] = {}
        for row in self._cache.values():
            if row.updated_at > found.get(row.writer, -math.inf):
                found[row.writer] = row.updated_at
        return found

    @contextlib.contextmanager
    def _small_write(self) -> Iterator[None]:
        """A write transaction for the gate or a heartbeat. Unlike ``transaction()`` it
        does not re-read the records other processes changed (the next read of a
        record still does), so that a request's budget write stays a few statements. Like
        ``transaction()``, it holds the connection's lock and first checks that the path
        still names the file held."""
        with self._lock:
            if self._depth:
                yield
                return
            self._check_file()  # and, after a lost file, make the one the path names
            if self._db().in_transaction:
                yield
                return
            self._run("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._abort()
                raise
            try:
                self._db().execute("COMMIT")
            except sqlite3.Error as exc:
                self._abort()
                self._fail(exc)

    # ------------------------------------------------- alert episodes, the outbox
    #
    # Schema version 4 adds ``episodes`` (the open ones, at most one per kind and
    # subject: a UNIQUE index, so that of two processes applying the same opening one
    # wins), ``outbox`` and ``alert_watch``. Like the gate's, their writes leave the
    # records' cache alone; ``apply_transitions`` is one transaction with its enqueueing.

    def apply_transitions(
        self, transitions: Sequence[Transition], channels: Sequence[str], now: float
    ) -> list[Transition]:
        applied: list[Transition] = []
        with self.transaction():
            for transition in transitions:
                episode = transition.episode
                if transition.change is Change.OPENED:
                    done = self._run(
                        f"INSERT INTO episodes ({EPISODE_COLUMNS})"  # noqa: S608
                        f" VALUES ({', '.join('?' for _ in Episode.__struct_fields__)})"
                        " ON CONFLICT (kind, subject) DO NOTHING",
                        [getattr(episode, name) for name in Episode.__struct_fields__],
                    ).rowcount
                else:
                    done = self._run(
                        "DELETE FROM episodes WHERE kind = ? AND subject = ? AND opened_at = ?",
                        (episode.kind.value, episode.subject, episode.opened_at),
                    ).rowcount
                if done == 1:
                    applied.append(transition)
            self.enqueue(channels, applied, now)
        return applied

    def claim(self, ids: Sequence[int], now: float, until: float) -> bool:
        # One write transaction (BEGIN IMMEDIATE): no other process's claim comes between
        # the look and the mark. All or nothing: a group is sent whole or not at all.
        if not ids:
            return True
        with self._small_write():
            try:
                db = self._db()
                db.execute("CREATE TEMP TABLE IF NOT EXISTS claiming (id INTEGER PRIMARY KEY)")
                db.execute("DELETE FROM claiming")
                db.executemany("INSERT OR IGNORE INTO claiming (id) VALUES (?)",
                               [(i,) for i in ids])
                free = db.execute(
                    "SELECT count(*) FROM outbox WHERE id IN (SELECT id FROM claiming)"
                    " AND next_try_at <= ?", (now,)).fetchone()[0]
                if free != len(set(ids)):
                    return False
                db.execute("UPDATE outbox SET next_try_at = ? WHERE id IN"
                           " (SELECT id FROM claiming)", (until,))
                return True
            except sqlite3.Error as exc:
                self._fail(exc)

    def delivered(self, ids: Sequence[int]) -> None:
        self._outbox_write("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def retry(self, ids: Sequence[int], next_try_at: float) -> None:
        self._outbox_write(
            "UPDATE outbox SET attempts = attempts + 1, next_try_at = ? WHERE id = ?",
            [(next_try_at, i) for i in ids],
        )

    # ------------------------------------------------------------ operator holds
    #
    # Schema version 5 adds ``holds``: one row per session a person paused. Read once a
    # poll (served from memory unless another process has committed since), so that a
    # ``pause`` from the command line reaches a running daemon at its next poll.

    _holds: dict[str, Hold] | None = None
    _holds_seen: tuple[int, int] | None = None  # (connection, data_version) when read

    def holds(self) -> dict[str, Hold]:
        if self.schema_version < 5:
            return {}
        with self._lock:
            if self._closed or self._conn is None:
                return dict(self._holds or {})
            conn = self._conn
            try:
                (version,) = conn.execute("PRAGMA data_version").fetchone()
                seen = (id(conn), version)
                if self._holds is None or seen != self._holds_seen:
                    rows = conn.execute(
                        "SELECT session_id, held_by, held_at FROM holds").fetchall()
                    self._holds = {s: Hold(s, str(b), float(a)) for s, b, a in rows}
                    self._holds_seen = seen
            except sqlite3.Error as exc:
                self._fail(exc)
            return dict(self._holds)

    def hold(self, h: Hold) -> None:
        with self._small_write():
            self._run("INSERT OR REPLACE INTO holds (session_id, held_by, held_at)"
                      " VALUES (?, ?, ?)", (h.session_id, h.by, h.at))
        self._holds = None  # read again next time

    def fenced(self) -> None:
        """An SQLite file is one host's: no replicas, nothing to check."""

    def release(self, session_id: str) -> Hold | None:
        with self._small_write():
            found = self._run("SELECT held_by, held_at FROM holds WHERE session_id = ?",
                              (session_id,)).fetchone()
            if found is not None:
                self._run("DELETE FROM holds WHERE session_id = ?", (session_id,))
        self._holds = None
        return None if found is None else Hold(session_id, str(found[0]), float(found[1]))

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self._db().executemany(sql, rows)
        except sqlite3.Error as exc:
            self._fail(exc)

    def _outbox_write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._small_write():
            self._many(sql, rows)


# What a lost file's alert tables (and its holds) hold that is copied into the file the
# path names next (the outbox without its ids: the rows get new ones).
_ALERT_TABLES: Final = {
    "episodes": EPISODE_COLUMNS,
    "outbox": "channel, transition, created_at, attempts, next_try_at",
    "alert_watch": "name, since, failure",
    "holds": "session_id, held_by, held_at",
}


def _merge(conn: sqlite3.Connection, lost: _Lost) -> tuple[int, int]:
    """Copy what a lost file had into ``conn``'s: each record unless the one there was
    written later, each history row it does not have (by time, session and event, so
    rows already there are not doubled); the numbers copied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        records = 0
        for values in lost.records:
            records += conn.execute(
                "INSERT INTO records (session_id, data, version, updated_at, writer)"
                " VALUES (?, ?, 1, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
                " data = excluded.data, version = records.version + 1,"
                " updated_at = excluded.updated_at, writer = excluded.writer"
                " WHERE excluded.updated_at > records.updated_at",
                values,
            ).rowcount
        rows = 0
        columns = ", ".join(HISTORY_COLUMNS)
        placeholders = ", ".join("?" for _ in HISTORY_COLUMNS)
        for row in lost.history:
            rows += conn.execute(
                f"INSERT INTO history ({columns}) SELECT {placeholders} WHERE NOT EXISTS"  # noqa: S608
                " (SELECT 1 FROM history WHERE session_id = ? AND at = ? AND event = ?)",
                (*row, row[1], row[0], row[2]),
            ).rowcount
        for table, columns in _ALERT_TABLES.items():
            # An episode open there too, an outbox row there already: kept as it is.
            for row in lost.alerts.get(table, []):
                names = columns.split(", ")
                match = " AND ".join(f"{name} IS ?" for name in names)
                conn.execute(
                    f"INSERT OR IGNORE INTO {table} ({columns})"  # noqa: S608
                    f" SELECT {', '.join('?' for _ in names)} WHERE NOT EXISTS"
                    f" (SELECT 1 FROM {table} WHERE {match})",
                    (*row, *row),
                )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return records, rows
