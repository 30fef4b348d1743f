"""A real PgBouncer (Debian's ``pgbouncer``) in transaction pooling mode in front of the
tests' PostgreSQL: what docs/high-availability.md says of it, shown, and the supervisor's
store and lease through it: two lease holders take, renew, fence and resign; a store's
limits and a read-only store's transactions reach no other client.

The pool has one server connection, so every client shares it, as clients share a busy
pool's connections in production; that makes each effect certain instead of a matter of
timing. PgBouncer refuses to run as root: as root it runs as the ``postgres`` user, as the
server does (tests/pg.py). A missing ``pgbouncer`` skips on a developer's machine and fails
under CI (tests/deploy/conftest.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from supervisor.config.model import Settings
from supervisor.domain.models import Phase, Record
from supervisor.runtime.wiring import open_store
from supervisor.state.lease import NAME, Leases
from supervisor.state.postgres import PostgresStore
from supervisor.state.store import Fenced, StateError
from tests import pg
from tests.deploy.conftest import missing
from tests.fakes import FakeClock
from tests.waiting import wait_for

psycopg = pytest.importorskip("psycopg")

PGBOUNCER = "/usr/sbin/pgbouncer"
HOW = "Debian: apt-get install pgbouncer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def version() -> tuple[int, int]:
    """PgBouncer's version, as (major, minor): ``pgbouncer --version`` says "PgBouncer 1.18.0"."""
    done = subprocess.run([PGBOUNCER, "--version"], capture_output=True, text=True,
                          timeout=10, check=True)
    major, minor = done.stdout.split()[1].split(".")[:2]
    return int(major), int(minor)


@dataclass
class Bouncer:
    """A running PgBouncer; ``url(db)``: the DSN of a database through it."""

    port: int
    user: str
    root: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture(scope="module")
def bouncer(pg_server: pg.Server) -> Iterator[Bouncer]:
    if not Path(PGBOUNCER).exists():
        missing("pgbouncer", HOW)
    root = Path(tempfile.mkdtemp(prefix="wsup-pgb-"))
    port = _free_port()
    (root / "users.txt").write_text(f'"{pg_server.user}" ""\n')
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={pg_server.port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {root / 'users.txt'}\n"
        "pool_mode = transaction\n"
        # One server connection per database: every client shares it.
        "default_pool_size = 1\n"
        "max_client_conn = 50\n"
        f"logfile = {root / 'pgbouncer.log'}\n"
        # No tracking of prepared statements, whatever the version's default (on from 1.24).
        + ("max_prepared_statements = 0\n" if version() >= (1, 21) else ""))
    command = [PGBOUNCER, str(root / "pgbouncer.ini")]
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for path in (root, *root.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    found = Bouncer(port=port, user=pg_server.user, root=root, process=process)
    try:
        probe = found.url("postgres")
        wait_for(lambda: process.poll() is not None or _reachable(probe), timeout=30,
                 describe=found.log)
        assert process.poll() is None, f"pgbouncer exited: {found.log()}"
        yield found
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck pgbouncer
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def through(bouncer: Bouncer, pg_url: str) -> str:
    """A fresh database's DSN through the pool (pg_url: the same database, direct)."""
    return bouncer.url(pg_url.rsplit("/", 1)[1])


def connect(url: str, **options: Any) -> Any:
    return psycopg.connect(url, autocommit=True, connect_timeout=5, **options)


def backend(conn: Any) -> int:
    (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
    return int(pid)


def test_clients_share_one_server_connection_between_transactions(through: str) -> None:
    with connect(through) as first, connect(through) as second:
        assert backend(first) == backend(second), "transaction pooling, one server connection"


def test_a_notify_never_reaches_a_listener_through_the_pool(through: str,
                                                           pg_url: str) -> None:
    """A resign's NOTIFY is not delivered to a standby that LISTENs through a transaction
    pool: it takes the lease at its next attempt instead (docs: PgBouncer)."""
    with connect(through) as listener, connect(pg_url) as direct, connect(pg_url) as sender:
        listener.execute("LISTEN wsup_test")
        direct.execute("LISTEN wsup_test")  # the control: the same NOTIFY, received directly
        sender.execute("NOTIFY wsup_test, 'resigned'")
        assert [n.payload for n in direct.notifies(timeout=5, stop_after=1)] == ["resigned"]
        assert list(listener.notifies(timeout=1)) == []


def test_a_session_setting_leaks_to_another_client_through_the_pool(through: str) -> None:
    """A read-only command's session setting stays on the server connection, and another
    client's write handed that connection fails (docs: PgBouncer)."""
    with connect(through) as setup:
        setup.execute("CREATE TABLE written (n integer)")
    with connect(through) as readonly, connect(through) as writer:
        readonly.execute("SET default_transaction_read_only = on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            writer.execute("INSERT INTO written VALUES (1)")
        readonly.execute("RESET default_transaction_read_only")
        writer.execute("INSERT INTO written VALUES (1)")


def test_psycopgs_prepared_statements_collide_unless_turned_off(through: str) -> None:
    """psycopg prepares a statement after prepare_threshold (5) runs on a connection; two
    clients on one server connection then collide when the pool does not track prepared
    statements (PgBouncer before 1.21, or max_prepared_statements = 0, as here). Turned off
    (prepare_threshold=None), the same statements run."""
    runs = 8

    def run(**options: Any) -> list[str]:
        failures: list[str] = []
        with connect(through, **options) as first, connect(through, **options) as second:
            for n in range(runs):
                for conn in (first, second):
                    try:
                        assert conn.execute("SELECT %s::integer + 1", (n,)).fetchone() == (
                            n + 1,)
                    except psycopg.errors.DuplicatePreparedStatement as exc:
                        failures.append(str(exc))
        return failures

    collided = run()
    assert collided and "already exists" in collided[0]
    assert run(prepare_threshold=None) == []


# ------------------------------------------------------------- lease holders


WITHIN = 5.0


def claim(store: PostgresStore, session_id: str) -> bool:
    """A restart's claim as the cycle writes it: fenced, then the record swapped."""
    with store.transaction():
        store.fenced()
        return store.swap(store.get(session_id), Record(session_id, phase=Phase.VERIFYING))


async def test_two_lease_holders_through_the_pool_take_renew_fence_and_resign(
        through: str, pg_url: str) -> None:
    """The lease prepares no statement and the supervisor's connections set nothing for
    the session, so the lease and the store (its prepared statements off, as this pool
    needs) work through a transaction pool as they do directly (only a resignation's
    NOTIFY does not come through)."""
    migrated = PostgresStore.open(pg_url, clock=FakeClock())  # schema 6: the lease's tables
    migrated.close()
    a, b = Leases(through, "a/1/t", "a"), Leases(through, "b/1/t", "b")
    stores = [PostgresStore.open(through, clock=FakeClock(), prepare=False) for _ in "ab"]
    try:
        won = await a.take(15.0, WITHIN)
        assert won is not None and (won.replica, won.epoch) == ("a", 1)
        # Well past psycopg's prepare_threshold (5), both on the one server connection.
        for _ in range(10):
            renewed = await a.renew(won.epoch, 15.0, WITHIN)
            assert renewed is not None and renewed.epoch == 1 and renewed.expires_in > 14.0
            seen = await b.take(15.0, WITHIN)
            assert seen is not None and (seen.replica, seen.epoch) == ("a", 1)
        assert await b.renew(won.epoch, 15.0, WITHIN) is None, "not b's lease"

        mine, theirs = stores
        mine.fence(NAME, a.holder, won.epoch)
        assert claim(mine, "s1") is True
        with psycopg.connect(pg_url, autocommit=True) as conn:  # a stopped renewing
            conn.execute("UPDATE leases SET expires_at = lease_now() - 1")
        taken = await b.take(15.0, WITHIN)
        assert taken is not None and (taken.replica, taken.epoch) == ("b", 2)
        assert await a.renew(won.epoch, 15.0, WITHIN) is None, "a's lease is over"
        with pytest.raises(Fenced):
            claim(mine, "s2")
        theirs.fence(NAME, b.holder, taken.epoch)
        assert claim(theirs, "s2") is True
        assert mine.get("s2") == Record("s2", phase=Phase.VERIFYING), "written once, by b"

        assert await b.resign(taken.epoch, WITHIN) is True
        again = await a.take(15.0, WITHIN)
        assert again is not None and (again.replica, again.epoch) == ("a", 3)
    finally:
        for store in stores:
            store.close()
        await a.aclose()
        await b.aclose()


def test_a_stores_limits_and_read_only_reach_no_other_client_through_the_pool(
        through: str, pg_url: str) -> None:
    """The store sets its lock timeout, its idle limit and read-only for each transaction
    alone (``SET LOCAL``, ``BEGIN READ ONLY``): another client handed the same server
    connection (one, in this pool) keeps the server's defaults and may write."""
    writer = PostgresStore.open(through, clock=FakeClock(), busy_timeout=0.25, prepare=False)
    writer.end_idle_transactions_after(2.0)
    writer.put(Record("s1"))
    reader = PostgresStore.open_readonly(through, clock=FakeClock(), prepare=False)
    try:
        with reader.transaction():
            assert reader.get("s1") == Record("s1")
        with connect(through) as other:
            assert backend(other) is not None
            shown = other.execute("SELECT current_setting('lock_timeout'),"
                                  " current_setting('idle_in_transaction_session_timeout'),"
                                  " current_setting('default_transaction_read_only')"
                                  ).fetchone()
            assert shown == ("0", "0", "off")
        writer.put(Record("s2"))  # the reader's read-only left nothing behind
        with pytest.raises(StateError, match="read-only transaction"), reader.transaction():
            reader.put(Record("s3"))  # but its own transactions are read-only
    finally:
        reader.close()
        writer.close()


def test_stores_built_from_settings_need_prepared_statements_off_through_such_a_pool(
        through: str, pg_url: str) -> None:
    """Two daemons' stores on one server connection of a pool that does not track
    prepared statements: with psycopg's preparation (the default, for a cheaper poll)
    they collide as soon as a statement has run five times; with
    ``state_prepared_statements = false`` they never do."""
    PostgresStore.open(pg_url, clock=FakeClock()).close()  # migrated directly

    def collisions(prepared: bool) -> list[str]:
        settings = Settings(api_key=SecretStr("k" * 40), state_url=SecretStr(through),
                            state_prepared_statements=prepared)
        stores = [open_store(settings, FakeClock()) for _ in "ab"]
        failures: list[str] = []
        try:
            for n in range(8):
                for store in stores:
                    try:
                        store.put(Record(f"s{n}"))
                    except StateError as exc:
                        failures.append(str(exc))
        finally:
            for store in stores:
                store.close()
        return failures

    found = collisions(prepared=True)
    assert found and "already exists" in found[0]
    assert collisions(prepared=False) == []
