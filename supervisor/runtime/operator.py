"""What a person does to one session: pause its supervision, resume it, restart it now.

``Operator`` is the daemon's (``Service.operator``; the page hands it the authenticated
name); ``hold`` and ``release`` are what it and the command line (``pause ID``,
``resume ID``, on the state file) share, so the rules live once:

* ``pause``: the session is put on hold in the store (``state.store.Hold``), where every
  process on the state file reads it at its next poll: a held session is observed and
  recorded, never restarted, stopped or given up on, and opens no alert episode
  (``domain.core``, ``domain.episodes``). Pausing a paused session changes nothing.
* ``resume``: the hold is released; the next poll decides on the session as usual.
  Resuming a session that is not paused changes nothing.
* ``restart_now``: between two polls of the daemon, the core's request for a restart
  (``core.restart_now``) is claimed in the store and sent through the rate gate like any
  restart (record, history, events), so it causes exactly one restart request; it
  returns once that request is answered. Allowed on a given-up session (it starts
  afresh); refused while a restart of it is in flight, and for a paused session.

Each action logs an event naming who did it (``operator.paused``, ``operator.resumed``,
``operator.restart_requested``), and each refusal ``operator.refused`` with the reason.
``Refused`` carries that reason: one line for a person.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from supervisor.api.errors import ApiError
from supervisor.domain import events as ev
from supervisor.domain.models import Phase
from supervisor.state.store import Fenced, Hold, StateError, Store

if TYPE_CHECKING:
    from supervisor.runtime.daemon import Daemon

log = structlog.get_logger("supervisor.operator")


class Refused(Exception):
    """An operator's action was not done; ``str(e)`` is one line for a person: why not."""


def refused(action: str, session_id: str, by: str, reason: str) -> Refused:
    """The refusal, logged (``operator.refused``)."""
    log.warning(ev.OPERATOR_REFUSED, session_id=session_id, by=by, action=action,
                reason=reason)
    return Refused(reason)


def hold(store: Store, session_id: str, by: str, now: float,
         supervised: tuple[str, ...] = ()) -> tuple[Hold, bool]:
    """Put a session on record on hold, in one transaction: the hold it is on, and
    whether it is new (False: it was paused already, and stays as it was). ``supervised``:
    the ids the caller supervises (empty: any on record). Raises Refused (not logged) for
    a session not on record or not supervised, StateError for an unusable state."""
    with store.transaction():
        if store.get(session_id) is None or (supervised and session_id not in supervised):
            raise Refused(f"session {session_id} is not supervised here")
        known = store.holds().get(session_id)
        if known is not None:
            return known, False
        made = Hold(session_id, by, now)
        store.hold(made)
    return made, True


def release(store: Store, session_id: str, supervised: tuple[str, ...] = ()) -> Hold | None:
    """Take a session on record off hold, in one transaction: the hold it had (None: it
    was not paused; nothing changed). Raises Refused (not logged) and StateError as
    ``hold`` does."""
    with store.transaction():
        held = store.holds().get(session_id)
        if held is None and (
            store.get(session_id) is None or (supervised and session_id not in supervised)
        ):
            raise Refused(f"session {session_id} is not supervised here")
        return None if held is None else store.release(session_id)


def log_paused(made: Hold) -> None:
    log.info(ev.OPERATOR_PAUSED, session_id=made.session_id, by=made.by)


def log_resumed(session_id: str, by: str, was: Hold) -> None:
    log.info(ev.OPERATOR_RESUMED, session_id=session_id, by=by, paused_by=was.by)


class Operator:
    """A person's actions on the sessions of one daemon (see the module). ``by`` is the
    authenticated name of whoever asks."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    async def pause(self, session_id: str, by: str) -> None:
        supervisor = self._daemon.supervisor
        store, now = supervisor.store, supervisor.clock.now()
        try:
            made, new = await store.run(
                lambda: hold(store, session_id, by, now, supervisor.configured))
        except Refused as exc:
            raise refused("pause", session_id, by, str(exc)) from None
        except StateError as exc:
            raise refused("pause", session_id, by, f"the state file cannot be used: {exc}"
                          ) from None
        if new:
            log_paused(made)

    async def resume(self, session_id: str, by: str) -> None:
        supervisor = self._daemon.supervisor
        store = supervisor.store
        try:
            was = await store.run(lambda: release(store, session_id, supervisor.configured))
        except Refused as exc:
            raise refused("resume", session_id, by, str(exc)) from None
        except StateError as exc:
            raise refused("resume", session_id, by, f"the state file cannot be used: {exc}"
                          ) from None
        if was is not None:
            log_resumed(session_id, by, was)

    async def restart_now(self, session_id: str, by: str) -> None:
        """Returns once the restart request was made and accepted (or the session was
        found restarted by someone else). Raises Refused (nothing sent), or the API's
        error (``api.errors``) when the request failed or could not be sent (a
        ``Retry-After`` pause longer than the gate waits); what came of it is recorded,
        and the next polls go on from there."""
        async with self._daemon.between_polls() as supervisor:
            try:
                result, record = await supervisor.restart_now(session_id, by)
            except ValueError as exc:
                raise refused("restart_now", session_id, by, str(exc)) from None
            except Fenced as exc:  # a replica standing by: only the leader sends
                raise refused("restart_now", session_id, by,
                              f"{exc}: only the leading replica restarts sessions") from None
            except StateError as exc:
                raise refused("restart_now", session_id, by,
                              f"the state file cannot be used: {exc}") from None
        if record is not None and (
            (record.phase is Phase.VERIFYING and record.verify_deadline is not None)
            or record.phase in (Phase.HEALTHY, Phase.STARTING)
        ):
            return  # accepted, or a conflict that found it running or starting
        error: ApiError | None = result.errors.get(session_id)
        if error is not None:
            raise error
        outcome = "unknown" if record is None else record.last_outcome
        raise Refused(f"the restart of session {session_id} did not go through ({outcome})")
