"""One poll cycle: list once, decide for every session, act on the few that need it,
record what changed, log what happened.

The same ``Supervisor.poll`` serves ``run`` (called by the scheduler) and ``check``
(called once, or a few times while waiting). It is the only place where the client,
the decision core and the store meet.

Everything the cycle does with the store (reads, decisions, writes) is handed to the
store's ``run`` (``Journal.keep``), so that waiting for the state file never stalls the
event loop; the events of a write are logged, and observed, only once it has committed.
So a restart that could not be claimed (a full disk, a lock held too long) is neither
logged nor counted nor sent, and each one sent is logged, counted and in the history once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Protocol, TypeVar

import msgspec
import structlog
from pydantic import SecretStr

from supervisor.api.errors import (
    ApiError,
    AuthFailed,
    Conflict,
    RateLimited,
    SessionGone,
    UnexpectedResponse,
)
from supervisor.clock import Clock
from supervisor.domain import core, history
from supervisor.domain import events as ev
from supervisor.domain.auth import OPEN, AuthBlock
from supervisor.domain.models import (
    Action,
    ActionKind,
    Event,
    Outcome,
    OutcomeKind,
    Phase,
    Record,
    SessionInfo,
    SessionList,
    Step,
)
from supervisor.domain.policy import Policy, poll_backoff, poll_resume_at
from supervisor.state.store import Beat, Hold, StateError, Store

log = structlog.get_logger("supervisor.cycle")

# A session may need several calls in one cycle (restart, conflict, re-read, stop,
# restart); this bounds them so that a confused API cannot keep us in a loop.
MAX_STEPS_PER_SESSION = 6
# A claim lost to another process is re-read and decided again, this many times at most.
MAX_CLAIM_TRIES = 3

_T = TypeVar("_T")


class Api(Protocol):
    async def list_sessions(self) -> SessionList: ...

    async def get_session(self, session_id: str, *, spare: bool = False) -> SessionInfo: ...

    async def restart(self, session_id: str) -> SessionInfo: ...

    async def stop(self, session_id: str) -> SessionInfo: ...

    def set_api_key(self, api_key: SecretStr) -> None: ...


class PollResult(msgspec.Struct):
    """What one cycle did, for the daemon's status line and for ``check``."""

    ok: bool
    error: ApiError | None = None
    skipped: bool = False
    skip_reason: str | None = None  # auth_failed (key refused) or api_unavailable (backoff)
    sessions: int = 0
    actions: int = 0
    touched: set[str] = msgspec.field(default_factory=set)  # sessions acted on this cycle
    failed: set[str] = msgspec.field(default_factory=set)  # their attempt failed this cycle
    planned: dict[str, Action] = msgspec.field(default_factory=dict)  # dry run: what would be done
    # dry run: the record each session would have now (nothing was written); None: forgotten
    decided: dict[str, Record | None] = msgspec.field(default_factory=dict)
    seen: list[SessionInfo] = msgspec.field(default_factory=list)  # what this cycle observed
    held: dict[str, Hold] = msgspec.field(default_factory=dict)  # on hold: left alone
    errors: dict[str, ApiError] = msgspec.field(default_factory=dict)  # last error per session
    duration: float = 0.0  # seconds the cycle took (0 when skipped)
    state_error: str | None = None  # the state file could not be read or written


def emit(event: Event) -> None:
    getattr(log, event.level)(event.name, **event.fields)


class Journal:
    """The events of the cycle's writes: logged, and handed to the observers, only once
    the write that made them has committed. So a write that failed, or lost its claim to
    another process, leaves no event and no count; each one made leaves them once."""

    def __init__(self, observers: Callable[[], Iterable[Callable[[Event], None]]]) -> None:
        self._observers = observers
        # Where the events of writes wait to be logged, each with whether observers see
        # it too (None: logged at once).
        self._pending: list[tuple[Event, bool]] | None = None

    async def keep(self, store: Store, work: Callable[[], _T]) -> _T:
        """Do ``work`` (store reads, decisions, writes) through the store's ``run``, so
        that waiting for the state file does not stall the event loop; then log and
        observe the events of the writes it committed, and only those, even when a
        later write of the same work failed."""
        committed: list[tuple[Event, bool]] = []

        def kept() -> _T:
            self._pending = committed
            try:
                return work()
            finally:
                self._pending = None

        try:
            return await store.run(kept)
        finally:
            for event, observed in committed:
                self._emit(event, observed)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The events of the writes made inside wait for the block to end without an
        exception (its transaction committed); then they are the block's own writes'."""
        outer, self._pending = self._pending, []
        try:
            yield
            made = self._pending
        finally:
            self._pending = outer
        for event, observed in made:
            self.committed((event,), observed=observed)

    def committed(self, events: Iterable[Event], *, observed: bool = True) -> None:
        """The events of a write that was made: logged (and, if ``observed``, handed to
        the observers) once ``keep``'s work is done, or now outside it."""
        if self._pending is None:
            for event in events:
                self._emit(event, observed)
        else:
            self._pending.extend((event, observed) for event in events)

    def _emit(self, event: Event, observed: bool) -> None:
        emit(event)
        if not observed:
            return
        for observe in self._observers():
            try:
                observe(event)
            except Exception as exc:  # a metrics hook must not break a cycle
                log.warning(ev.POLL_OBSERVER_FAILED, observed=event.name,
                            error=type(exc).__name__)


class Continuity(msgspec.Struct, frozen=True):
    """What a supervisor built for reloaded settings takes over from the one it replaces
    (``wiring.rebuild``): the auth block and the poll backoff (monotonic), and what
    ``/readyz`` and the metrics show."""

    auth: AuthBlock = OPEN
    poll_resume_at: float | None = None
    last_success: float | None = None
    consecutive_failures: int = 0


class Supervisor:
    """Holds what lives across cycles: the client, the store, the policy, whether the key
    is refused (``auth``, a ``domain.auth.AuthBlock``), the poll backoff, the observers.
    The rules are the domain's (core, policy, auth); this runs them, logs and acts."""

    def __init__(
        self,
        client: Api,
        store: Store,
        policy: Policy,
        clock: Clock,
        rng: random.Random,
        *,
        sessions: Iterable[str] = (),
        get_concurrency: int = 8,
        auth_retry_interval: float = 300.0,
        key_reader: Callable[[], SecretStr] | None = None,
        poll_interval: float | None = None,
        in_flight_grace: float = 315.0,
        carried: Continuity | None = None,
        observers: Iterable[Callable[[Event], None]] = (),
    ) -> None:
        self.client = client
        self.store = store
        self.policy = policy
        self.clock = clock
        self.rng = rng
        self.configured = tuple(dict.fromkeys(sessions))
        self.get_concurrency = get_concurrency
        self.auth_retry_interval = auth_retry_interval
        self.key_reader = key_reader
        carried = carried or Continuity()
        # Whether the key was refused, and when it is tried again (the rule: domain.auth).
        self.auth: AuthBlock = carried.auth
        self.last_success = carried.last_success  # wall time of the last successful list
        self.consecutive_failures = carried.consecutive_failures
        # Called with every event of the decision core, after it is logged (metrics).
        self.observers: list[Callable[[Event], None]] = list(observers)
        # Polls back off while the API is down (None: no backoff, as in ``check``).
        self.poll_interval = poll_interval
        self.poll_resume_at = carried.poll_resume_at  # monotonic
        # A restart another process recorded as in flight, and has not seen answered, is
        # left to it this long (its request may still be waiting at its rate gate).
        self.in_flight_grace = in_flight_grace
        self._journal = Journal(lambda: self.observers)
        # Whether this process's last successful poll was the last poll of the sessions
        # (False after ``took_over``: another replica polled in between).
        self._polled_last = True

    def took_over(self) -> None:
        """This replica leads again, after others polled: its own last poll is not the
        poll before the next one (the zombie rule counts from that one)."""
        self._polled_last = False

    def continuity(self) -> Continuity:
        """What a supervisor that replaces this one takes over."""
        return Continuity(self.auth, self.poll_resume_at, self.last_success,
                          self.consecutive_failures)

    # ------------------------------------------------------------------ the cycle

    async def poll(self, *, dry_run: bool = False) -> PollResult:
        try:
            return await self._poll(dry_run)
        except StateError as exc:
            log.error(ev.STATE_UNAVAILABLE, problem=str(exc))
            return PollResult(ok=False, state_error=str(exc))

    async def _poll(self, dry_run: bool) -> PollResult:
        started = self.clock.monotonic()
        if self.auth.waiting(started):
            log.debug(ev.POLL_SKIPPED, reason="auth_failed",
                      retry_in=round(self.auth.retry_in(started), 3))
            await self._beat(listed=False, ok=False, dry_run=dry_run)
            return PollResult(ok=False, skipped=True, skip_reason="auth_failed")
        if self.auth.due(started):
            self._reload_key()
        if self.poll_resume_at is not None and started < self.poll_resume_at:
            log.debug(ev.POLL_SKIPPED, reason="api_unavailable",
                      retry_in=round(self.poll_resume_at - started, 3))
            await self._beat(listed=False, ok=False, dry_run=dry_run)
            return PollResult(ok=False, skipped=True, skip_reason="api_unavailable")
        observed_at = self.clock.now()  # what the list says is at least this recent
        try:
            listing = await self.client.list_sessions()
        except ApiError as exc:
            self._poll_failed(exc, started)
            await self._beat(listed=True, ok=False, dry_run=dry_run, at=observed_at)
            return PollResult(ok=False, error=exc, duration=self.clock.monotonic() - started)
        self.poll_resume_at = None
        if self.auth.blocked:
            self.auth = self.auth.accepted()
            log.info(ev.API_AUTH_RESTORED)
        for problem in listing.problems:
            log.warning(ev.POLL_ITEM_UNREADABLE, problem=problem)

        result = PollResult(ok=True)
        seen = await self._observe(listing, dry_run, observed_at, result)
        pending = await self._keep(partial(self._decide_all, seen, observed_at, dry_run, result))
        result.sessions = len(seen)
        result.seen = seen

        unrecorded: StateError | None = None
        for record, action in pending:
            try:
                if self.auth.blocked:
                    # The key was refused mid-cycle: leave the rest for when it works again.
                    deferred = core.deferred(record, self.clock.now(), "auth_failed", 401)
                    await self._keep(partial(self._record, record, deferred, record.session_id,
                                             dry_run))
                    continue
                await self._act(record, action, result)
            except StateError as exc:
                # What came of it could not be recorded. The other restarts are claimed,
                # logged and in the history already: they are sent all the same.
                unrecorded = unrecorded or exc
        if unrecorded is not None:
            raise unrecorded

        self.last_success = self.clock.now()
        self.consecutive_failures = 0
        self._polled_last = True
        result.duration = self.clock.monotonic() - started
        log.info(
            ev.POLL_COMPLETED,
            sessions=result.sessions,
            actions=result.actions,
            unreadable=len(listing.problems),
            duration_ms=round(result.duration * 1000),
        )
        return result

    async def restart_now(self, session_id: str, by: str) -> tuple[PollResult, Record | None]:
        """A person's "restart now" (``runtime.operator``), by the path of every restart:
        the core's request (``core.restart_now``) claimed in one transaction with its
        history, before anything is sent, then sent through the gate and what came of it
        recorded, as a poll's restart is. Only between polls (the daemon holds its next
        poll back). What was done, and the record after it.

        Raises ValueError (one line, nothing written or sent) when it cannot be: the
        session is not known, is on hold, or the core refuses (a restart in flight...).
        """
        result = PollResult(ok=True)

        def claim() -> tuple[Record, Action]:
            with self._journal.held(), self.store.transaction():
                hold = self.store.holds().get(session_id)
                if hold is not None:
                    raise ValueError(f"session {session_id} is paused (by {hold.by});"
                                     " resume it first")
                record = self.store.get(session_id)
                if record is None or (self.configured and session_id not in self.configured):
                    raise ValueError(f"session {session_id} is not supervised here")
                step = core.restart_now(record, self.clock.now(), by)
                if step.record is None or step.action is None or not self._record(
                    record, step, session_id, False, claim=True
                ):
                    raise ValueError(f"session {session_id} changed meanwhile; try again")
                return step.record, step.action

        record, action = await self._keep(claim)
        await self._act(record, action, result)
        return result, await self._keep(partial(self.store.get, session_id))

    def known_as(self, name: str) -> str | None:
        """The id of the supervised session a webhook names: by its id, else by its name
        (the provider's envelope names the session, which may be its name); None when it
        is none of ours (unknown to the state and not configured)."""
        if self.configured:
            if name in self.configured:
                return name
        elif self.store.get(name) is not None:
            return name
        for record in self.store.records():
            if record.name == name and (not self.configured
                                        or record.session_id in self.configured):
                return record.session_id
        return None

    async def nudge(self, name: str) -> str | None:
        """A webhook spoke of the session ``name``: read it now (one GET through the rate
        gate) and decide on what the API said, exactly as after a poll (the same claims,
        so a poll deciding at the same time cannot make a second restart), acting on it
        at once. The status read; None when there was nothing to read (the key refused, a
        lookup failed, the session gone). Raises LookupError for a session that is none
        of ours, before any request. ``session.nudged`` says what it read."""
        session_id = await self._keep(partial(self.known_as, name))
        if session_id is None:
            raise LookupError(name)
        result = PollResult(ok=True)
        if self.auth.blocked:
            return None
        observed_at = self.clock.now()
        found = await self._lookup([session_id], False, result, spare=True)
        if not found:
            return None
        info = found[0]
        log.info(ev.SESSION_NUDGED, session_id=session_id, status=info.status)

        def decide() -> list[tuple[Record, Action]]:
            pending: list[tuple[Record, Action]] = []
            with self._journal.held(), self.store.transaction():
                result.held = self.store.holds()
                self._decide(info, observed_at, self.clock.now(), False, result, pending)
            return pending

        for record, action in await self._keep(decide):
            await self._act(record, action, result)
        return info.status

    def _decide_all(
        self, seen: list[SessionInfo], observed_at: float, dry_run: bool, result: PollResult,
    ) -> list[tuple[Record, Action]]:
        """Decide on every observed session in one transaction: it holds the state file's
        write lock, reads what other processes wrote, and commits (restarts recorded as in
        flight included) before any request is sent. The restarts to send. The sessions on
        hold (read in the same transaction: a ``pause`` by another process is seen here)
        are observed and recorded, never acted on (``core.decide(held=True)``)."""
        pending: list[tuple[Record, Action]] = []
        with self._journal.held(), (
            contextlib.nullcontext() if dry_run else self.store.transaction()
        ):
            now = self.clock.now()
            result.held = self.store.holds()
            # The poll before this one, if it saw the sessions (none failed in between).
            previous = (self.last_success if self.consecutive_failures == 0
                        and self._polled_last else None)
            for info in seen:
                self._decide(info, observed_at, now, dry_run, result, pending, previous)
            if not dry_run:  # the heartbeat: one small row, in the same commit
                self.store.beat(self._heartbeat(listed=True, ok=True, at=observed_at))
        return pending

    def _decide(
        self,
        info: SessionInfo,
        observed_at: float,
        now: float,
        dry_run: bool,
        result: PollResult,
        pending: list[tuple[Record, Action]],
        previous_poll: float | None = None,
    ) -> None:
        """Decide on one observed session and record it. A restart it asks for is claimed
        (recorded as in flight) and queued only if no other process changed the record
        since it was read; otherwise the record is read again and decided on again."""
        for _ in range(MAX_CLAIM_TRIES):
            old = self.store.get(info.session_id)
            if old is not None and self._left_to_others(old, observed_at, now):
                return
            step = core.decide(info, old, now, self.policy, self.rng,
                               held=info.session_id in result.held,
                               previous_poll=previous_poll)
            if dry_run:
                result.decided[info.session_id] = step.record
            if step.action is not None and dry_run:
                result.planned[info.session_id] = step.action
                return  # a dry run changes nothing
            if self._record(old, step, info.session_id, dry_run, claim=True):
                if step.action is not None and step.record is not None:
                    pending.append((step.record, step.action))
                return
            log.info(ev.STATE_CLAIM_LOST, session_id=info.session_id,
                     action=None if step.action is None else step.action.kind.value)

    def _left_to_others(self, record: Record, observed_at: float, now: float) -> bool:
        """Whether another process owns what happens to this session right now: it wrote
        the record after this cycle's observation (which is then stale), or it has a
        restart in flight that it has not seen answered yet."""
        written = self.store.written_elsewhere_at(record.session_id)
        if written is None:
            return False
        reason = None
        if observed_at <= written <= now:
            reason = "changed_after_observation"
        elif (
            record.phase is Phase.VERIFYING
            and record.verify_deadline is None
            and record.requested_at is not None
            and 0.0 <= now - record.requested_at < self.in_flight_grace
        ):
            reason = "restart_in_flight"
        if reason is None:
            return False
        log.debug(ev.STATE_LEFT_TO_OTHER_PROCESS, session_id=record.session_id, reason=reason)
        return True

    async def _observe(
        self, listing: SessionList, dry_run: bool, observed_at: float, result: PollResult
    ) -> list[SessionInfo]:
        """The sessions to decide on: the listed ones, filtered to the configured ones,
        plus per-session GETs for configured ones the list did not show."""
        now = self.clock.now()
        if not self.configured:
            listed = {info.session_id: info for info in listing.sessions}

            def vanished() -> None:
                for record in self.store.records():
                    if record.session_id not in listed and not self._left_to_others(
                        record, observed_at, now
                    ):
                        step = core.vanished(record, now, self.policy, configured=False)
                        self._record(record, step, record.session_id, dry_run)

            await self._keep(vanished)
            return list(listed.values())

        by_id = {info.session_id: info for info in listing.sessions}

        def sort() -> tuple[list[SessionInfo], list[str]]:
            seen: list[SessionInfo] = []
            missing: list[str] = []
            for session_id in self.configured:
                info = by_id.get(session_id)
                if info is not None:
                    seen.append(info)
                    continue
                known = self.store.get(session_id)
                due = known is None or known.phase is not Phase.GONE or (
                    known.next_attempt_at is not None and now >= known.next_attempt_at
                )
                if due:
                    missing.append(session_id)
            return seen, missing

        seen, missing = await self._keep(sort)
        if missing:
            seen.extend(await self._lookup(missing, dry_run, result))
        return seen

    async def _lookup(
        self, session_ids: list[str], dry_run: bool, result: PollResult, *,
        spare: bool = False,
    ) -> list[SessionInfo]:
        """GET sessions the list did not show, a few at a time (``spare``: after every
        other request at the gate)."""
        limit = asyncio.Semaphore(self.get_concurrency)

        async def one(session_id: str) -> SessionInfo | None:
            async with limit:
                try:
                    return await self.client.get_session(session_id, spare=spare)
                except SessionGone:
                    await self._keep(partial(self._gone, session_id, dry_run, result))
                except AuthFailed as exc:
                    self._auth_failed(exc)
                except ApiError as exc:
                    log.warning(ev.SESSION_LOOKUP_FAILED, session_id=session_id,
                                error=exc.kind, http_status=exc.http_status)
                return None

        found = await asyncio.gather(*(one(session_id) for session_id in session_ids))
        return [info for info in found if info is not None]

    def _gone(self, session_id: str, dry_run: bool, result: PollResult) -> None:
        record = self.store.get(session_id) or Record(session_id)
        step = core.vanished(record, self.clock.now(), self.policy, configured=True)
        if dry_run:
            result.decided[session_id] = step.record
        self._record(self.store.get(session_id), step, session_id, dry_run)

    async def _act(self, record: Record, action: Action, result: PollResult) -> None:
        result.actions += 1
        result.touched.add(record.session_id)
        current: Record | None = record
        next_action: Action | None = action
        for _ in range(MAX_STEPS_PER_SESSION):
            if current is None or next_action is None:
                return
            outcome = await self._execute(next_action, result)
            step = core.apply(current, next_action, outcome, self.clock.now(), self.policy,
                              self.rng)
            if step.failed:
                result.failed.add(record.session_id)
            if not await self._keep(partial(self._record, current, step, record.session_id,
                                            False, next_action)):
                return  # another process has taken this session over: leave it to it
            current, next_action = step.record, step.action
        if next_action is not None:
            log.warning(ev.SESSION_TOO_MANY_STEPS, session_id=record.session_id,
                        steps=MAX_STEPS_PER_SESSION)

    async def _execute(self, action: Action, result: PollResult) -> Outcome:
        """The call ``action`` asks for, its answer as an ``Outcome`` (an API error kept in
        ``result.errors`` too)."""
        started = self.clock.monotonic()
        try:
            return await self._call(action, started)
        except ApiError as exc:
            result.errors[action.session_id] = exc
            return self._outcome_of(exc, action, started)

    async def _call(self, action: Action, started: float) -> Outcome:
        if action.kind is ActionKind.RESTART:
            info = await self.client.restart(action.session_id)
        elif action.kind is ActionKind.STOP:
            info = await self.client.stop(action.session_id)
        else:
            info = await self.client.get_session(action.session_id)
        return Outcome(OutcomeKind.OK, status=info.status,
                       duration_ms=(self.clock.monotonic() - started) * 1000)

    def _outcome_of(self, exc: ApiError, action: Action, started: float) -> Outcome:
        if isinstance(exc, Conflict):
            return Outcome(OutcomeKind.CONFLICT, http_status=exc.http_status)
        if isinstance(exc, SessionGone):
            return Outcome(OutcomeKind.GONE, http_status=exc.http_status)
        if isinstance(exc, RateLimited):
            return Outcome(OutcomeKind.RATE_LIMITED, http_status=exc.http_status)
        if isinstance(exc, AuthFailed):
            self._auth_failed(exc)
            return Outcome(OutcomeKind.AUTH_FAILED, http_status=exc.http_status)
        if isinstance(exc, UnexpectedResponse):
            log.warning(ev.API_UNEXPECTED_RESPONSE, call=exc.call, session_id=action.session_id,
                        http_status=exc.http_status, detail=str(exc),
                        excerpt=exc.excerpt or None)
        return Outcome(OutcomeKind.FAILED, http_status=exc.http_status, reason=exc.kind,
                       duration_ms=(self.clock.monotonic() - started) * 1000)

    # -------------------------------------------------------------- bookkeeping

    async def _keep(self, work: Callable[[], _T]) -> _T:
        return await self._journal.keep(self.store, work)

    def _record(
        self,
        old: Record | None,
        step: Step,
        session_id: str,
        dry_run: bool,
        action: Action | None = None,
        *,
        claim: bool = False,
    ) -> bool:
        """Write the step's record (compare-and-set against ``old``) and its history rows
        in one transaction; its events are logged once that (and any transaction it is
        part of) has committed. StateError, with nothing written or logged, if it could
        not be written.

        False if another process changed the record first: nothing is written. A
        ``claim`` (a decision, to be read and made again) then logs nothing; what came
        of an action (or a lookup) yields to the other record, but the events of what
        happened stand: a further restart the step asked for is neither recorded nor
        sent. A step that asks for a restart or a stop is written only while this
        process may act (``Store.fenced``: with replicas, while it leads): else
        ``Fenced``, and nothing is written or sent."""
        if not dry_run:
            rows = history.entries(step.events, self.clock.now(), action)
            changed = step.record is not old
            if changed or rows:
                with self.store.transaction():
                    if step.action is not None and step.action.kind is not ActionKind.GET:
                        self.store.fenced()  # a request to claim: only while leading
                    won = not changed or self.store.swap(old, step.record)
                    if won:
                        self.store.add_history(rows)
                if not won:
                    if not claim:
                        log.warning(ev.STATE_WRITE_CONFLICT, session_id=session_id)
                        self._journal.committed(
                            (e for e in step.events if e.name != ev.RESTART_REQUESTED),
                            observed=False,
                        )
                    return False
        self._journal.committed(step.events)
        return True

    def _heartbeat(self, *, listed: bool, ok: bool, at: float) -> Beat:
        kind = "check" if self.poll_interval is None else "run"
        return Beat(kind, at, listed, ok, self.poll_interval, self.configured)

    async def _beat(
        self, *, listed: bool, ok: bool, dry_run: bool, at: float | None = None
    ) -> None:
        """The heartbeat of a poll that listed nothing: a state file that cannot be written
        does not hide why the poll failed (the next poll reports it)."""
        if dry_run:
            return
        beat = self._heartbeat(listed=listed, ok=ok, at=self.clock.now() if at is None else at)
        try:
            await self.store.run(partial(self.store.beat, beat))
        except StateError as exc:
            log.error(ev.STATE_UNAVAILABLE, problem=str(exc))

    def _poll_failed(self, exc: ApiError, started: float) -> None:
        self.consecutive_failures += 1
        next_poll_in = None
        if isinstance(exc, AuthFailed):
            self._auth_failed(exc)
        elif self.poll_interval is not None and not isinstance(exc, RateLimited):
            # The API is down or answers garbage: poll less often until it works again.
            next_poll_in = poll_backoff(self.poll_interval, self.consecutive_failures)
            self.poll_resume_at = poll_resume_at(started, self.poll_interval, next_poll_in)
        log.warning(
            ev.POLL_FAILED,
            error=exc.kind,
            http_status=exc.http_status,
            detail=str(exc),
            excerpt=exc.excerpt if isinstance(exc, UnexpectedResponse) and exc.excerpt else None,
            consecutive_failures=self.consecutive_failures,
            duration_ms=round((self.clock.monotonic() - started) * 1000),
            next_poll_in=next_poll_in,
        )


    def _auth_failed(self, exc: AuthFailed) -> None:
        first = not self.auth.blocked
        self.auth = self.auth.refused(self.clock.monotonic(), self.auth_retry_interval)
        if first:
            log.critical(
                ev.API_AUTH_FAILED,
                call=exc.call,
                http_status=exc.http_status,
                retry_in=self.auth_retry_interval,
            )

    def _reload_key(self) -> None:
        if self.key_reader is None:
            return
        try:
            key = self.key_reader()
        except Exception as exc:  # a one-line problem from the settings layer
            log.error(ev.API_KEY_UNREADABLE, problem=str(exc))
            return
        self.client.set_api_key(key)
