"""Leadership's rules: when a replica that holds the lease may act, and when a standby
looks at the lease again. No I/O and no clock: times are arguments.

Several replicas share one PostgreSQL database; one of them at a time holds the lease
(``state.lease``), a row with its holder, an epoch and an expiry judged by the
database's clock. The holder renews it every ``renew`` seconds, for ``lease`` seconds
from the renewal.

The holder acts (polls, sends requests) only while its own monotonic clock says the
lease cannot have expired anywhere yet: until ``lease - margin`` seconds after it *sent*
the statement that set the expiry (the database set it later than that, never earlier;
exactly: the expiry the database reported, counted from the sending).
``margin`` covers the two clocks running at slightly different rates and a request
already on its way when the holder stops; with the defaults it is 1.5 s. A standby takes
the lease only once the database says it has expired, so the two never act at once as
long as the holder's clock does not stop while the host runs on (a host that is
suspended: see the README's clock assumptions). Even then the epoch fences what the
lease protects: a restart is claimed in a transaction that checks the epoch is still the
holder's.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import msgspec

DEFAULT_LEASE: Final = 15.0  # seconds a lease lasts from its renewal
DEFAULT_RENEW: Final = 5.0  # seconds between renewals
MARGIN_SHARE: Final = 0.1  # of the lease: stop acting this long before it could expire
MIN_MARGIN: Final = 0.5  # seconds, at least


class Role(StrEnum):
    LEADER = "leader"  # holds the lease and acts
    STANDBY = "standby"  # another replica holds it, or nobody yet: ready to take it
    STOPPED = "stopped"  # held it, and cannot tell whether it still does: acts no more


class Terms(msgspec.Struct, frozen=True):
    """How long a lease lasts and how often it is renewed (``ha.lease``, ``ha.renew``)."""

    lease: float = DEFAULT_LEASE
    renew: float = DEFAULT_RENEW

    @property
    def margin(self) -> float:
        """Seconds before the lease could expire that its holder stops acting."""
        return max(MIN_MARGIN, self.lease * MARGIN_SHARE)

    def acting_until(self, sent_at: float, expires_in: float) -> float:
        """Until when (the holder's monotonic time) it may act on a lease that a statement
        sent at ``sent_at`` found to expire ``expires_in`` seconds later (the database's
        reckoning, made after ``sent_at``: the lease lasts at least that long from it)."""
        return sent_at + min(expires_in, self.lease) - self.margin

    def within(self, until: float, now: float) -> float:
        """Seconds a renewal begun at ``now`` may take: it must be done while the holder
        may still act (``until``), and gets at least a tenth of a second."""
        return max(0.1, until - now)

    def standby_wait(self, expires_in: float | None) -> float:
        """Seconds a standby waits before trying again: until the lease it saw expires (a
        little after), and at most ``renew``. None: it could not see one."""
        if expires_in is None:
            return self.renew
        return min(self.renew, max(0.05, expires_in + 0.05))


def problem(terms: Terms) -> str | None:
    """Why these terms cannot work, said of ``ha.renew`` (None: they can): a holder must
    be able to renew once more after one renewal failed, before it stops acting."""
    limit = (terms.lease - terms.margin) / 2
    if terms.renew > limit:
        return (f"must be at most {limit:g} s (half of ha.lease, {terms.lease:g} s, less "
                f"its margin of {terms.margin:g} s), so that one failed renewal does not stop "
                f"the leader; it is {terms.renew:g} s")
    return None
