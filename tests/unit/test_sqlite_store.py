"""The SQLite state file: round trips, pragmas, migrations, compare-and-set between two
stores on one file, the history and its retention, and bad files (corrupt, foreign,
newer, unwritable). Files live in tmp_path; ``:memory:`` where no file is needed.

The tests that take ``shared_state`` (tests/conftest.py) run on both backends: an SQLite
file and a PostgreSQL database (``supervisor.state.postgres``)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.domain.models import HistoryEntry, Phase, Record
from supervisor.state.file import APPLICATION_ID, Held
from supervisor.state.schema import SCHEMA_VERSION, decode, encode, migrate
from supervisor.state.sqlite import WAL_SIZE_LIMIT, SqliteStore
from supervisor.state.store import MEMORY, PRUNE_EVERY, StateError
from tests.conftest import Opener
from tests.fakes import FakeClock

FULL = Record(
    "s1",
    name="Shop",
    phase=Phase.VERIFYING,
    last_status="STOPPED",
    attempt=3,
    failures=(1_700_000_000.125, 1_700_000_100.0),
    next_attempt_at=None,
    requested_at=1_700_000_200.5,
    verify_deadline=1_700_000_320.5,
    since=1_700_000_200.5,
    stop_first=True,
    gave_up=True,
    warned_statuses=frozenset({"WEIRD", "ODD"}),
    last_outcome="accepted",
)


def open_file(path: Path, clock: FakeClock | None = None, **kw: object) -> SqliteStore:
    return SqliteStore.open(path, clock=clock or FakeClock(), **kw)  # type: ignore[arg-type]


def test_a_record_survives_the_process_field_for_field(shared_state: Opener) -> None:
    first = shared_state(FakeClock())
    first.put(FULL)
    first.put(Record("s2"))
    first.close()
    second = shared_state(FakeClock())
    assert second.get("s1") == FULL
    assert second.get("s2") == Record("s2")
    assert {r.session_id for r in second.records()} == {"s1", "s2"}


def test_encoding_is_canonical_and_decoding_tolerates_unknown_and_missing_fields() -> None:
    assert decode("s1", encode(FULL)) == FULL
    assert encode(FULL) == encode(decode("s1", encode(FULL)))
    assert decode("x", '{"phase": "gave_up", "from_the_future": 1}') == Record(
        "x", phase=Phase.GAVE_UP)
    with pytest.raises((TypeError, ValueError)):
        decode("x", '{"attempt": "three"}')
    with pytest.raises((TypeError, ValueError)):
        decode("x", '{"phase": "sleeping"}')


def test_memory_touches_no_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteStore.open(MEMORY, clock=FakeClock())
    store.put(FULL)
    store.add_history([HistoryEntry(1.0, "s1", "restart.requested")])
    assert store.get("s1") == FULL
    assert list(tmp_path.iterdir()) == []


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = open_file(tmp_path / "state.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as observer:
        assert observer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # in the file
    assert store.schema_version == SCHEMA_VERSION


# Whether a commit is synced before it returns cannot be told short of a power cut, and
# the setting is the store's connection's own: read on every connection the store opens,
# found through sqlite3's audit event, in a process of its own (an audit hook stays for
# the life of the process).
SYNCHRONOUS = """
import sqlite3, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(args[0])
                 if event == "sqlite3.connect/handle" else None)
from supervisor.state.sqlite import SqliteStore
store = SqliteStore.open(sys.argv[1])
found = []
for conn in opened:
    try:
        found.append(conn.execute("PRAGMA synchronous").fetchone()[0])
    except sqlite3.ProgrammingError:  # closed: the one that made the file
        pass
print(found)
"""


def test_every_connection_the_store_keeps_syncs_each_commit(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SYNCHRONOUS, str(tmp_path / "state.db")],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines()[-1] == "[2]"  # one connection open, synchronous=FULL


def test_a_writer_waits_for_the_lock_another_process_holds(tmp_path: Path) -> None:
    """The default busy timeout: a write waits out another process's transaction (here
    a connection of the test's own, holding the write lock for 0.3 s) instead of failing
    at once with "database is locked". A short busy timeout gives up: see
    test_a_transaction_sees_the_latest_records_and_holds_off_other_writers."""
    path = tmp_path / "state.db"
    store = open_file(path)
    held = threading.Event()

    def hold() -> None:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("DELETE FROM history")
            held.set()
            time.sleep(0.3)  # the other process's transaction, as long as it takes
            other.execute("COMMIT")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        store.put(FULL)
    finally:
        holder.join()
    assert open_file(path).get("s1") == FULL


def test_the_write_ahead_log_is_cut_back_after_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock()
    store = open_file(path, clock)
    wal = path.with_name("state.db-wal")
    store.add_history([HistoryEntry(clock.now(), "s1", "restart.failed", reason="x" * 1000)
                       for _ in range(6000)])
    assert wal.stat().st_size > 4 * WAL_SIZE_LIMIT  # one big commit (then a checkpoint)
    store.put(FULL)  # the next write starts the log afresh, cut back to its limit
    assert wal.stat().st_size <= WAL_SIZE_LIMIT == 1024 * 1024
    assert open_file(path, clock).history_count() == 6000


def test_the_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    open_file(path).put(FULL)
    assert path.exists()
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def application_id(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[68:72], "big")


def test_a_new_state_file_is_0600_with_its_wal_and_shm_and_carries_our_id(
    tmp_path: Path,
) -> None:
    old = os.umask(0)  # whatever the umask allows, the files are the owner's only
    try:
        store = open_file(tmp_path / "state.db")
        store.put(FULL)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}
    assert application_id(tmp_path / "state.db") == APPLICATION_ID


def test_an_existing_state_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_file(path).close()
    path.chmod(0o644)  # world-readable, by somebody's choice: left so
    open_file(path).put(FULL)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_state_file_made_before_our_id_is_known_by_its_tables_and_given_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, 1.0)
    conn.close()
    assert application_id(path) == 0
    SqliteStore.open_readonly(path).close()
    assert application_id(path) == 0  # reading changes nothing
    open_file(path).close()
    assert application_id(path) == APPLICATION_ID


# ------------------------------------------------------------------- migrations


def test_a_version_1_file_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, 1.0, target=1) == 1
    conn.execute("INSERT INTO records (session_id, data, version, updated_at) VALUES (?,?,?,?)",
                 ("s1", encode(FULL), 4, 2.0))
    conn.execute("INSERT INTO history (at, session_id, event, action, attempt, outcome,"
                 " http_status, duration_ms) VALUES (?, 's1', 'restart.failed', 'restart',"
                 " 2, 'failed', 503, 12)", (FakeClock().now(),))
    conn.close()

    store = open_file(path)
    assert store.schema_version == SCHEMA_VERSION
    assert store.get("s1") == FULL
    [row] = store.read_history()
    assert (row.event, row.http_status, row.reason, row.status) == (
        "restart.failed", 503, None, None)
    with contextlib.closing(sqlite3.connect(path)) as observer:
        applied = [v for (v,) in observer.execute("SELECT version FROM schema_migrations")]
    assert applied == list(range(1, SCHEMA_VERSION + 1))
    # The new columns work: the record is written by this store, the row has a reason.
    store.put(FULL)
    store.add_history([HistoryEntry(FakeClock().now(), "s1", "restart.failed",
                                    reason="relapsed")])
    assert store.read_history()[-1].reason == "relapsed"
    assert store.written_elsewhere_at("s1") is None


def test_a_file_from_a_newer_supervisor_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_file(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 0, 'future')")
    conn.close()
    with pytest.raises(StateError, match="schema version 99, newer"):
        open_file(path)
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))


def test_somebody_elses_database_is_refused_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="not a wasend-supervisor state file"):
        open_file(path)
    assert not list(tmp_path.glob("*.corrupt-*"))


# -------------------------------------------------------------------- bad files


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file in ``directory``: its bytes, modification time (ns) and mode."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(directory.iterdir())}


def sqlite_file(path: Path, *, app: int = 0, tables: bool = True) -> None:
    conn = sqlite3.connect(path)
    if app:
        conn.execute(f"PRAGMA application_id = {app}")
    if tables:
        conn.execute("CREATE TABLE users (id INTEGER)")
    conn.execute("PRAGMA user_version = 7")  # a header, even with no tables
    conn.commit()
    conn.close()


NOT_OURS: dict[str, Callable[[Path], Any]] = {
    "a config file": lambda p: p.write_text("poll_interval = 10\n"),
    "an empty file": lambda p: p.write_bytes(b""),
    "binary garbage": lambda p: p.write_bytes(b"\x00\x01 definitely not sqlite " * 300),
    "another application's database": lambda p: sqlite_file(p, app=0x46697265),
    "a database with other tables": sqlite_file,
    "a database with no tables": lambda p: sqlite_file(p, tables=False),
}


@pytest.mark.parametrize("make", NOT_OURS.values(), ids=NOT_OURS.keys())
def test_a_file_that_is_not_a_state_file_is_refused_and_left_exactly_as_it_was(
    tmp_path: Path, make: Callable[[Path], Any],
) -> None:
    path = tmp_path / "c.toml"
    make(path)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = snapshot(tmp_path)
    for opening in (open_file, SqliteStore.open_readonly):
        with capture_logs() as events, pytest.raises(StateError) as caught:
            opening(path)
        assert snapshot(tmp_path) == before  # same bytes, time and mode; no file beside it
        message = str(caught.value)
        assert message.startswith(f"{path} ") and "\n" not in message
        assert "left as it was" in message
        assert events == []


def test_a_damaged_state_file_is_moved_aside_loudly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    damaged = damage(path)
    with capture_logs() as events:
        store = open_file(path, FakeClock(start=1_700_000_000.0))
    store.put(FULL)
    assert store.get("s1") == FULL
    moved = tmp_path / "state.db.corrupt-20231114T221320Z"
    assert moved.read_bytes() == damaged
    [event] = [e for e in events if e["event"] == "state.corrupt_moved_aside"]
    assert event["log_level"] == "error"
    assert event["moved_to"] == str(moved) and event["path"] == str(path)
    assert "backoff and history were lost" in event["action"]


def damage(path: Path) -> bytes:
    """A state file of 300 records with a table page overwritten; its bytes."""
    store = open_file(path)
    for i in range(300):
        store.put(Record(f"session-{i:04d}", name="x" * 200))
    store.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[3 * 4096 + 10: 3 * 4096 + 400] = os.urandom(390)  # inside a table page
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_corrupt_state_file_another_process_holds_is_not_moved_aside(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    damaged = damage(path)
    holder = Held.open(path, wait=1.0)  # as every store of another process does
    try:
        with capture_logs() as events, pytest.raises(StateError) as caught:
            open_file(path)
    finally:
        holder.release()
    assert str(caught.value).endswith(
        "but in use by another process; it was not moved aside")
    assert path.read_bytes() == damaged
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert "state.corrupt_moved_aside" not in [e["event"] for e in events]
    with capture_logs() as events:
        open_file(path)  # nobody holds it now
    assert "state.corrupt_moved_aside" in [e["event"] for e in events]


def test_a_damaged_page_is_caught_by_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    damage(path)
    with capture_logs() as events:
        fresh = open_file(path)
    assert "state.corrupt_moved_aside" in [e["event"] for e in events]
    assert list(fresh.records()) == []


def test_a_file_overwritten_while_running_is_moved_aside_and_rebuilt_from_memory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = open_file(path)
    for i in range(50):
        store.put(Record(f"s{i}", name="x" * 100, attempt=i))
    checkpoint = sqlite3.connect(path)
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    with path.open("r+b") as f:  # something outside overwrites the file
        f.write(b"garbage!" * 2000)
    with capture_logs() as events, pytest.raises(StateError, match="was overwritten while"):
        store.put(Record("new"))
    [moved] = [e for e in events if e["event"] == "state.corrupt_moved_aside"]
    assert moved["log_level"] == "error"
    assert Path(moved["moved_to"]).read_bytes().startswith(b"garbage!")
    store.put(Record("new"))  # the next write works, on a fresh file
    again = open_file(path)
    assert {r.session_id for r in again.records()} == {f"s{i}" for i in range(50)} | {"new"}
    assert again.get("s7") == Record("s7", name="x" * 100, attempt=7)


# ------------------------------------------------- the file replaced under a store


def busy_store(path: Path, clock: FakeClock) -> SqliteStore:
    """A store with five records and five history rows."""
    store = open_file(path, clock)
    for i in range(5):
        store.put(Record(f"s{i}", attempt=i))
    store.add_history([entry(clock.now() + i, f"s{i}") for i in range(5)])
    return store


def contents(path: Path) -> tuple[dict[str, Record], list[HistoryEntry]]:
    reader = SqliteStore.open_readonly(path)
    try:
        return {r.session_id: r for r in reader.records()}, reader.read_history()
    finally:
        reader.close()


def another_state_file(path: Path, clock: FakeClock) -> None:
    other = open_file(path, clock)
    other.put(Record("x"))
    other.add_history([entry(clock.now() + 100, "x")])
    other.close()


SPLITS: dict[str, Callable[[Path, FakeClock], Path]] = {}


def split(name: str) -> Callable[[Callable[[Path, FakeClock], Path]],
                                  Callable[[Path, FakeClock], Path]]:
    def register(how: Callable[[Path, FakeClock], Path]) -> Callable[[Path, FakeClock], Path]:
        SPLITS[name] = how
        return how
    return register


@split("deleted")
def _rm_all(path: Path, clock: FakeClock) -> Path:  # rm state.db*
    for name in path.parent.iterdir():
        name.unlink()
    return path


@split("moved")
def _moved(path: Path, clock: FakeClock) -> Path:  # mv state.db state.db.bak
    path.rename(path.with_name("state.db.bak"))
    return path


@split("replaced")
def _replaced(path: Path, clock: FakeClock) -> Path:  # another state file renamed over it
    another_state_file(path.with_name("other.db"), clock)
    os.replace(path.with_name("other.db"), path)
    return path


@split("truncated")
def _truncated(path: Path, clock: FakeClock) -> Path:  # truncate -s 0 state.db
    os.truncate(path, 0)
    return path


@split("wal deleted")
def _wal_deleted(path: Path, clock: FakeClock) -> Path:  # rm state.db-wal
    wal = path.with_name("state.db-wal")
    wal.unlink()
    return wal


@pytest.mark.parametrize("how", SPLITS.values(), ids=SPLITS.keys())
def test_a_state_file_lost_under_a_store_is_noticed_once_and_no_row_is_lost(
    tmp_path: Path, how: Callable[[Path, FakeClock], Path],
) -> None:
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = busy_store(path, clock)
    records, history = contents(path)
    named = how(path, clock)
    problem = {"_rm_all": "deleted", "_moved": "moved", "_replaced": "replaced",
               "_truncated": "truncated", "_wal_deleted": "deleted"}[how.__name__]
    with capture_logs() as events, pytest.raises(StateError) as caught:
        store.put(Record("new"))  # this write is not made: nothing is decided on a split
    assert str(caught.value).startswith(f"{named} was {problem} while this process was using it")
    assert "this write was not made" in str(caught.value)
    [replaced] = [e for e in events if e["event"] == "state.file_replaced"]
    assert (replaced["log_level"], replaced["path"], replaced["problem"]) == (
        "error", str(named), problem)
    [restored] = [e for e in events if e["event"] == "state.file_restored"]
    assert restored["path"] == str(path)
    with capture_logs() as events:
        store.put(Record("new"))  # the next write works, on the file the path names
        store.add_history([entry(clock.now() + 50, "new")])
    assert events == []  # said once
    after_records, after_history = contents(path)
    assert {k: v for k, v in after_records.items() if k in records} == records
    assert "new" in after_records
    for row in history:
        assert after_history.count(row) == 1  # every row, once
    if problem == "replaced":
        assert "x" in after_records and entry(clock.now() + 100, "x") in after_history
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_state_file_replaced_by_one_that_is_not_ours_keeps_the_rows_until_it_can(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = busy_store(path, clock)
    records, history = contents(path)
    path.unlink()
    path.write_text("poll_interval = 10\n")  # somebody's slip
    for _ in range(2):
        with capture_logs() as events, pytest.raises(StateError) as caught:
            store.put(Record("new"))
        assert "not a wasend-supervisor state file" in str(caught.value)
        assert path.read_text() == "poll_interval = 10\n"
        assert "state.file_restored" not in [e["event"] for e in events]
    path.unlink()  # put right
    with capture_logs() as events:
        store.put(Record("new"))
    assert [e["event"] for e in events] == ["state.file_restored"]
    after_records, after_history = contents(path)
    assert set(after_records) == {*records, "new"}
    assert after_history == history


def test_reading_an_emptied_state_file_refuses_and_leaves_the_wal_alone(
    tmp_path: Path,
) -> None:
    # SQLite deletes the -wal beside a database of no pages when it opens one: a
    # ``history`` must not do that to a running daemon's file.
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = busy_store(path, clock)
    wal = (tmp_path / "state.db-wal").read_bytes()
    os.truncate(path, 0)
    with pytest.raises(StateError, match="is empty and was not made by wasend-supervisor"):
        SqliteStore.open_readonly(path)
    assert (tmp_path / "state.db-wal").read_bytes() == wal
    with capture_logs() as events, pytest.raises(StateError, match="truncated"):
        store.put(Record("new"))
    [restored] = [e for e in events if e["event"] == "state.file_restored"]
    assert (restored["records"], restored["history_rows"]) == (5, 5)  # from the WAL


def test_an_uncreatable_directory_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StateError) as caught:
        open_file(blocker / "state.db")
    assert str(caught.value) == f"{blocker} exists and is not a directory"
    with pytest.raises(StateError) as caught:
        open_file(blocker / "deeper" / "state.db")
    assert str(caught.value) == (
        f"cannot create directory {blocker / 'deeper'}: Not a directory")


def test_a_directory_as_state_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="is a directory"):
        open_file(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_directory_is_one_clear_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StateError, match="is not writable"):
        open_file(locked / "state.db")


def test_read_only_opening_creates_migrates_and_moves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SqliteStore.open_readonly(tmp_path / "missing.db")
    assert list(tmp_path.iterdir()) == []
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(StateError, match="not a wasend-supervisor state file"):
        SqliteStore.open_readonly(bad)
    assert bad.read_bytes() == b"garbage" * 1000
    good = tmp_path / "state.db"
    open_file(good).put(FULL)
    reader = SqliteStore.open_readonly(good)
    assert reader.get("s1") == FULL


# ----------------------------------------------------------- two stores, one file


def test_swap_fails_when_another_store_wrote_first(shared_state: Opener) -> None:
    a, b = shared_state(FakeClock()), shared_state(FakeClock())
    a.put(Record("s1", phase=Phase.UNHEALTHY, last_status="STOPPED"))
    old = b.get("s1")
    assert old is not None
    assert a.swap(a.get("s1"), Record("s1", phase=Phase.VERIFYING, attempt=1))
    # b still holds the record it read; its claim must lose.
    assert not b.swap(old, Record("s1", phase=Phase.VERIFYING, attempt=1, name="b"))
    fresh = b.get("s1")
    assert fresh == Record("s1", phase=Phase.VERIFYING, attempt=1)
    assert b.swap(fresh, Record("s1", phase=Phase.HEALTHY))
    assert a.get("s1") == Record("s1", phase=Phase.HEALTHY)


def test_swap_of_a_new_record_fails_if_another_store_created_it(shared_state: Opener) -> None:
    a, b = shared_state(FakeClock()), shared_state(FakeClock())
    assert b.get("s1") is None
    assert a.swap(None, Record("s1", attempt=1))
    assert not b.swap(None, Record("s1", attempt=2))
    assert not b.swap(Record("s1", attempt=1, name="other"), None)
    assert b.swap(Record("s1", attempt=1), None)
    assert a.get("s1") is None


def test_who_wrote_last_and_when(shared_state: Opener) -> None:
    clock = FakeClock()
    a, b = shared_state(clock), shared_state(clock)
    b.put(Record("s1"))
    assert a.written_elsewhere_at("s1") == clock.now()
    assert b.written_elsewhere_at("s1") is None
    clock.advance(5)
    a.put(Record("s1", attempt=1))
    assert a.written_elsewhere_at("s1") is None
    assert b.written_elsewhere_at("s1") == clock.now()
    assert a.updated_at("s1") == clock.now()


def test_a_transaction_sees_the_latest_records_and_holds_off_other_writers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    a = open_file(path)
    b = SqliteStore.open(path, clock=FakeClock(), busy_timeout=0.05)
    assert a.get("s1") is None
    b.put(Record("s1", attempt=7))
    with a.transaction():
        assert a.get("s1") == Record("s1", attempt=7)
        with pytest.raises(StateError, match="locked"):
            b.put(Record("s1", attempt=8))
        a.put(Record("s1", attempt=9))
    assert b.get("s1") == Record("s1", attempt=9)


def test_a_failed_transaction_writes_nothing(shared_state: Opener) -> None:
    store = shared_state(FakeClock())
    store.put(Record("s1"))

    def half_done() -> None:
        with store.transaction():
            store.put(Record("s1", attempt=1))
            store.add_history([HistoryEntry(1.0, "s1", "restart.requested")])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        half_done()
    assert store.get("s1") == Record("s1")
    assert store.read_history() == []
    other = shared_state(FakeClock())
    assert other.get("s1") == Record("s1")
    assert other.read_history() == []


def test_a_transaction_sees_the_latest_records_and_other_writers_wait_for_it(
    shared_state: Opener,
) -> None:
    a, b = shared_state(FakeClock()), shared_state(FakeClock())
    assert a.get("s1") is None
    b.put(Record("s1", attempt=7))
    done = threading.Event()

    def put_b() -> None:
        b.put(Record("s1", attempt=8))
        done.set()

    with a.transaction():
        assert a.get("s1") == Record("s1", attempt=7)
        writer = threading.Thread(target=put_b)
        writer.start()
        assert not done.wait(0.3)  # b waits for a's transaction to end
        a.put(Record("s1", attempt=9))
    writer.join(timeout=10)
    assert done.is_set()
    assert a.get("s1") == b.get("s1") == Record("s1", attempt=8)  # b's, written after a's


# ---------------------------------------------------------------------- history


def entry(at: float, session_id: str = "s1", event: str = "restart.failed") -> HistoryEntry:
    return HistoryEntry(at, session_id, event, action="restart", attempt=1, outcome="failed",
                        reason="relapsed", status="FAILED", http_status=None, duration_ms=120,
                        next_attempt_at=at + 10)


def test_history_rows_come_back_filtered_and_in_order(shared_state: Opener) -> None:
    store = shared_state(FakeClock())
    store.add_history([entry(1.0, "a"), entry(2.0, "b"), entry(3.0, "a"), entry(4.0, "c")])
    assert store.read_history()[0] == entry(1.0, "a")
    assert [e.at for e in store.read_history(session_ids=["a"])] == [1.0, 3.0]
    assert [e.at for e in store.read_history(since=2.5)] == [3.0, 4.0]
    assert [e.at for e in store.read_history(limit=2)] == [3.0, 4.0]
    assert [e.at for e in store.read_history(session_ids=["a", "b"], since=2.0)] == [2.0, 3.0]


def test_history_is_bounded_by_row_count(shared_state: Opener) -> None:
    clock = FakeClock()
    store = shared_state(clock, history_max_rows=200)
    t0 = clock.now()
    for i in range(100):
        store.add_history([entry(t0 + i * 10 + j) for j in range(10)])
        assert store.history_count() <= 300  # pruned whenever 100 rows were added
    store.prune()
    rows = store.read_history(limit=None)
    assert len(rows) == 200
    assert rows[0].at == t0 + 800 and rows[-1].at == t0 + 999  # the newest are kept


def test_history_is_bounded_by_age_and_not_pruned_on_every_write(
    shared_state: Opener,
) -> None:
    clock = FakeClock()
    store = shared_state(clock, history_max_age=3600.0)
    store.add_history([entry(clock.now() - 7200.0), entry(clock.now())])
    for _ in range(20):
        clock.advance(60)
        store.add_history([entry(clock.now())])
    # Twenty writes in twenty minutes: no prune, so the row two hours old is still there.
    assert store.history_count() == 22
    assert store.read_history(limit=None)[0].at == clock.now() - 1200.0 - 7200.0
    clock.advance(PRUNE_EVERY + 1)
    store.add_history([entry(clock.now())])
    assert all(e.at >= clock.now() - 3600.0 for e in store.read_history())
    assert store.history_count() == 1


# ------------------------------------------------------ heartbeats and the gate row


def test_heartbeats_and_the_gate_row_are_shared_by_the_processes(shared_state: Opener) -> None:
    from supervisor.state.store import Beat, GateRow

    clock = FakeClock()
    daemon, check = shared_state(clock), shared_state(clock)
    t0 = clock.now()
    daemon.beat(Beat("run", t0, listed=True, ok=True, poll_interval=30.0))
    check.beat(Beat("check", t0 + 1, listed=True, ok=False, scope=("b", "a")))
    daemon.beat(Beat("run", t0 + 2, listed=False, ok=False, poll_interval=30.0))
    run, checked = check.heartbeats()  # most recently seen first
    assert (run.kind, run.seen_at, run.last_poll_at, run.last_ok_at, run.started_at) == (
        "run", t0 + 2, t0, t0, t0)
    assert (checked.kind, checked.scope, checked.last_ok_at) == ("check", ("b", "a"), None)
    daemon.waiting("run", t0 + 40)
    assert check.heartbeats()[0].waiting_until == t0 + 40
    daemon.retire("run", t0 + 3)
    assert check.heartbeats()[0].stopped_at == t0 + 3
    assert check.gate_row("k") is None and check.paused_until() is None
    daemon.update_gate_row("k", lambda row: GateRow(t0 + 30, (t0, t0 + 1)))
    assert check.gate_row("k") == GateRow(t0 + 30, (t0, t0 + 1))
    assert check.update_gate_row("k", lambda row: None) == GateRow(t0 + 30, (t0, t0 + 1))
    assert check.paused_until() == t0 + 30
    daemon.put(Record("s1"))
    assert check.last_writes() == {daemon.writer: t0}
