"""The leader's lease in PostgreSQL: one row in ``leases`` (schema version 6), held by one
replica at a time, with an epoch that fences what it does.

The statements, each one transaction on a connection of the lease's own (async psycopg,
autocommit; it LISTENs for a resignation):

* **take** (River's and Oban's pattern): delete the row if it has expired, then insert
  ours, on conflict do nothing. The one that inserted holds it, at the epoch after the
  last one (``lease_epochs`` keeps it), so the epoch rises by one on every change of
  holder.
* **renew**: move the expiry on, only while the row is still ours (holder and epoch) and
  has not expired; else the lease is lost.
* **resign**: delete our row and ``NOTIFY`` the standbys in the same transaction, so that
  one takes over at once rather than when the lease would have expired.

Expiry is judged by the database's clock (``lease_now()``, the migration's function: the
server's ``clock_timestamp()`` in epoch seconds), never by a replica's,
so replicas whose clocks disagree still agree on who holds the lease. ``FENCE`` is the
check a restart's claim makes in its own transaction (``PostgresStore.fenced``): the row
is still ours, unexpired, and is locked (``FOR KEY SHARE``) until the claim commits, so
that nobody can take the lease between the check and the commit (renewals go on).

Errors are ``StateError`` in one line, never the DSN; a connection that failed or took
too long is dropped and made again by the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from supervisor.state.store import StateError, db_problem, describe_dsn, dsn_secrets

if TYPE_CHECKING:
    import psycopg

NAME: Final = "supervisor"  # the lease's row: one leader per database
CHANNEL: Final = "wasend_supervisor_lease"  # NOTIFYed when a holder resigns
CONNECT_TIMEOUT: Final = 5

FENCE: Final = (
    "SELECT 1 FROM leases WHERE name = %s AND holder = %s AND epoch = %s"
    " AND expires_at > lease_now() FOR KEY SHARE"
)
_TAKE: Final = (
    "INSERT INTO leases (name, holder, replica, epoch, acquired_at, expires_at)"
    " SELECT name, %s, %s, epoch + 1, lease_now(), lease_now() + %s FROM lease_epochs"
    " WHERE name = %s"
    " ON CONFLICT (name) DO NOTHING RETURNING holder, replica, epoch, expires_at - lease_now()"
)
_RENEW: Final = (
    "UPDATE leases SET expires_at = lease_now() + %s"
    " WHERE name = %s AND holder = %s AND epoch = %s AND expires_at > lease_now()"
    " RETURNING holder, replica, epoch, expires_at - lease_now()"
)
CURRENT: Final = (
    "SELECT holder, replica, epoch, expires_at - lease_now() FROM leases WHERE name = %s"
)


def import_psycopg() -> Any:
    """psycopg, loaded now, for the lease and the PostgreSQL store alike (only with
    ``state_url``); StateError when it is not installed."""
    try:
        import psycopg  # noqa: PLC0415 (loaded only with state_url)
    except ImportError:
        raise StateError("state_url needs the 'postgres' extra (pip install "
                         "'wasend-supervisor[postgres]'), and psycopg is not installed"
                         ) from None
    return psycopg


class Held(msgspec.Struct, frozen=True):
    """The lease as the database has it: who holds it (``holder``, one process;
    ``replica``, its name), its ``epoch``, and seconds until it expires by the
    database's clock (negative: expired, not yet taken)."""

    holder: str
    replica: str
    epoch: int
    expires_in: float


def held_of(row: Sequence[Any] | None) -> Held | None:
    """The lease of a ``CURRENT`` row (None: no row)."""
    if row is None:
        return None
    holder, replica, epoch, expires_in = row
    return Held(str(holder), str(replica), int(epoch), float(expires_in))


class Leases:
    """The lease row of one database, for one process (``holder``, named ``replica``)."""

    def __init__(self, url: str, holder: str, replica: str, *, name: str = NAME,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        self._psycopg = import_psycopg()
        self._url = url
        self._secrets = dsn_secrets(url)
        self.location = describe_dsn(url)
        self.holder = holder
        self.replica = replica
        self.name = name
        self.timeout = timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._listening = False
        self._limit = f"SET LOCAL lock_timeout = '{round(timeout * 1000)}ms'"

    def __repr__(self) -> str:
        return f"<Leases {self.location} {self.name} holder={self.replica}>"

    # ------------------------------------------------------------- the connection

    async def _db(self) -> psycopg.AsyncConnection[Any]:
        known = self._conn
        if known is not None and not known.closed and not known.broken:
            return known
        await self._drop()
        try:
            # No prepared statements: through a transaction pool (PgBouncer) another
            # client's would collide with them on a shared server connection.
            conn: psycopg.AsyncConnection[Any] = await self._psycopg.AsyncConnection.connect(
                self._url, autocommit=True, prepare_threshold=None,
                connect_timeout=max(1, round(self.timeout)))
        except self._psycopg.Error as exc:
            raise StateError(f"cannot reach {self.location}: {self._problem(exc)}") from None
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._listening = False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def _problem(self, exc: BaseException) -> str:
        return db_problem(exc, self._secrets)

    async def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]],
                           within: float) -> list[tuple[Any, ...] | None]:
        """Run the statements in one transaction within ``within`` seconds; the first row
        each returned (None: none). StateError, the connection dropped, if it failed."""
        found: list[tuple[Any, ...] | None] = []
        try:
            async with asyncio.timeout(within):
                conn = await self._db()
                async with conn.transaction():
                    # A statement waits for another's lock (a claim holding the lease row)
                    # this long at most on the server too, whatever becomes of the
                    # caller's wait; for this transaction alone (a pool's other clients
                    # never get it).
                    await conn.execute(self._limit)
                    for sql, params in statements:
                        cursor = await conn.execute(sql, params)
                        row = await cursor.fetchone() if cursor.description else None
                        found.append(None if row is None else tuple(row))
        except TimeoutError:
            await self._drop()
            raise StateError(f"{self.location} did not answer within {within:g} s") from None
        except self._psycopg.Error as exc:
            await self._drop()
            raise StateError(f"lost the connection to {self.location}: "
                             f"{self._problem(exc)}") from None
        except asyncio.CancelledError:
            self._abandon()  # in an unknown state: the next call connects again
            raise
        return found

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        self._listening = False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()

    # ------------------------------------------------------------------ the lease

    async def take(self, lease: float, within: float) -> Held | None:
        """Take the lease for ``lease`` seconds if nobody holds it (or its holder's has
        expired); the lease as it is afterwards (ours or another's; None: nobody's, only
        if it was resigned meanwhile)."""
        _, _, taken, _, current = await self._transaction([
            ("INSERT INTO lease_epochs (name, epoch) VALUES (%s, 0)"
             " ON CONFLICT (name) DO NOTHING", (self.name,)),
            ("DELETE FROM leases WHERE name = %s AND expires_at <= lease_now()", (self.name,)),
            (_TAKE, (self.holder, self.replica, lease, self.name)),
            # Raised only by the one that inserted (the others' insert did nothing).
            ("UPDATE lease_epochs SET epoch = leases.epoch FROM leases"
             " WHERE lease_epochs.name = %s AND leases.name = lease_epochs.name"
             " AND leases.holder = %s AND leases.epoch > lease_epochs.epoch",
             (self.name, self.holder)),
            (CURRENT, (self.name,)),
        ], within)
        return held_of(taken) or held_of(current)

    async def renew(self, epoch: int, lease: float, within: float) -> Held | None:
        """Move our lease's expiry to ``lease`` seconds from now; None when it is not ours
        any more (taken, resigned) or had expired."""
        (renewed,) = await self._transaction(
            [(_RENEW, (lease, self.name, self.holder, epoch))], within)
        return held_of(renewed)

    async def resign(self, epoch: int, within: float) -> bool:
        """Give the lease up and tell the standbys; whether it was still ours."""
        gone, _ = await self._transaction([
            ("DELETE FROM leases WHERE name = %s AND holder = %s AND epoch = %s"
             " RETURNING epoch", (self.name, self.holder, epoch)),
            ("SELECT pg_notify(%s, %s)", (CHANNEL, self.name)),
        ], within)
        return gone is not None

    async def resigned(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a holder's resignation; whether one came. StateError
        (the connection dropped) when the database cannot be listened to."""
        try:
            conn = await self._db()
            if not self._listening:
                async with asyncio.timeout(self.timeout):
                    await conn.execute(f"LISTEN {CHANNEL}")
                self._listening = True
            async for _ in conn.notifies(timeout=max(0.01, seconds), stop_after=1):
                return True
        except asyncio.CancelledError:
            self._abandon()
            raise
        except TimeoutError:
            await self._drop()
            raise StateError(f"{self.location} did not answer within "
                             f"{self.timeout:g} s") from None
        except self._psycopg.Error as exc:
            await self._drop()
            raise StateError(f"lost the connection to {self.location}: "
                             f"{self._problem(exc)}") from None
        return False

    async def aclose(self) -> None:
        await self._drop()
