"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, started on a
temporary data directory and a free loopback port (and a Unix socket in that directory).

PostgreSQL refuses to run as root: as root, the directory is given to the ``postgres``
user and ``initdb`` and ``pg_ctl`` run as that user (``runuser``). The server is made
for speed, not durability (``fsync`` off). One server per test session
(``tests/conftest.py``'s ``pg_server``), a fresh database per test (``database``).
``pause`` and ``resume`` stop a server and start it again in place (an outage of the
database: the same data, port and DSNs afterwards).
Under CI (``CI=true``) a missing server fails the tests that need one; elsewhere they
are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN_GLOB = "/usr/lib/postgresql/*/bin"


def bin_dir() -> Path | None:
    """The newest installed server's bin directory (``PG_BIN`` first), or None."""
    given = os.environ.get("PG_BIN")
    found = [given] if given else sorted(glob.glob(BIN_GLOB),
                                         key=lambda p: int(Path(p).parent.name))
    for candidate in reversed(found):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def missing() -> str | None:
    """Why no server can be started here (None: one can)."""
    if bin_dir() is None:
        return f"no PostgreSQL server installed ({BIN_GLOB}; apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One running server; ``url(db)`` the DSN of a database on it."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: PostgreSQL's own defaults (fsync and synchronous commits on), as an
        operator runs it (the benchmarks); else the tests' quicker settings."""
        self.durable = durable
        found = bin_dir()
        assert found is not None
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="wsup-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "postgres"
        self._names = itertools.count(1)
        self._as: list[str] = []
        self._options = ""
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    def _pg(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> Server:
        self._pg("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                 "--no-sync", "--no-instructions")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += (" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                        " -c max_connections=100")
        self._options = options
        self._launch()
        return self

    def _launch(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-o", self._options, "-l",
                 str(self.root / "server.log"), "-w", "-t", "60", "start")

    def pause(self) -> None:
        """Stop the server in place, as an outage does: a fast shutdown (every client is
        disconnected, new connections are refused), its data directory and port kept for
        ``resume``."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def resume(self) -> None:
        """Start the server again after ``pause``: the same data, port and options."""
        self._launch()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A fresh, empty database; its DSN."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)
