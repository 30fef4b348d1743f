"""The refused API key as a value: whether polls wait, and when the key is tried again.

A 401 blocks the key for ``retry_interval`` seconds: polls are skipped (no request at
all) until then; the first poll after it re-reads the key and tries it; a listing that
succeeds lifts the block. A new key (a reload) is tried at the next poll. Times are the
clock's ``monotonic()`` seconds, passed in: this module reads no clock and does no I/O;
the cycle asks it, then logs and acts.
"""

from __future__ import annotations

import msgspec


class AuthBlock(msgspec.Struct, frozen=True):
    """The key was refused (``until`` is set) or it works (``until`` is None)."""

    until: float | None = None  # monotonic: no request before this

    @property
    def blocked(self) -> bool:
        """Whether the key was refused and has not worked since."""
        return self.until is not None

    def waiting(self, now: float) -> bool:
        """Whether a poll at ``now`` is skipped: the key was refused and its wait is on."""
        return self.until is not None and now < self.until

    def retry_in(self, now: float) -> float:
        """Seconds until the key is tried again (0 when it may be now)."""
        return 0.0 if self.until is None else max(0.0, self.until - now)

    def due(self, now: float) -> bool:
        """Whether a poll at ``now`` tries a refused key again (re-reading it first)."""
        return self.until is not None and now >= self.until

    def refused(self, now: float, retry_interval: float) -> AuthBlock:
        """A 401 at ``now``: no request for ``retry_interval`` seconds. Whether this is
        news (worth the loud event) is ``not self.blocked``."""
        return AuthBlock(now + retry_interval)

    def accepted(self) -> AuthBlock:
        """A request the key was good for: the block is lifted. Whether that is news
        (worth the event) is ``self.blocked``."""
        return OPEN

    def new_key(self, now: float) -> AuthBlock:
        """A different key was configured at ``now``: a refused key's wait ends, so the
        next poll tries the new one."""
        return self if self.until is None else AuthBlock(now)


OPEN = AuthBlock()
