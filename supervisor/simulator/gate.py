"""Admission of API requests: authentication, rate limit, Retry-After and faults.

:class:`Gate` decides, when a request arrives, how it will be answered: refused at
once (401, 429, 503), or let through, possibly after a hang or added latency, with a
5xx in place of the real answer, or with the real answer cut short (malformed JSON).
It keeps, per API key, the times of the accepted requests (the sliding window) and the
instant before which the last ``Retry-After`` asked the client not to come back; a
request before that instant is *early* and is answered 429 again.
"""

from __future__ import annotations

import math
import random
import secrets
from collections import deque
from dataclasses import dataclass, replace
from email.utils import formatdate
from typing import Final

from .faults import Faults, RateLimit, RequestFilter

_ACTIONS: Final = frozenset({"start", "stop", "restart"})


def classify(method: str, path: str) -> tuple[str, str | None]:
    """The kind of an API request and the session id it names, if any."""
    parts = path.strip("/").split("/")
    if parts[0] != "sessions":
        return "other", None
    if len(parts) == 1:
        return {"GET": "list", "POST": "create"}.get(method, "other"), None
    sid = parts[1] or None
    if len(parts) == 2:
        return {"GET": "get", "DELETE": "delete"}.get(method, "other"), sid
    if len(parts) == 3 and parts[2] in _ACTIONS and method == "POST":
        return parts[2], sid
    if len(parts) == 3 and parts[2] == "qr" and method == "GET":  # the provider page's path
        return "qr", sid
    if len(parts) == 4 and parts[2:] == ["auth", "qr"] and method == "GET":
        return "qr", sid
    return "other", sid


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def http_date(epoch_seconds: int) -> str:
    """An RFC 9110 IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return formatdate(epoch_seconds, usegmt=True)


def retry_after(rl: RateLimit, now: float, wall: float) -> tuple[str | None, float | None]:
    """The ``Retry-After`` value to send, and the monotonic instant it stands for.

    Delay-seconds are rounded up to a whole number; an HTTP-date names a whole second,
    so the instant is rounded up and that rounded instant is the deadline. ``absent``
    and ``raw`` set no deadline.
    """
    form = rl.retry_after_form
    if form == "seconds":
        seconds = math.ceil(rl.retry_after)
        return str(seconds), now + seconds
    if form == "http-date":
        instant = math.ceil(wall + rl.retry_after)
        return http_date(instant), now + (instant - wall)
    if form == "raw":
        return rl.retry_after_raw, None
    return None, None


@dataclass(frozen=True, slots=True)
class Admission:
    """How one API request is to be answered, decided when it arrives."""

    method: str
    path: str
    kind: str
    session_id: str | None
    arrived: float  # monotonic
    wall: float
    early: bool = False
    status: int | None = None  # an answer in place of the real one (401, 429, 503, 5xx)
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    fault: str | None = None
    hang: float = 0.0
    latency: float = 0.0
    malformed: bool = False


_MESSAGES: Final = {
    401: "Unauthorized - Invalid or missing API key",
    429: "Too many requests - Rate limit exceeded",
    503: "Service unavailable (simulated outage)",
}


class Gate:
    """Per-key bookkeeping and the admission decision. Not thread-safe: the Simulator locks."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self._accepted: dict[str, deque[float]] = {}
        self._deadline: dict[str, float] = {}

    def authorized(self, authorization: str | None) -> bool:
        token = bearer_token(authorization)
        if token is None:
            return False
        given, expected = (t.encode("utf-8", "surrogateescape") for t in (token, self.api_key))
        return secrets.compare_digest(given, expected)

    def clear(self) -> None:
        self._accepted.clear()
        self._deadline.clear()

    def deadline(self, key: str | None = None) -> float | None:
        """The instant before which a request with ``key`` is early, if any."""
        return self._deadline.get(self.api_key if key is None else key)

    def admit(
        self,
        faults: Faults,
        rng: random.Random,
        *,
        method: str,
        path: str,
        authorization: str | None,
        now: float,
        wall: float,
        outage: bool,
    ) -> tuple[Admission, bool]:
        """Decide; the flag says a ``burst`` 429 was used (the caller counts it down)."""
        kind, sid = classify(method, path)
        base = Admission(
            method, path, kind, sid, now, wall, latency=_latency(faults, rng, kind, sid)
        )
        key = self.api_key if self.authorized(authorization) else None
        early = False
        if key is not None:
            deadline = self._deadline.get(key)
            early = deadline is not None and now < deadline
        if outage:
            return self._refuse(base, 503, "outage", early), False
        if key is None:
            headers = (("www-authenticate", 'Bearer realm="wasend"'),)
            return self._refuse(base, 401, "auth", False, headers), False
        rl = faults.rate_limit
        if early:
            return self._too_many(base, key, rl, now, wall, "early", early=True), False
        if rl.burst > 0:
            return self._too_many(base, key, rl, now, wall, "burst"), True
        window = self._accepted.setdefault(key, deque())
        if rl.requests > 0:
            horizon = now - rl.window
            while window and window[0] <= horizon:
                window.popleft()
            if len(window) >= rl.requests:
                return self._too_many(base, key, rl, now, wall, "rate_limit"), False
        window.append(now)
        if rl.requests <= 0 and len(window) > 1:
            window.popleft()  # keep no history when there is no limit
        return self._faults(base, faults, rng), False

    def _refuse(
        self,
        base: Admission,
        status: int,
        fault: str,
        early: bool,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Admission:
        return replace(
            base,
            status=status,
            message=_MESSAGES[status],
            fault=fault,
            early=early,
            headers=headers,
        )

    def _too_many(
        self,
        base: Admission,
        key: str,
        rl: RateLimit,
        now: float,
        wall: float,
        fault: str,
        *,
        early: bool = False,
    ) -> Admission:
        value, deadline = retry_after(rl, now, wall)
        if deadline is not None:
            self._deadline[key] = max(deadline, self._deadline.get(key, deadline))
        headers = () if value is None else (("retry-after", value),)
        return self._refuse(base, 429, fault, early, headers)

    @staticmethod
    def _faults(base: Admission, faults: Faults, rng: random.Random) -> Admission:
        kind, sid = base.kind, base.session_id

        def hit(rate: float, only: RequestFilter) -> bool:
            return rate > 0 and only.matches(kind, sid) and rng.random() < rate

        hang = faults.hang
        held = (
            hang.seconds
            if ((hang.always and hang.only.matches(kind, sid)) or hit(hang.rate, hang.only))
            else 0.0
        )
        errors = faults.server_errors
        fault: str | None = "hang" if held else None
        status: int | None = None
        message = ""
        if hit(errors.rate, errors.only):
            status, fault = errors.status, "server_error"
            message = "Internal server error (simulated)"
        malformed = status is None and hit(faults.malformed_json.rate, faults.malformed_json.only)
        if malformed:
            fault = "malformed_json"
        return replace(
            base,
            status=status,
            message=message,
            fault=fault,
            hang=held,
            malformed=malformed,
        )


def _latency(faults: Faults, rng: random.Random, kind: str, sid: str | None) -> float:
    """The added latency of one answer (every answer, refusals included)."""
    lat = faults.latency
    if (lat.seconds <= 0 and lat.jitter <= 0) or not lat.only.matches(kind, sid):
        return 0.0
    return lat.seconds + (rng.uniform(0.0, lat.jitter) if lat.jitter > 0 else 0.0)
