"""The decision core: what to do with one session, given what was seen, what is
remembered and the time now. Pure: no I/O, no clock, no globals; randomness comes in.

Two entry points, both returning a ``Step`` (the new record, at most one action, the
events to log, and whether the attempt in flight failed):

* ``decide(seen, record, now, policy, rng)`` after a poll observed the session;
* ``apply(record, action, outcome, now, policy, rng)`` after the shell carried out an
  action the core asked for. It may ask for a follow-up action (a conflict is re-read
  with a GET; a session still failed after a conflict is stopped, then restarted).

``vanished(record, now, policy, configured=...)`` handles a session that the API no
longer knows (404, or missing from the account's list); ``retry_now(record, now)`` a
person's request to retry a given-up session at once; ``restart_now(record, now)`` a
person's request to restart a session at once (the operator's "restart now").

A session on hold (a person paused its supervision: ``decide(..., held=True)``; the
shell reads the holds from the store) is observed, not supervised: its record follows
what is seen as far as a sighting alone moves it (its status and name; healthy again,
needing a person), but nothing is asked of the API and nothing is counted: no restart,
no stop, no failed attempt, no give-up. Once released, the next poll decides on it as
usual, from the record the hold left (a session seen stopped while held is restarted).

Every restart request produces exactly one ``restart.requested`` event and, later,
exactly one outcome event for it: ``restart.succeeded`` (seen healthy within
``starting_timeout``), ``restart.failed``, ``restart.conflict`` (409/422, with how it
was resolved) or ``restart.deferred`` (429 or 401: not the session's fault, not counted).

A restart is recorded as in flight (phase ``VERIFYING``) *before* it is sent, so a
process that dies mid-request comes back without restarting the session again inside
its verification window.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from msgspec.structs import replace

from supervisor.domain import events as ev
from supervisor.domain.models import (
    Action,
    ActionKind,
    Event,
    LastOutcome,
    Outcome,
    OutcomeKind,
    Phase,
    Record,
    SessionInfo,
    StatusClass,
    Step,
)
from supervisor.domain.policy import Policy

# Phases from which a healthy sighting is a recovery (VERIFYING is a success of ours).
_BROKEN = frozenset({Phase.UNHEALTHY, Phase.GAVE_UP, Phase.NEEDS_PERSON})
# Why a session whose status says healthy is failed: its engine is not connected.
ZOMBIE_REASON = "engine_disconnected"


def _fields(record: Record, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"session_id": record.session_id, "session_name": record.name}
    fields.update({k: v for k, v in extra.items() if v is not None})
    return fields


def _event(name: str, record: Record, level: str = "info", **extra: Any) -> Event:
    return Event(name, level, _fields(record, **extra))


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _after(events: Iterable[Event], step: Step) -> Step:
    """``step``, with ``events`` (what led to it) before its own."""
    return replace(step, events=(*events, *step.events))


# --------------------------------------------------------------------------- decide


def decide(
    seen: SessionInfo,
    record: Record | None,
    now: float,
    policy: Policy,
    rng: random.Random,
    *,
    held: bool = False,
    previous_poll: float | None = None,
) -> Step:
    """A poll saw ``seen``: what now? ``held``: the session is on hold (see the module).
    ``previous_poll``: when the poll before this one saw the sessions, if it did (the last
    time this session could have been seen connected)."""
    status = seen.status
    if held:
        return _seen_held(seen, record, now, policy, rng)
    # Fast path: the common case of a stable, healthy session costs one comparison.
    if (
        record is not None
        and record.phase is Phase.HEALTHY
        and record.last_status == status
        and record.attempt == 0
        and record.name == seen.name
        and seen.engine_connected is not False
        and record.disconnected_since is None
    ):
        return Step(record)

    klass = policy.classes.classify(status)
    fresh = record is None or record.phase is Phase.GONE  # not seen before this poll
    record, events, back = _sighted(seen, record, klass, now)
    if back and klass is StatusClass.HEALTHY:
        return Step(replace(record, last_status=status), None, tuple(events))

    disconnected = (klass is StatusClass.HEALTHY and seen.engine_connected is False
                    and policy.zombie_after > 0)
    if not disconnected and record.disconnected_since is not None:
        record = replace(record, disconnected_since=None)  # status and engine agree again

    if disconnected:
        step = _seen_disconnected(record, status, now, policy, rng,
                                  None if fresh else previous_poll)
    elif klass is StatusClass.HEALTHY:
        step = _seen_healthy(record, status, now, policy)
    elif klass is StatusClass.TRANSITIONAL:
        step = _seen_transitional(record, status, now, policy, rng)
    elif klass is StatusClass.RESTARTABLE:
        step = _seen_restartable(record, status, now, policy, rng)
    elif klass is StatusClass.NEEDS_PERSON:
        step = _seen_needs_person(record, status, now)
    else:
        step = _seen_unknown(record, status, now, policy, rng)
    return _after(events, step) if events else step


def _sighted(
    seen: SessionInfo, record: Record | None, klass: StatusClass, now: float
) -> tuple[Record, list[Event], bool]:
    """The record as a sighting finds it, before any decision: a new one for a session
    never seen (or gone, then back: ``session.reappeared``, and the third value True), its
    name as the API gives it, and ``session.needs_person_cleared`` when it leaves that
    status class (worth an event of its own, whatever comes next)."""
    events: list[Event] = []
    back = False
    if record is None or record.phase is Phase.GONE:
        previous = record
        record = Record(seen.session_id, name=seen.name, phase=Phase.HEALTHY, since=now)
        if previous is not None:  # it came back
            record = replace(record, warned_statuses=previous.warned_statuses)
            events.append(_event(ev.SESSION_REAPPEARED, record, status=seen.status))
            back = True
    elif seen.name is not None and record.name != seen.name:
        record = replace(record, name=seen.name)
    if record.phase is Phase.NEEDS_PERSON and klass is not StatusClass.NEEDS_PERSON:
        events.append(_event(ev.SESSION_NEEDS_PERSON_CLEARED, record, status=seen.status))
    return record, events, back


def _noted(record: Record, outcome: str, **changes: Any) -> Record:
    """``record`` with ``changes``, and ``outcome`` (a ``LastOutcome``) as what came of it
    last. Whatever comes of a session ends its being started elsewhere, unless
    ``changes`` say it is so now."""
    return replace(record, **{"starting_elsewhere": False, **changes, "last_outcome": outcome})


def _running_again(record: Record, status: str, now: float, outcome: LastOutcome) -> Record:
    """The session runs again: nothing is in flight or pending. The attempt count and
    failures stay until it has been stable for ``stable_after``."""
    return _noted(
        record,
        outcome,
        phase=Phase.HEALTHY,
        last_status=status,
        since=now,
        requested_at=None,
        verify_deadline=None,
        next_attempt_at=None,
        stop_first=False,
        gave_up=False,
        zombie=False,
    )


def _seen_healthy(record: Record, status: str, now: float, policy: Policy) -> Step:
    if record.phase is Phase.VERIFYING:
        took = now - record.requested_at if record.requested_at is not None else None
        record = _running_again(record, status, now, LastOutcome.SUCCEEDED)
        duration = _ms(took) if took is not None else None
        return Step(
            record,
            None,
            (
                _event(
                    ev.RESTART_SUCCEEDED,
                    record,
                    status=status,
                    attempt=record.attempt,
                    outcome="succeeded",
                    duration_ms=duration,
                ),
                _event(ev.SESSION_RECOVERED, record, status=status, by="restart"),
            ),
        )
    if record.phase in _BROKEN or record.starting_elsewhere:
        by = {
            Phase.NEEDS_PERSON: "person",
            Phase.STARTING: "elsewhere",
        }.get(record.phase, "itself")
        record = _running_again(record, status, now, LastOutcome.RECOVERED)
        return Step(record, None, (_event(ev.SESSION_RECOVERED, record, status=status, by=by),))
    if record.phase is not Phase.HEALTHY:  # starting by itself, or an unknown status, ended
        if record.gave_up:  # given up on, and back by another way: supervised as usual again
            by = "elsewhere" if record.phase is Phase.STARTING else "itself"
            record = _running_again(record, status, now, LastOutcome.RECOVERED)
            return Step(record, None, (_event(ev.SESSION_RECOVERED, record, status=status, by=by),))
        record = replace(record, phase=Phase.HEALTHY, last_status=status, since=now)
        return Step(record)
    # Already healthy: reset the backoff once it has been stable long enough (a session
    # whose engine is not connected is not stable, whatever its status says).
    since = record.since if record.since is not None else now
    if ((record.attempt or record.failures) and now - since >= policy.stable_after
            and record.disconnected_since is None):
        record = replace(record, attempt=0, failures=(), last_status=status)
        return Step(
            record,
            None,
            (_event(ev.SESSION_STABLE, record, "debug", status=status, stable_for=now - since),),
        )
    if record.last_status != status:
        record = replace(record, last_status=status)
    return Step(record)


def _verify_deadline(record: Record, policy: Policy) -> float | None:
    """When the attempt in flight has failed if the session is not up by then. An attempt
    whose answer was never recorded (the process died while asking) counts from when it
    was requested."""
    if record.verify_deadline is not None:
        return record.verify_deadline
    if record.requested_at is not None:
        return record.requested_at + policy.starting_timeout
    return None


def _seen_transitional(
    record: Record, status: str, now: float, policy: Policy, rng: random.Random
) -> Step:
    if record.phase is Phase.VERIFYING:
        deadline = _verify_deadline(record, policy)
        if deadline is not None and now >= deadline:
            record = replace(record, last_status=status, stop_first=True)
            return _failed(record, now, policy, rng, reason="starting_timeout", status=status)
        if record.last_status != status:
            record = replace(record, last_status=status)
        return Step(record)
    if record.stop_first and record.phase in (Phase.UNHEALTHY, Phase.GAVE_UP):
        # Our attempt timed out in STARTING: the next one stops it first, when due.
        if record.last_status != status:
            record = replace(record, last_status=status)
        return _due_or_wait(record, now)
    if record.phase is not Phase.STARTING:
        # Someone else (the provider, a person) is starting it: watch, do not interfere.
        events: tuple[Event, ...] = ()
        if record.phase is Phase.HEALTHY and record.last_status is not None:
            events = (_event(ev.SESSION_STARTING, record, "debug", status=status),)
        return Step(
            replace(record, phase=Phase.STARTING, last_status=status, since=now), None, events
        )
    since = record.since if record.since is not None else now
    if now - since < policy.starting_timeout:
        if record.last_status != status:
            record = replace(record, last_status=status)
        return Step(record)
    # Stuck in STARTING without us: only a stop and a fresh start clears that.
    record = replace(record, phase=Phase.UNHEALTHY, last_status=status, since=now, stop_first=True)
    unhealthy = _event(
        ev.SESSION_UNHEALTHY, record, "warning", status=status, reason="stuck_starting"
    )
    step = _due_or_wait(record, now)
    return _after((unhealthy,), step)


def _seen_disconnected(
    record: Record, status: str, now: float, policy: Policy, rng: random.Random,
    previous_poll: float | None,
) -> Step:
    """Healthy by its status while its engine says it is not connected. A restart of ours
    in flight waits for the engine as for a session still starting. Otherwise the status
    is believed until the engine has not been seen connected for ``zombie_after``: counted
    from the poll before the first that saw it so (that poll saw it connected, and it may
    have been lost just after), or from this poll when the one before did not see the
    sessions. So a zombie is failed at the first poll at least ``zombie_after`` after the
    last that saw it connected: within ``zombie_after`` + one poll interval of its engine
    losing the connection, whatever the polls' timing. Then the session is a zombie, failed
    like a restartable one (``session.zombie``, reason ``engine_disconnected``): restarted
    with a stop first, with the usual backoff, verification and give-up."""
    if record.phase is Phase.VERIFYING:
        return _seen_transitional(record, status, now, policy, rng)
    since = record.disconnected_since
    if since is None:
        since = now if previous_poll is None or previous_poll > now else previous_poll
        record = replace(record, disconnected_since=since)
    if now - since < policy.zombie_after:
        return _seen_healthy(record, status, now, policy)
    events: tuple[Event, ...] = ()
    if record.phase not in (Phase.UNHEALTHY, Phase.GAVE_UP):  # it becomes one now
        events = (_event(ev.SESSION_ZOMBIE, record, "warning", status=status,
                         reason=ZOMBIE_REASON, disconnected_for=round(now - since, 3)),)
    record = replace(record, stop_first=True, zombie=True)
    return _after(events, _seen_restartable(record, status, now, policy, rng,
                                            reason=ZOMBIE_REASON))


def _seen_restartable(
    record: Record, status: str, now: float, policy: Policy, rng: random.Random,
    reason: str | None = None,
) -> Step:
    if record.phase is Phase.VERIFYING:
        if record.requested_at is not None and now - record.requested_at < 0:
            return Step(record)  # clock went backwards; judge on the next poll
        # A session that needed a stop before (a conflict, or stuck starting) keeps
        # needing one while it fails: ``stop_first`` stays set until it is healthy.
        # No answer recorded (the process that claimed it died, or lost its lease, before
        # one came: it may never have been sent): "unanswered", else "relapsed".
        why = "unanswered" if record.verify_deadline is None else "relapsed"
        record = replace(record, last_status=status)
        return _failed(record, now, policy, rng, reason=why, status=status)
    if record.phase in (Phase.UNHEALTHY, Phase.GAVE_UP):
        if record.last_status != status:
            record = replace(record, last_status=status)
        return _due_or_wait(record, now)
    # It was fine (or unknown, or starting by itself): it has failed now.
    events: list[Event] = []
    relapsed = record.phase is Phase.HEALTHY and record.attempt > 0
    record = replace(record, phase=Phase.UNHEALTHY, last_status=status, since=now)
    if relapsed:
        # It failed again before it was stable: the last restart did not really help.
        failures = _failures(record, now, policy)
        record = replace(record, failures=failures)
        if len(failures) >= policy.max_restarts:
            return _give_up(record, now, policy, (), reason="relapsed", status=status)
        wait = policy.backoff.delay(record.attempt, rng)
        record = replace(record, next_attempt_at=now + wait)
        events.append(
            _event(
                ev.SESSION_UNHEALTHY,
                record,
                "warning",
                status=status,
                relapsed=True,
                next_attempt_in=round(wait, 3),
                reason=reason,
            )
        )
    else:
        events.append(_event(ev.SESSION_UNHEALTHY, record, "warning", status=status,
                             reason=reason))
    return _after(events, _due_or_wait(record, now))


# The phases in which a sighting may ask for an action or judge an attempt: a held
# session in one of them only has its status noted.
_ACTING = frozenset({Phase.VERIFYING, Phase.UNHEALTHY, Phase.GAVE_UP})


def _seen_held(
    seen: SessionInfo, record: Record | None, now: float, policy: Policy, rng: random.Random
) -> Step:
    """A session on hold was seen: recorded as a sighting moves it, never acted on. A
    healthy session that fails becomes unhealthy (due as soon as it is released, its
    relapse not counted); one starting by itself is watched; healthy again or needing a
    person is followed as usual. Where the next step would be an action or a verdict on
    an attempt (in flight, waiting for its next one, given up on, stuck starting), only
    the status is written down: an attempt in flight when the hold began is judged at
    the first poll after it."""
    status = seen.status
    klass = policy.classes.classify(status)
    record, events, _ = _sighted(seen, record, klass, now)
    noted = Step(record if record.last_status == status else
                 replace(record, last_status=status))
    if klass is StatusClass.HEALTHY:
        step = _seen_healthy(record, status, now, policy)
    elif klass is StatusClass.NEEDS_PERSON:
        step = _seen_needs_person(record, status, now)
    elif record.phase in _ACTING or (
        klass is StatusClass.TRANSITIONAL and record.phase is Phase.STARTING
    ):
        step = noted
    elif klass is StatusClass.TRANSITIONAL:
        step = _seen_transitional(record, status, now, policy, rng)
    elif klass is StatusClass.RESTARTABLE:
        record = replace(record, phase=Phase.UNHEALTHY, last_status=status, since=now,
                         next_attempt_at=None)
        step = Step(record, None, (_event(ev.SESSION_UNHEALTHY, record, "warning",
                                          status=status, held=True),))
    else:
        step = _seen_unknown(record, status, now, policy, rng)
    return _after(events, step) if events else step


def _seen_needs_person(record: Record, status: str, now: float) -> Step:
    if record.phase is Phase.NEEDS_PERSON:
        if record.last_status != status:
            record = replace(record, last_status=status)
        return Step(record)
    events: list[Event] = []
    was_verifying = record.phase is Phase.VERIFYING
    if was_verifying:
        events.append(
            _event(
                ev.RESTART_FAILED,
                record,
                "warning",
                status=status,
                attempt=record.attempt,
                outcome="needs_person",
                counted=False,
            )
        )
    record = _noted(
        record,
        LastOutcome.NEEDS_PERSON,
        phase=Phase.NEEDS_PERSON,
        last_status=status,
        since=now,
        requested_at=None,
        verify_deadline=None,
        next_attempt_at=None,
    )
    events.append(_event(ev.SESSION_NEEDS_PERSON, record, "error", status=status))
    return Step(record, None, tuple(events), failed=was_verifying)


def _seen_unknown(
    record: Record, status: str, now: float, policy: Policy, rng: random.Random
) -> Step:
    key = status.upper()
    events: tuple[Event, ...] = ()
    if key not in record.warned_statuses:
        events = (_event(ev.SESSION_UNKNOWN_STATUS, record, "warning", status=status),)
        record = replace(record, warned_statuses=record.warned_statuses | {key})
    if record.phase is Phase.VERIFYING:
        record = replace(record, last_status=status)
        deadline = _verify_deadline(record, policy)
        if deadline is not None and now >= deadline:
            step = _failed(record, now, policy, rng, reason="starting_timeout", status=status)
            return _after(events, step)
        return Step(record, None, events)
    if record.phase is not Phase.UNKNOWN or record.last_status != status:
        record = replace(record, phase=Phase.UNKNOWN, last_status=status, since=now)
    return Step(record, None, events)


# ----------------------------------------------------------------------- attempts


def _due_or_wait(record: Record, now: float) -> Step:
    """An unhealthy (or given-up) session: restart it if its wait is over."""
    if record.next_attempt_at is not None and now < record.next_attempt_at:
        return Step(record)
    return _request(record, now)


def _request(record: Record, now: float, *, attempt: int | None = None) -> Step:
    """Ask for a restart (or a stop first): the attempt is recorded as in flight."""
    number = record.attempt + 1 if attempt is None else attempt
    via = "stop_then_restart" if record.stop_first else "restart"
    record = _noted(
        record,
        LastOutcome.REQUESTED,
        phase=Phase.VERIFYING,
        attempt=number,
        requested_at=now,
        verify_deadline=None,
        next_attempt_at=None,
    )
    kind = ActionKind.STOP if record.stop_first else ActionKind.RESTART
    event = _event(
        ev.RESTART_REQUESTED, record, status=record.last_status, attempt=number, via=via
    )
    return Step(record, Action(kind, record.session_id, number), (event,))


def _failures(record: Record, now: float, policy: Policy) -> tuple[float, ...]:
    kept = tuple(t for t in record.failures if now - t < policy.restart_window)
    return (*kept, now)


def _failed(
    record: Record,
    now: float,
    policy: Policy,
    rng: random.Random,
    *,
    reason: str,
    status: str | None = None,
    http_status: int | None = None,
) -> Step:
    """The attempt in flight failed: count it, then back off or give up."""
    failures = _failures(record, now, policy)
    took = now - record.requested_at if record.requested_at is not None else None
    record = _noted(
        record,
        LastOutcome.FAILED.because(reason),
        failures=failures,
        requested_at=None,
        verify_deadline=None,
    )
    def failed(next_attempt_in: float) -> Event:
        return _event(
            ev.RESTART_FAILED,
            record,
            "warning",
            status=status,
            attempt=record.attempt,
            outcome="failed",
            reason=reason,
            http_status=http_status,
            duration_ms=_ms(took) if took is not None else None,
            next_attempt_in=next_attempt_in,
        )

    if record.gave_up or len(failures) >= policy.max_restarts:
        given_up = (failed(policy.gave_up_retry_interval),)
        step = _give_up(record, now, policy, given_up, reason=reason, status=status)
        return replace(step, failed=True)
    wait = policy.backoff.delay(record.attempt - 1, rng)
    record = replace(record, phase=Phase.UNHEALTHY, since=now, next_attempt_at=now + wait)
    return Step(record, None, (failed(round(wait, 3)),), failed=True)


def _give_up(
    record: Record,
    now: float,
    policy: Policy,
    events: tuple[Event, ...],
    *,
    reason: str,
    status: str | None,
) -> Step:
    first_time = not record.gave_up
    record = _noted(  # GAVE_UP sets gave_up (models.Record)
        record,
        LastOutcome.GAVE_UP,
        phase=Phase.GAVE_UP,
        since=now if first_time else record.since,
        next_attempt_at=now + policy.gave_up_retry_interval,
    )
    if first_time:
        events = (
            *events,
            _event(
                ev.SESSION_GAVE_UP,
                record,
                "error",
                status=status,
                attempt=record.attempt,
                reason=reason,
                failures=len(record.failures),
                restart_window=policy.restart_window,
                next_attempt_in=policy.gave_up_retry_interval,
            ),
        )
    return Step(record, None, events)


def deferred(record: Record, now: float, reason: str, http_status: int | None) -> Step:
    """A 429 or 401 stopped the attempt: not the session's fault, so it does not count."""
    event = _event(
        ev.RESTART_DEFERRED,
        record,
        "warning",
        attempt=record.attempt,
        outcome="deferred",
        reason=reason,
        http_status=http_status,
    )
    record = _noted(
        record,
        LastOutcome.DEFERRED.because(reason),
        phase=Phase.GAVE_UP if record.gave_up else Phase.UNHEALTHY,
        attempt=max(0, record.attempt - 1),
        requested_at=None,
        verify_deadline=None,
        next_attempt_at=now,
    )
    return Step(record, None, (event,))


# -------------------------------------------------------------------------- apply


def apply(
    record: Record,
    action: Action,
    outcome: Outcome,
    now: float,
    policy: Policy,
    rng: random.Random,
) -> Step:
    """The shell carried out ``action``; this is what came of it."""
    kind = outcome.kind
    if kind is OutcomeKind.GONE:
        return vanished(record, now, policy, configured=True)
    if kind is OutcomeKind.RATE_LIMITED:
        return deferred(record, now, "rate_limited", outcome.http_status)
    if kind is OutcomeKind.AUTH_FAILED:
        return deferred(record, now, "auth_failed", outcome.http_status)

    if action.kind is ActionKind.RESTART:
        return _after_restart(record, action, outcome, now, policy, rng)
    if action.kind is ActionKind.STOP:
        if kind is OutcomeKind.FAILED:
            return _failed(
                record,
                now,
                policy,
                rng,
                reason=f"stop_{outcome.reason or 'failed'}",
                http_status=outcome.http_status,
            )
        # Stopped (or already stopped: a conflict here is fine): now the restart proper.
        record = replace(record, last_status=outcome.status or record.last_status)
        return Step(record, Action(ActionKind.RESTART, record.session_id, action.attempt))
    return _after_reread(record, action, outcome, now, policy, rng)


def _after_restart(
    record: Record,
    action: Action,
    outcome: Outcome,
    now: float,
    policy: Policy,
    rng: random.Random,
) -> Step:
    if outcome.kind is OutcomeKind.OK:
        record = _noted(
            record,
            LastOutcome.ACCEPTED,
            last_status=outcome.status or record.last_status,
            verify_deadline=now + policy.starting_timeout,
        )
        event = _event(
            ev.RESTART_ACCEPTED,
            record,
            "debug",
            status=outcome.status or None,
            attempt=action.attempt,
            http_status=outcome.http_status,
            duration_ms=round(outcome.duration_ms) if outcome.duration_ms is not None else None,
        )
        return Step(record, None, (event,))
    if outcome.kind is OutcomeKind.CONFLICT:
        if record.stop_first:
            # Stopped it and it still conflicts: give this attempt up as failed.
            return _failed(
                record, now, policy, rng, reason="conflict_after_stop",
                http_status=outcome.http_status,
            )
        # Re-read before deciding: it may be running (someone else restarted it).
        record = _noted(record, LastOutcome.CONFLICT)
        return Step(
            record,
            Action(ActionKind.GET, record.session_id, action.attempt, outcome.http_status),
        )
    return _failed(
        record,
        now,
        policy,
        rng,
        reason=outcome.reason or "failed",
        http_status=outcome.http_status,
    )


def _after_reread(
    record: Record,
    action: Action,
    outcome: Outcome,
    now: float,
    policy: Policy,
    rng: random.Random,
) -> Step:
    """The GET after a 409/422 on restart: how the conflict resolves."""
    attempt = record.attempt

    def conflict(resolution: str, status: str | None, level: str = "info") -> Event:
        return _event(
            ev.RESTART_CONFLICT,
            record,
            level,
            status=status,
            attempt=attempt,
            outcome="conflict",
            http_status=action.http_status,
            resolution=resolution,
        )

    # The conflicting request does not count as an attempt of its own.
    record = replace(
        record,
        attempt=max(0, record.attempt - 1),
        requested_at=None,
        verify_deadline=None,
    )
    if outcome.kind is not OutcomeKind.OK or not outcome.status:
        event = conflict("unknown", None, "warning")
        record = replace(record, phase=Phase.UNHEALTHY, next_attempt_at=now, since=now)
        return Step(record, None, (event,))
    status = outcome.status
    klass = policy.classes.classify(status)
    if klass is StatusClass.HEALTHY:
        record = _running_again(record, status, now, LastOutcome.RECOVERED_ELSEWHERE)
        return Step(
            record,
            None,
            (
                conflict("recovered_elsewhere", status),
                _event(ev.SESSION_RECOVERED, record, status=status, by="elsewhere"),
            ),
        )
    if klass is StatusClass.TRANSITIONAL:
        record = _noted(
            record,
            LastOutcome.STARTING_ELSEWHERE,
            phase=Phase.STARTING,
            last_status=status,
            since=now,
            starting_elsewhere=True,
        )
        return Step(record, None, (conflict("starting_elsewhere", status),))
    if klass is StatusClass.RESTARTABLE:
        record = replace(record, last_status=status, stop_first=True)
        event = conflict("stop_then_restart", status)
        return _after((event,), _request(record, now))
    event = conflict(klass.value, status, "warning")
    step = decide(SessionInfo(record.session_id, record.name, status), record, now, policy, rng)
    return _after((event,), step)


# ------------------------------------------------------------------------- vanish


def vanished(record: Record, now: float, policy: Policy, *, configured: bool) -> Step:
    """The API does not know this session any more (404, or gone from the list).

    A configured session stays on record as gone (it is shown in reports and looked
    up again every ``gave_up_retry_interval``); one found by listing is forgotten.
    """
    events: tuple[Event, ...] = ()
    failed = record.phase is Phase.VERIFYING  # the attempt in flight fails with it
    if record.phase is not Phase.GONE:
        events = (_event(ev.SESSION_GONE, record, "error", status=record.last_status),)
        if failed:
            events = (
                _event(
                    ev.RESTART_FAILED,
                    record,
                    "warning",
                    attempt=record.attempt,
                    outcome="failed",
                    reason="gone",
                    http_status=404,
                    counted=False,
                ),
                *events,
            )
    if not configured:
        return Step(None, None, events, failed=failed)
    record = _noted(
        record,
        LastOutcome.GONE,
        phase=Phase.GONE,
        since=now if record.phase is not Phase.GONE else record.since,
        requested_at=None,
        verify_deadline=None,
        next_attempt_at=now + policy.gave_up_retry_interval,
    )
    return Step(record, None, events, failed=failed)


# -------------------------------------------------------------------------- retry


def restart_now(record: Record, now: float, by: str) -> Step:
    """``by`` (a person) asked for the session to be restarted now, whatever its status
    was last seen: a restart is requested at once, as any attempt is (recorded as in
    flight before it is sent, verified by the next polls; a session that needs a stop
    first is stopped first), after an ``operator.restart_requested`` event. A given-up
    session starts afresh, as after ``retry_now``. A session last seen running (healthy,
    starting, waiting for its QR code, or in a status we do not know) is stopped first:
    WASend restarts only a stopped session, and answers 409 otherwise.

    Raises ValueError (one line) if a restart of it is in flight, or it is gone.
    """
    if record.phase is Phase.VERIFYING:
        raise ValueError(f"session {record.session_id} has a restart in flight;"
                         " wait for its outcome")
    if record.phase is Phase.GONE:
        raise ValueError(f"session {record.session_id} is gone: the API does not know it")
    asked = _event(ev.OPERATOR_RESTART_REQUESTED, record, status=record.last_status, by=by,
                   phase=record.phase.value)
    if record.gave_up:
        record = replace(record, gave_up=False, phase=Phase.UNHEALTHY, attempt=0,
                         failures=())
    elif record.phase in _RUNNING:
        record = replace(record, stop_first=True)
    return _after((asked,), _request(record, now))


# Phases in which the session is (as last seen) running: "restart now" stops it first.
_RUNNING = frozenset({Phase.HEALTHY, Phase.STARTING, Phase.NEEDS_PERSON, Phase.UNKNOWN})



def retry_now(record: Record, now: float) -> Step:
    """A person asked for a given-up session to be retried now (``wasend-supervisor
    retry``): it is unhealthy again with its attempts and failures forgotten, due at
    once, so the next poll (of any process) restarts it as a first attempt, or finds it
    recovered. Whether the next attempt stops it first is kept.

    Raises ValueError (one line) if it is not given up, or a retry of it is in flight.
    """
    if record.phase is not Phase.GAVE_UP:
        if record.gave_up and record.phase is Phase.VERIFYING:
            raise ValueError(
                f"session {record.session_id} has a retry in flight; wait for its outcome"
            )
        raise ValueError(
            f"session {record.session_id} is not given up (phase: {record.phase.value})"
        )
    event = _event(
        ev.SESSION_RETRY_REQUESTED,
        record,
        status=record.last_status,
        attempt=record.attempt,
        failures=len(record.failures),
    )
    record = _noted(
        record,
        LastOutcome.RETRY_REQUESTED,
        phase=Phase.UNHEALTHY,
        gave_up=False,
        attempt=0,
        failures=(),
        next_attempt_at=None,
        requested_at=None,
        verify_deadline=None,
        since=now,
    )
    return Step(record, None, (event,))
