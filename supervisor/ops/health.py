"""Liveness and readiness: the answers behind ``/livez`` and ``/readyz``.

* **Live** while the daemon's scheduler is running with its poll job (asked through
  ``alive``); that the answer comes at all shows that the event loop turns, since the
  listener runs on it. Liveness never looks at the WASend API: an API outage must not get
  the process killed and restarted, which would not help.
* **Ready** once a poll has succeeded, and as long as the last successful poll ended less
  than ``unready_after`` seconds ago (the ``unready_after`` setting; 0 means three poll
  intervals). Failed polls inside that window leave it ready (and say so); a key that is
  refused, an outage or a stuck poll make it unready when the window has passed. A poll
  that could not use the state file (its path names another file now, the disk is full, a
  lock held too long) makes it unready at once, saying why, until a poll uses it again:
  nothing can be restarted meanwhile, since no restart is sent before it is recorded.

Among replicas (``ha``), the body says the replica's role, the leader's name and the
lease's epoch: a standby is ready while it reaches the database (it can take over); a
leader is judged by its polls as above; a leader that stopped for want of the database
(role ``stopped``) is not ready until it leads again.

Times are the clock's monotonic seconds; ``Health`` learns of polls through
``poll_done``, called by the daemon after each one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from supervisor.clock import Clock
from supervisor.ops.census import poll_outcome
from supervisor.runtime.cycle import PollResult


class Verdict(msgspec.Struct, frozen=True):
    ok: bool
    body: dict[str, Any] = msgspec.field(default_factory=dict)


class Health:
    def __init__(
        self,
        clock: Clock,
        *,
        unready_after: float,
        alive: Callable[[], tuple[bool, str]],
        leadership: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.clock = clock
        # This replica's role among replicas (``Leadership.view``); None: no replicas.
        self._leadership = leadership
        self.unready_after = unready_after
        self._alive = alive
        self.last_success: float | None = None  # monotonic
        self.last_poll: float | None = None
        self.last_outcome: str | None = None
        self.consecutive_failures = 0
        self.state_error: str | None = None  # why the last poll could not use the state

    def poll_done(self, result: PollResult) -> None:
        if result.skip_reason == "api_unavailable":
            return  # no poll was made (backing off after failures): the last one stands
        now = self.clock.monotonic()
        self.last_poll = now
        self.last_outcome = poll_outcome(result)
        if result.state_error is not None:
            self.state_error = result.state_error
        elif result.ok:
            self.state_error = None
        if result.ok:
            self.last_success = now
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1

    def liveness(self) -> Verdict:
        ok, reason = self._alive()
        return Verdict(ok, {"status": "alive" if ok else "dead", "reason": reason})

    def readiness(self) -> Verdict:
        now = self.clock.monotonic()
        body: dict[str, Any] = {
            "last_poll": self.last_outcome,
            "last_success_age": None,
            "consecutive_failures": self.consecutive_failures,
            "unready_after": self.unready_after,
        }
        if self._leadership is not None:
            view = self._leadership()
            body.update(view)
            problem = view.get("problem")
            if view["role"] == "stopped":
                reason = ("supervision stopped: the lease could not be renewed before it "
                          f"could expire ({problem or 'the database did not answer'})")
                return Verdict(False, {"status": "not_ready", "reason": reason, **body})
            if view["role"] == "standby":
                if problem is not None:
                    reason = f"standing by, and the database cannot be reached: {problem}"
                    return Verdict(False, {"status": "not_ready", "reason": reason, **body})
                reason = f"standing by (leader: {view['leader'] or 'none yet'})"
                return Verdict(True, {"status": "standby", "reason": reason, **body})
        if self.state_error is not None:
            reason = f"the state file cannot be used: {self.state_error}"
            if self.last_success is not None:
                body["last_success_age"] = round(now - self.last_success, 3)
            return Verdict(False, {"status": "not_ready", "reason": reason, **body})
        if self.last_success is None:
            reason = "no successful poll yet"
            if self.last_outcome is not None:
                reason += f" (last poll {self.last_outcome})"
            return Verdict(False, {"status": "not_ready", "reason": reason, **body})
        age = now - self.last_success
        body["last_success_age"] = round(age, 3)
        if age > self.unready_after:
            reason = (f"no successful poll for {age:.0f} s "
                      f"(more than unready_after, {self.unready_after:g} s)")
            return Verdict(False, {"status": "not_ready", "reason": reason, **body})
        if self.consecutive_failures:
            reason = (f"{self.consecutive_failures} poll(s) failed since the last "
                      f"success {age:.0f} s ago; unready after {self.unready_after:g} s")
        else:
            reason = "polls are succeeding"
        return Verdict(True, {"status": "ready", "reason": reason, **body})
