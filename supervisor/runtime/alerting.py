"""After each poll: what opened and what resolved, kept in the store and queued for the
alert channels.

``Alerting.after_poll`` reads what the poll left (the records after it, the supervisor's
auth block, whether the poll reached the API), asks the domain's rule
(``domain.episodes.reconcile``) against the episodes open in the store, and has the
store apply the transitions (``Store.apply_transitions``: once across processes, in one
transaction with their outbox rows, one per channel). It logs ``alert.opened`` and
``alert.resolved`` for those it applied, and only those: another process (or a
``check`` a minute earlier) that applied one first has logged it. Delivery is the alert
sender's (``supervisor.alerts``), in the background: this only writes rows.

Every store call goes through ``store.run``, so that waiting for the state file never
stalls the event loop. A state file that cannot be used leaves the episodes as they are
(the next poll tries again). Not for a dry run: a dry run writes nothing (its callers do
not call this).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from supervisor.clock import Clock
from supervisor.domain import events as ev
from supervisor.domain.episodes import (
    KEY_WIDE,
    UNREACHABLE_FAILURES,
    Change,
    Facts,
    Kind,
    Transition,
    reconcile,
)
from supervisor.runtime.cycle import PollResult, Supervisor
from supervisor.state.store import StateError, Store

log = structlog.get_logger("supervisor.alerts")


def reached(result: PollResult) -> bool | None:
    """What a poll says of the API: ``True`` it listed the sessions; ``False`` it could
    not reach the API or read its answer; ``None`` it cannot tell (skipped, the key
    refused, a 429, the state file unusable)."""
    if result.ok:
        return True
    if result.error is not None and result.error.kind in UNREACHABLE_FAILURES:
        return False
    return None


class Alerting:
    """Turns what each poll leaves into alert episodes in the store (see the module)."""

    def __init__(
        self,
        store: Store,
        channels: Sequence[str],
        *,
        unreachable_after: float,
        clock: Clock,
    ) -> None:
        self.store = store
        self.channels = tuple(channels)
        self.unreachable_after = unreachable_after
        self.clock = clock
        # The episodes open after the last poll, by kind (for the metrics' gauge): those
        # the store held, changed by the transitions applied; no read of its own.
        self.open_counts: dict[Kind, int] = dict.fromkeys(Kind, 0)

    async def after_poll(self, supervisor: Supervisor, result: PollResult) -> list[Transition]:
        """Reconcile the episodes with what ``result`` (a poll of ``supervisor``) left;
        the transitions applied by this call (each logged)."""
        if result.state_error is not None:
            return []  # the poll said why (state.unavailable); nothing is known
        now = self.clock.now()
        word = reached(result)
        failure = "" if result.error is None else result.error.kind
        key_refused = supervisor.auth.blocked
        configured = supervisor.configured

        def work() -> list[Transition]:
            outage = self.store.outage(word, now, failure)
            known = self.store.open_episodes()
            held = self.store.holds() if result.ok else {}
            facts = Facts.of(
                self.store.records() if result.ok else (),
                listed=result.ok,
                configured=configured,
                key_refused=key_refused,
                failing_since=None if outage is None else outage.since,
                failure="" if outage is None else outage.failure,
                open_episodes=known,
                held=held,
            )
            made = reconcile(known, facts, now, unreachable_after=self.unreachable_after)
            applied = self.store.apply_transitions(made, self.channels, now) if made else []
            counts = dict.fromkeys(Kind, 0)
            for episode in known:
                counts[episode.kind] += 1
            for transition in applied:
                counts[transition.episode.kind] += 1 if transition.change is Change.OPENED else -1
            self.open_counts = counts
            return applied

        try:
            applied = await self.store.run(work)
        except StateError as exc:
            log.error(ev.STATE_UNAVAILABLE, problem=str(exc))
            return []
        for transition in applied:
            _log(transition)
        return applied


def _log(transition: Transition) -> None:
    episode = transition.episode
    fields: dict[str, object] = {"kind": episode.kind.value}
    if episode.kind not in KEY_WIDE:
        fields.update(session_id=episode.subject, session_name=episode.session_name or None,
                      status=episode.status or None)
    if transition.change is Change.OPENED:
        log.warning(ev.ALERT_OPENED, **fields, detail=episode.detail)
    else:
        log.info(ev.ALERT_RESOLVED, **fields, opened_at=episode.opened_at)
