"""The webhook endpoint's answer to one request, in the listener's callback: believed
(``signature``), read (``envelope``), queued (``nudges``), and answered at once, the work
itself done after (``Nudges.run``).

Answers: 202 queued; 200 an event of another kind, or one already taken (a replay, a
delivery the provider repeats: it has been acted on); 400 a body that is no event; 401
not believed (signature, timestamp); 403 an unsigned event from a peer not allowed; 503
the queue full (the provider retries; the next poll catches up).

``counts``: every outcome since the start (``accepted``, ``ignored`` and each reason of
``REASONS``), for the metrics. A refusal is logged as ``webhook.rejected`` at most once per
``log_every`` seconds per reason, with the count since the last line, so a flood of
forgeries is a line every few seconds, not one a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import structlog

from supervisor.clock import Clock
from supervisor.domain import events as ev
from supervisor.webhooks.envelope import Ignored, Malformed, read
from supervisor.webhooks.nudges import Nudges
from supervisor.webhooks.signature import PEER, Checker, Refusal

__all__ = ["LOG_EVERY", "OUTCOMES", "REASONS", "Receiver"]

log = structlog.get_logger("supervisor.webhooks")

LOG_EVERY: Final = 10.0
REASONS: Final = ("signature", "skew", "duplicate", "malformed", "peer", "unknown_session",
                  "queue_full")
OUTCOMES: Final = ("accepted", "ignored", *REASONS)
_ANSWERS: Final = {"signature": 401, "skew": 401, "peer": 403, "malformed": 400,
                   "duplicate": 200, "queue_full": 503}


class Receiver:
    def __init__(self, checker: Checker, nudges: Nudges, clock: Clock, *,
                 log_every: float = LOG_EVERY) -> None:
        self.checker = checker
        self.nudges = nudges
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._clock = clock
        self._log_every = log_every
        self._logged: dict[str, float] = {}  # reason: when it was last logged (monotonic)
        self._since: dict[str, int] = {}  # reason: refusals not logged yet

    def handle(self, headers: Mapping[str, str], body: bytes, peer: str) -> tuple[int, bytes]:
        """(HTTP status, body) for one POST. ``headers``: lower-case names."""
        try:
            self.checker.check(headers, body, peer)
            hint = read(body)
        except Refusal as refusal:
            return self._refuse(refusal.reason, peer)
        except Malformed as malformed:
            return self._refuse("malformed", peer, str(malformed))
        if isinstance(hint, Ignored):
            self.counts["ignored"] += 1
            return 200, b"ignored\n"
        event_id = hint.id or headers.get("x-webhook-request-id")
        if self.checker.duplicate(event_id):
            return self._refuse("duplicate", peer)
        at = None if hint.timestamp is None else hint.timestamp / 1000
        if not self.nudges.offer(hint.session, hint.status, at):
            return self._refuse("queue_full", peer)
        self.checker.remember(event_id)
        self.counts["accepted"] += 1
        log.debug(ev.WEBHOOK_RECEIVED, session=hint.session, status=hint.status,
                  event_id=event_id)
        return 202, b"queued\n"

    def rejected(self, reason: str, **fields: object) -> None:
        """Count (and log, at most once per ``log_every``) a refusal found later: an
        ``unknown_session`` found when the read was to be made."""
        self.counts[reason] += 1
        self._log(reason, fields)

    def _refuse(self, reason: str, peer: str, detail: str = "") -> tuple[int, bytes]:
        self.rejected(reason, peer=peer if reason == PEER else None, detail=detail or None)
        status = _ANSWERS[reason]
        return status, (b"duplicate\n" if status == 200 else f"{reason}\n".encode())

    def _log(self, reason: str, fields: Mapping[str, object]) -> None:
        now = self._clock.monotonic()
        self._since[reason] = self._since.get(reason, 0) + 1
        last = self._logged.get(reason)
        if last is not None and now - last < self._log_every:
            return
        self._logged[reason] = now
        count = self._since.pop(reason)
        log.warning(ev.WEBHOOK_REJECTED, reason=reason, count=count,
                    **{k: v for k, v in fields.items() if v is not None})
