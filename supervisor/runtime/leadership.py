"""Leadership among replicas on one PostgreSQL database: which of them polls and acts.

``Leadership.run`` is a background task of the daemon. Standing by, it tries to take the
lease (``state.lease.Leases.take``) whenever the one it saw could have expired, at least
every ``ha.renew`` seconds, and at once when a holder resigns (``NOTIFY``). Leading, it
renews the lease every ``ha.renew`` seconds. The rules of time are the domain's
(``domain.leadership.Terms``); this shell does the I/O, logs the ``ha.*`` events and
tells the rest:

* the daemon polls only while ``acting()`` (``Daemon.may_poll``), and at once when
  elected (``on_elected``: ``Daemon.wake``);
* the rate gate asks ``permit`` as each request leaves: no request at all once the
  holder's own monotonic clock says the lease could have expired, even in the middle of
  a poll, even after the process was stopped (SIGSTOP) and continued;
* the store fences every claim of a restart or a stop with the epoch won
  (``PostgresStore.fence``): a replica that lost the lease, however it lost it, cannot
  claim one (``Fenced``).

A renewal that fails (the database unreachable, slow) leaves the leader acting until its
lease could expire; then it stops, loudly (``ha.lost`` at error level, ``/readyz`` 503 with
role ``stopped``, ``on_stopped``), and keeps trying to take the lease again, so that
supervision resumes by itself when the database is back. ``resign`` (at a clean stop,
once the poll in flight has ended) deletes the lease and tells the standbys.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from supervisor.clock import Clock
from supervisor.config.model import Settings
from supervisor.domain import events as ev
from supervisor.domain.leadership import Role, Terms
from supervisor.state.lease import NAME, Held
from supervisor.state.store import Fenced, StateError

log = structlog.get_logger("supervisor.ha")


class LeaseApi(Protocol):
    """What leadership needs of the lease (``state.lease.Leases`` has it)."""

    holder: str
    replica: str

    async def take(self, lease: float, within: float) -> Held | None: ...

    async def renew(self, epoch: int, lease: float, within: float) -> Held | None: ...

    async def resign(self, epoch: int, within: float) -> bool: ...

    async def resigned(self, seconds: float) -> bool: ...

    async def aclose(self) -> None: ...


class Fencing(Protocol):
    """What leadership tells the store (``PostgresStore.fence``)."""

    def fence(self, name: str, holder: str, epoch: int) -> None: ...


def holder_id(replica: str) -> str:
    """One process's name in the lease: its replica's, its pid and a random part (two
    processes of one replica name never take each other for the holder)."""
    return f"{replica}/{os.getpid()}/{secrets.token_hex(4)}"


def replica_name(configured: str) -> str:
    """``ha.replica``, or the host name (cut to what the setting allows)."""
    if configured:
        return configured
    host = socket.gethostname().split(".")[0] or "replica"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in host)[:63]


class Leadership:
    def __init__(self, leases: LeaseApi, fencing: Fencing, terms: Terms, clock: Clock, *,
                 name: str = NAME) -> None:
        self.leases = leases
        self.fencing = fencing
        self.terms = terms
        self.clock = clock
        self.name = name
        self.replica = leases.replica
        self.role = Role.STANDBY
        self.epoch = 0  # the epoch won (0: none)
        self.leader: str | None = None  # the holder's replica name, as last seen
        self.leader_epoch: int | None = None
        self.problem: str | None = None  # why the database could not be used, last time
        self.on_elected: list[Callable[[], None]] = []
        self.on_stopped: list[Callable[[str], None]] = []  # with the problem
        self.on_resumed: list[Callable[[], None]] = []  # the database answers again
        self.on_standby: list[Callable[[str], None]] = []  # another leads: its name
        self._until = -math.inf  # monotonic: acting until
        self._seen_at = -math.inf  # monotonic: when the lease was last seen
        self._expires_in: float | None = None  # as last seen
        fencing.fence(name, leases.holder, 0)

    def __repr__(self) -> str:
        return f"<Leadership {self.replica} {self.role.value} epoch={self.epoch}>"

    # ------------------------------------------------------------------ the face

    def acting(self) -> bool:
        """Whether this replica may poll and send requests now."""
        return self.role is Role.LEADER and self.clock.monotonic() < self._until

    def permit(self) -> None:
        """Raise ``Fenced`` unless this replica may act now (the rate gate asks)."""
        if not self.acting():
            leader = self.leader if self.leader is not None else "none"
            raise Fenced(f"replica {self.replica} does not lead (leader: {leader})")

    def expires_in(self) -> float | None:
        """Seconds until the lease last seen expires, as of now (None: none seen)."""
        if self._expires_in is None:
            return None
        return self._expires_in - (self.clock.monotonic() - self._seen_at)

    def view(self) -> dict[str, Any]:
        """The role as ``/readyz`` and ``status`` show it."""
        expires = self.expires_in()
        return {"role": self.role.value, "replica": self.replica, "leader": self.leader,
                "epoch": self.leader_epoch,
                "lease_expires_in": None if expires is None else round(expires, 3),
                "problem": self.problem}

    # ----------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stand by, lead, renew, until ``stop`` is set (None: until cancelled; the daemon
        cancels its background work once the scheduler has stopped)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self._step(stop)
            except Exception:  # a bug: said, and the loop goes on (standing by first)
                log.exception(ev.DAEMON_TASK_CRASHED, task="leadership")
                if self.role is Role.LEADER:
                    self._lost("lease_expired")
                await self._wait(stop, self.terms.renew)

    async def _step(self, stop: asyncio.Event) -> None:
        if self.role is Role.LEADER:
            await self._wait(stop, min(self.terms.renew, self._until - self.clock.monotonic()))
            if not stop.is_set():
                await self._renew()
        else:
            wait = await self._try_take()
            if wait > 0 and not stop.is_set():
                await self._wait_for_resignation(stop, wait)

    async def resign(self) -> None:
        """Give the lease up (a clean stop, after the last poll): the standbys are told and
        one takes over at once. A lease that cannot be given up expires by itself."""
        if self.role is not Role.LEADER:
            return
        epoch = self.epoch
        self._stand_by()
        try:
            gone = await self.leases.resign(epoch, within=self.terms.renew)
        except StateError as exc:
            log.warning(ev.HA_RESIGNED, replica=self.replica, epoch=epoch, resigned=False,
                        problem=str(exc))
            return
        log.info(ev.HA_RESIGNED, replica=self.replica, epoch=epoch, resigned=gone)

    async def aclose(self) -> None:
        await self.leases.aclose()

    # ------------------------------------------------------------------ steps

    async def _try_take(self) -> float:
        """One attempt to take the lease; the seconds to wait before the next (0: none,
        it was won)."""
        sent = self.clock.monotonic()
        try:
            held = await self.leases.take(self.terms.lease, within=self.terms.renew)
        except StateError as exc:
            self._unreachable(str(exc))
            return self.terms.renew
        self._reached()
        if self.role is Role.STOPPED:  # supervision resumes: by this replica or another
            self.role = Role.STANDBY
            for hook in self.on_resumed:
                hook()
        previous = self.leader_epoch
        self._saw(held, sent)
        if held is not None and held.holder == self.leases.holder:
            self._elected(held, sent, previous)
            return 0.0
        return self.terms.standby_wait(None if held is None else held.expires_in)

    async def _renew(self) -> None:
        sent = self.clock.monotonic()
        if sent >= self._until:  # renewals failed, or the process was stopped: too late
            self._lost("database_unreachable" if self.problem is not None
                       else "lease_expired")
            return
        try:
            held = await self.leases.renew(self.epoch, self.terms.lease,
                                           within=self.terms.within(self._until, sent))
        except StateError as exc:
            self._unreachable(str(exc))
            if self.clock.monotonic() >= self._until:
                self._lost("database_unreachable")
            return
        self._reached()
        if held is None:
            self._lost("lease_expired" if self.clock.monotonic() >= self._until
                       else "lease_taken")
            return
        self._saw(held, sent)
        self._until = self.terms.acting_until(sent, held.expires_in)

    def _elected(self, held: Held, sent: float, previous: int | None) -> None:
        self.role = Role.LEADER
        self.epoch = held.epoch
        self._until = self.terms.acting_until(sent, held.expires_in)
        self.fencing.fence(self.name, self.leases.holder, held.epoch)
        log.info(ev.HA_ELECTED, replica=self.replica, epoch=held.epoch,
                 previous_epoch=previous, lease=self.terms.lease)
        for hook in self.on_elected:
            hook()

    def _lost(self, reason: str) -> None:
        epoch = self.epoch
        unreachable = reason == "database_unreachable"
        self._stand_by(Role.STOPPED if unreachable else Role.STANDBY)
        fields = {"replica": self.replica, "epoch": epoch, "reason": reason}
        if unreachable:
            log.error(ev.HA_LOST, **fields, problem=self.problem,
                      detail="supervision stopped until the database answers again")
            for hook in self.on_stopped:
                hook(self.problem or reason)
        else:
            log.warning(ev.HA_LOST, **fields)

    def _stand_by(self, role: Role = Role.STANDBY) -> None:
        self.role = role
        self.epoch = 0
        self._until = -math.inf
        self.fencing.fence(self.name, self.leases.holder, 0)

    def _saw(self, held: Held | None, at: float) -> None:
        leader = None if held is None else held.replica
        epoch = None if held is None else held.epoch
        self._seen_at, self._expires_in = at, None if held is None else held.expires_in
        if (leader, epoch) != (self.leader, self.leader_epoch):
            self.leader, self.leader_epoch = leader, epoch
            if held is not None and held.holder != self.leases.holder:
                log.info(ev.HA_STANDBY, replica=self.replica, leader=leader, epoch=epoch,
                         expires_in=round(held.expires_in, 3))
                for hook in self.on_standby:
                    hook(held.replica)

    def _unreachable(self, problem: str) -> None:
        first = self.problem is None
        self.problem = problem
        if first:
            acting_for = max(0.0, self._until - self.clock.monotonic())
            log.warning(ev.HA_UNREACHABLE, replica=self.replica, role=self.role.value,
                        problem=problem,
                        acting_for=round(acting_for, 3) if self.role is Role.LEADER else None)

    def _reached(self) -> None:
        self.problem = None

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        if seconds <= 0:
            return
        stopping = asyncio.ensure_future(stop.wait())
        sleeping = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait({stopping, sleeping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopping, sleeping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _wait_for_resignation(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait ``seconds``, or less if a holder resigns or the daemon stops."""
        stopping = asyncio.ensure_future(stop.wait())
        told = asyncio.ensure_future(self.leases.resigned(seconds))
        try:
            await asyncio.wait({stopping, told}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # cancelled too (the daemon stops): nothing left on the connection
            for task in (stopping, told):
                if not task.done():
                    task.cancel()
            for task in (stopping, told):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if told.done() and not told.cancelled() and told.exception() is not None:
            self._unreachable(str(told.exception()))  # could not listen: wait as asked
            await self._wait(stop, seconds)


def build_leadership(settings: Settings, store: object, clock: Clock, replica: str,
                     ) -> Leadership:
    """The leadership of a ``run`` among replicas (``settings.ha_enabled()``): the lease
    in the state's PostgreSQL database, fencing ``store`` (a ``PostgresStore``)."""
    from supervisor.state.lease import CONNECT_TIMEOUT, Leases  # noqa: PLC0415 (with ha)
    from supervisor.state.postgres import PostgresStore  # noqa: PLC0415

    dsn = settings.state_dsn()
    if dsn is None or not isinstance(store, PostgresStore):
        raise StateError("ha needs the state in PostgreSQL (state_url or state_url_file)")
    terms = settings.ha.terms()
    # A claim's transaction holds the lease row: one its process was stopped in ends well
    # before a standby's takeover is due.
    store.end_idle_transactions_after(terms.lease / 3)
    leases = Leases(dsn.get_secret_value(), holder_id(replica), replica,
                    timeout=min(CONNECT_TIMEOUT, terms.renew))
    return Leadership(leases, store, terms, clock)
