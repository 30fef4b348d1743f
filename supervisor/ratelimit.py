"""The rate gate: every request on the API key passes through one ``RateGate``.

Two rules, both about *when* a request may be sent:

* After a 429 the whole key pauses until the server's ``Retry-After`` has passed
  (capped at ``max_retry_after``; a missing or unusable value falls back to our own
  exponential backoff over consecutive 429s). Not one request leaves early.
* Our own budget: at most ``rate_limit`` requests in any one-second window, bursts
  included, so that a restart storm does not cause the 429s in the first place.

Deadlines use the clock's monotonic time; waiting goes through ``clock.sleep`` so tests
with a fake clock never sleep.
"""

from __future__ import annotations

import math
from collections import deque

import structlog

from supervisor.clock import Clock
from supervisor.policy import Backoff

log = structlog.get_logger("supervisor.ratelimit")


class RateGate:
    def __init__(
        self,
        clock: Clock,
        *,
        rate_limit: float | None,
        max_retry_after: float,
        fallback: Backoff | None = None,
    ) -> None:
        self._clock = clock
        self._max_retry_after = max_retry_after
        self._own_fallback = fallback is None
        self._fallback = fallback or Backoff(initial=1.0, max=max_retry_after, multiplier=2.0)
        self._paused_until = -math.inf
        self._consecutive_429 = 0
        self._sent: deque[float] = deque()
        self.paused_seconds_total = 0.0
        self.rate_limited_total = 0
        self.set_rate_limit(rate_limit)

    def set_rate_limit(self, rate_limit: float | None) -> None:
        """At most ``rate_limit`` requests in any one-second window (None: no budget)."""
        if rate_limit is None:
            self._budget, self._window = 0, 0.0
        elif rate_limit >= 1.0:
            self._budget, self._window = int(rate_limit), 1.0
        else:  # fewer than one a second: one request per 1/rate seconds
            self._budget, self._window = 1, 1.0 / rate_limit

    def set_max_retry_after(self, seconds: float) -> None:
        self._max_retry_after = seconds
        if self._own_fallback:  # the fallback backoff is capped by it too
            self._fallback = Backoff(initial=1.0, max=seconds, multiplier=2.0)

    @property
    def paused_until(self) -> float:
        """Monotonic time until which every request waits (-inf when not paused)."""
        return self._paused_until

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock.monotonic())

    async def acquire(self) -> None:
        """Wait until a request may be sent, then count it as sent."""
        while True:
            now = self._clock.monotonic()
            if now < self._paused_until:
                wait = self._paused_until - now
                self.paused_seconds_total += wait
                await self._clock.sleep(wait)
                continue
            if self._budget:
                horizon = now - self._window
                sent = self._sent
                while sent and sent[0] <= horizon:
                    sent.popleft()
                if len(sent) >= self._budget:
                    await self._clock.sleep(sent[0] - horizon)
                    continue
                sent.append(now)
            return

    def rate_limited(self, retry_after: float | None, *, call: str = "") -> float:
        """A 429 arrived: pause every request. Returns the pause in seconds."""
        self._consecutive_429 += 1
        self.rate_limited_total += 1
        capped = False
        if retry_after is None or not math.isfinite(retry_after) or retry_after < 0:
            delay = self._fallback.cap(self._consecutive_429 - 1)
            source = "fallback"
        elif retry_after > self._max_retry_after:
            delay, capped, source = self._max_retry_after, True, "server_capped"
        else:
            delay, source = retry_after, "server"
        now = self._clock.monotonic()
        self._paused_until = max(self._paused_until, now + delay)
        if capped:
            log.warning(
                "api.retry_after_capped",
                call=call,
                retry_after=retry_after,
                max_retry_after=self._max_retry_after,
            )
        log.warning(
            "api.rate_limited",
            call=call,
            http_status=429,
            retry_after=retry_after,
            paused_for=round(self._paused_until - now, 3),
            pause_source=source,
        )
        return delay

    def succeeded(self) -> None:
        """A request went through: the fallback backoff starts over."""
        self._consecutive_429 = 0
