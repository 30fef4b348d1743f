"""Reading a key, alert URL or configuration file: a regular file of bounded size, never
blocking; and who else may read one."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["read_failure", "read_regular_file", "readable_by_others"]

_FILE_TYPES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _irregular(mode: int) -> OSError | None:
    """The error for a file that is not a regular file, or None for a regular one."""
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _FILE_TYPES if test(mode)), "of another type")
    return OSError(errno.EINVAL, f"not a regular file ({what})")


def read_regular_file(path: Path, max_bytes: int, what: str) -> tuple[bytes, os.stat_result]:
    """The content of a regular file of at most ``max_bytes``, and its status.

    Raises OSError, and never blocks: anything but a regular file (a FIFO, a device, a
    directory, a socket) is refused before it is opened; it is opened with O_NONBLOCK, so
    that a FIFO put in its place meanwhile cannot block the open either (and is refused
    by the fstat that follows); at most ``max_bytes`` are read. Key and configuration
    files are re-read on the daemon's event loop (after a 401, on SIGHUP), so this is
    what keeps a misplaced FIFO from freezing the daemon.
    """
    refused = _irregular(os.stat(path).st_mode)  # follows links, as systemd and k8s use
    if refused is not None:
        raise refused
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        refused = _irregular(info.st_mode)
        if refused is not None:
            raise refused
        data = bytearray()
        while len(data) <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"over {max_bytes} bytes, so not {what}")
    return bytes(data), info


def read_failure(exc: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, for a problem line (never a byte of the file)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"  # str(exc) would quote a byte of the file
    return exc.strerror or type(exc).__name__


def readable_by_others(info: os.stat_result) -> str | None:
    """Who else may read a secret file (a key, the alert URLs) with this status: ``other
    users``, ``group NAME`` (a group the supervisor is not in), or None. A group the
    supervisor's own process is in (its primary group, or a supplementary one such as a
    Kubernetes ``fsGroup``) is trusted: that is how a key is shared with a service account."""
    if info.st_mode & stat.S_IROTH:
        return "other users"
    if info.st_mode & stat.S_IRGRP and info.st_gid not in {os.getgid(), *os.getgroups()}:
        import grp  # noqa: PLC0415  (only this rare message needs it)

        try:
            return f"group {grp.getgrgid(info.st_gid).gr_name}"
        except KeyError:
            return f"group {info.st_gid}"
    return None
