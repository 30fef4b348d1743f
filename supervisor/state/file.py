"""The state file as a file: whether one is ours, making one, holding it, noticing that
its path names another file (or none) now, and moving a corrupt one aside.

**Ours** is an SQLite database whose header carries ``APPLICATION_ID`` (every state file
made by this version), or, for a file made before the marker existed, one whose tables
include ``schema_migrations`` (``supervisor.state.sqlite`` looks, read-only). Nothing else
at ``state_path`` is ever written to, moved or deleted: it is refused with one line and
left exactly as it was. An empty file is never ours, because a state file is made whole
under a temporary name (mode 0600; SQLite gives its ``-wal`` and ``-shm`` the database's
mode) and only then linked into place.

**Holding.** Every store that uses the file, read-write or read-only, holds a shared
``flock`` on it (``Held``) for as long as it does. Moving a corrupt file aside takes that
lock exclusively without waiting, so a file that another process uses is never moved.
``Held.problem`` compares the file held with what its path names now: device and inode,
link count and size, its header (overwritten in place, the file is no longer a database,
though SQLite, serving the first page from memory, would not notice), and the identity
of its ``-wal`` and ``-shm``.

**Closing descriptors.** Closing any descriptor of a file drops every POSIX lock the
process holds on it, SQLite's own included. A ``Held`` is therefore released only after
its SQLite connection is closed, and its descriptor is kept open (unlocked) while another
``Held`` of this process still uses the same file.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import secrets
import stat
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from supervisor.state.store import StateError

APPLICATION_ID: Final = 0x77737570  # "wsup": the header's application_id in every state file
SIDE_FILES: Final = ("-wal", "-shm", "-journal")

_HEADER: Final = b"SQLite format 3\x00"
_APPLICATION_ID_AT: Final = 68  # offset of the application_id in the database header
_FIRST_PAGE_TYPES: Final = (b"\x05", b"\x0d")  # page 1 is a table b-tree page (after the header)

Identity = tuple[int, int]  # (st_dev, st_ino)


class Kind(enum.Enum):
    """What a file at the state path is, from its first bytes."""

    EMPTY = "empty"
    NOT_SQLITE = "not_sqlite"
    FOREIGN = "foreign"  # an SQLite database with another application's id
    OURS = "ours"  # an SQLite database with our id
    UNMARKED = "unmarked"  # an SQLite database with no id: ours only if its tables say so


def side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def refusal(path: Path, kind: Kind, application_id: int) -> str:
    """The one line for a file at the state path that is not a state file."""
    if kind is Kind.EMPTY:
        what = "is empty and was not made by wasend-supervisor"
    elif kind is Kind.FOREIGN:
        what = (f"is an SQLite database of another application (application_id "
                f"{application_id & 0xFFFFFFFF:#010x}), not a wasend-supervisor state file")
    else:
        what = "is not a wasend-supervisor state file (not an SQLite database)"
    return f"{path} {what}; it was left as it was"


def _identity(path: Path) -> Identity | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


# ------------------------------------------------------------------- holding a file

_registry_lock = threading.Lock()
_holders: dict[Identity, int] = {}  # Held objects of this process, by file
_parked: dict[Identity, list[int]] = {}  # descriptors waiting for the last of them


def _flock(fd: int, operation: int, wait: float, path: Path) -> None:
    """Take a flock, waiting up to ``wait`` seconds (another process moving the file
    aside holds it exclusively for a moment). Filesystems without flock: not taken."""
    deadline = time.monotonic() + wait
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError:
            return
        if time.monotonic() >= deadline:
            raise StateError(f"{path} is locked by another process (it may be moving it aside)")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _ofd_lock(fd: int, kind: int) -> None:
    """An open-file-description lock over the whole file (Linux); none elsewhere."""
    operation = getattr(fcntl, "F_OFD_SETLK", None)
    if operation is None:
        return
    with contextlib.suppress(OSError):  # struct flock: type, whence, start, len, pid
        fcntl.fcntl(fd, operation, struct.pack("@hhqqi4x", kind, os.SEEK_SET, 0, 0, 0))


class Held:
    """A state file held open by one store, with a shared flock on it."""

    def __init__(self, path: Path, fd: int, identity: Identity) -> None:
        self.path = path
        self.fd = fd
        self.identity = identity
        self.sides: dict[str, Identity | None] = {}  # -wal, -shm as SQLite opened them
        self._released = False

    @classmethod
    def open(cls, path: Path, *, wait: float) -> Held:
        """Hold the file ``path`` names. FileNotFoundError if there is none; StateError
        if it cannot be read or is not a regular file."""
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
            except (FileNotFoundError, IsADirectoryError):
                raise
            except OSError as exc:
                raise StateError(f"cannot read {path}: {reason(exc)}") from None
            found = os.fstat(fd)
            identity = (found.st_dev, found.st_ino)
            if not stat.S_ISREG(found.st_mode):
                _close(identity, fd)
                raise StateError(f"{path} is not a regular file; it was left as it was")
            try:
                _flock(fd, fcntl.LOCK_SH, wait, path)
            except BaseException:
                _close(identity, fd)
                raise
            if _identity(path) == identity:  # not moved or replaced while we waited
                with _registry_lock:
                    _holders[identity] = _holders.get(identity, 0) + 1
                return cls(path, fd, identity)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            _close(identity, fd)
        raise StateError(f"{path} keeps being replaced by another process")

    def kind(self) -> tuple[Kind, int]:
        """What the file is, from its header, and its application_id."""
        try:
            head = os.pread(self.fd, 100, 0)
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {reason(exc)}") from None
        if not head:
            return Kind.EMPTY, 0
        if not head.startswith(_HEADER):
            return Kind.NOT_SQLITE, 0
        raw = head[_APPLICATION_ID_AT:_APPLICATION_ID_AT + 4]
        application_id = int.from_bytes(raw, "big", signed=True) if len(raw) == 4 else 0
        if application_id == APPLICATION_ID:
            return Kind.OURS, application_id
        if application_id == 0:
            return Kind.UNMARKED, 0
        return Kind.FOREIGN, application_id

    def note_side_files(self) -> None:
        """Remember the ``-wal`` and ``-shm`` SQLite opened (once it has read the file)."""
        self.sides = {suffix: _identity(side(self.path, suffix)) for suffix in ("-wal", "-shm")}

    def problem(self) -> tuple[Path, str] | None:
        """Whether the path still names the file held, as (the path that changed, what
        happened: ``deleted``, ``moved``, ``replaced``, ``truncated`` or ``overwritten``);
        None if it does."""
        mine = os.fstat(self.fd)
        try:
            here = self.path.stat()
        except FileNotFoundError:
            return self.path, "deleted" if mine.st_nlink == 0 else "moved"
        except OSError:
            return None  # cannot tell (a directory made unreadable): carry on
        if (here.st_dev, here.st_ino) != self.identity:
            return self.path, "replaced"
        if mine.st_size == 0:
            return self.path, "truncated"
        with contextlib.suppress(OSError):
            head = os.pread(self.fd, 101, 0)
            if not head.startswith(_HEADER) or head[100:101] not in _FIRST_PAGE_TYPES:
                return self.path, "overwritten"
        for suffix, known in self.sides.items():
            if known is None:
                continue
            now = _identity(side(self.path, suffix))
            if now != known:
                return side(self.path, suffix), "deleted" if now is None else "replaced"
        return None

    def alone(self) -> bool:
        """Whether no other store, in any process, holds this file: the shared lock made
        exclusive without waiting. When not, the shared lock is taken again."""
        with _registry_lock:
            if _holders.get(self.identity, 0) > 1:
                return False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_SH)
            return False
        except OSError:
            return False

    def quiet(self) -> None:
        """Make closing SQLite's connection to this file leave every file alone: no
        checkpoint into it, no ``-wal`` or ``-shm`` deleted by name (those names may be
        another file's now). A read lock of our own, as an open-file-description lock,
        conflicts even with this process's locks, so SQLite cannot take the exclusive
        lock it needs for either."""
        _ofd_lock(self.fd, fcntl.F_RDLCK)

    def drop_stale_side_files(self) -> None:
        """Delete the ``-wal`` and ``-shm`` at the path that are still the ones SQLite
        opened for the file held (once the path no longer names that file, or names it
        emptied): any database at the path would otherwise read them as its own."""
        for suffix, known in self.sides.items():
            name = side(self.path, suffix)
            if known is not None and _identity(name) == known:
                with contextlib.suppress(OSError):
                    name.unlink()

    def release(self) -> None:
        """Let go of the file (after its SQLite connection is closed)."""
        if self._released:
            return
        self._released = True
        _ofd_lock(self.fd, fcntl.F_UNLCK)
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        with _registry_lock:
            left = _holders.get(self.identity, 1) - 1
            if left > 0:
                _holders[self.identity] = left
            else:
                _holders.pop(self.identity, None)
        _close(self.identity, self.fd)


def _close(identity: Identity, fd: int) -> None:
    """Close ``fd``, unless another Held of this process still uses the same file: then
    keep it until the last of them is released."""
    with _registry_lock:
        if _holders.get(identity, 0) > 0:
            _parked.setdefault(identity, []).append(fd)
            return
        fds = [fd, *_parked.pop(identity, [])]
    for each in fds:
        with contextlib.suppress(OSError):
            os.close(each)


# ------------------------------------------------------------------ making a file


def create(path: Path, initialise: Callable[[Path], None], *,
           over: Identity | None = None) -> bool:
    """Make a state file at ``path``: whole, under a temporary name (mode 0600), then
    linked into place. False if another process made one first. ``over``: replace the
    file with this identity there now (an emptied state file), and only that one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    try:
        os.close(os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise StateError(f"cannot create {path}: {reason(exc)}") from None
    try:
        initialise(temporary)
        if over is not None:
            if _identity(path) != over:
                return False
            os.replace(temporary, path)
        else:
            _drop_leftovers(path)
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            except OSError:  # a filesystem without hard links
                if path.exists():
                    return False
                os.replace(temporary, path)
        _sync_directory(path.parent)
        return True
    except OSError as exc:
        raise StateError(f"cannot create {path}: {reason(exc)}") from None
    finally:
        for name in (temporary, *(side(temporary, suffix) for suffix in SIDE_FILES)):
            with contextlib.suppress(OSError):
                name.unlink()


def _drop_leftovers(path: Path) -> None:
    """A ``-wal``, ``-shm`` or ``-journal`` with no database beside it belongs to none:
    SQLite would read it as the new file's own (as SQLite itself, making a database,
    deletes a WAL it finds)."""
    if path.exists():
        return
    for suffix in SIDE_FILES:
        with contextlib.suppress(OSError):
            side(path, suffix).unlink()


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------- moving it aside


def corrupt_name(path: Path, now: float) -> Path:
    """Where a corrupt state file is moved: ``<name>.corrupt-<UTC time>``, unused."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return target


def move_aside(held: Held, now: float) -> Path:
    """Rename the held file (ours, corrupt, and held by nobody else: the caller made
    sure, ``Held.alone``) and its side files to ``corrupt_name``."""
    path = held.path
    target = corrupt_name(path, now)
    try:
        if _identity(path) != held.identity:
            raise StateError(f"{path} was replaced while being moved aside; not moved")
        os.replace(path, target)
        for suffix in SIDE_FILES:
            if side(path, suffix).exists():
                os.replace(side(path, suffix), side(target, suffix))
    except OSError as exc:
        raise StateError(
            f"{path} is corrupt and cannot be moved aside: {reason(exc)}") from None
    return target
