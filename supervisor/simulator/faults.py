"""The fault model and the run-time options: plain, immutable data.

One :class:`Faults` value holds everything that a scenario file, ``PATCH
/_simulator/faults`` and :meth:`Simulator.update_faults` can change while the server
runs. Times written as ``at`` are seconds since the simulator started (or was last
reset). Parsing and validation live in :mod:`supervisor.simulator.scenario`.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Final, Literal

ListShape = Literal["nested", "flat", "array"]
RetryAfterForm = Literal["seconds", "http-date", "absent", "raw"]
OutageMode = Literal["503", "refuse"]
RetryPolicy = Literal["constant", "linear", "exponential"]
HmacAlgorithm = Literal["sha512", "sha256"]

LIST_SHAPES: Final[tuple[ListShape, ...]] = ("nested", "flat", "array")
RETRY_AFTER_FORMS: Final[tuple[RetryAfterForm, ...]] = ("seconds", "http-date", "absent", "raw")
OUTAGE_MODES: Final[tuple[OutageMode, ...]] = ("503", "refuse")
RETRY_POLICIES: Final[tuple[RetryPolicy, ...]] = ("constant", "linear", "exponential")
HMAC_ALGORITHMS: Final[tuple[HmacAlgorithm, ...]] = ("sha512", "sha256")

KINDS: Final = frozenset(
    {"list", "get", "create", "delete", "start", "stop", "restart", "qr", "other"}
)
"""Request kinds, as logged and as accepted by the ``kinds`` filters."""

DEFAULT_HANG_SECONDS: Final = 3600.0
DEFAULT_QR_ROTATE: Final = 20.0
"""Seconds between two QR codes of a session in SCAN_QR_CODE (WhatsApp: about 20)."""


def _without_password(url: str) -> str:
    """``url`` with the password of its user info, if any, replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _names(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


@dataclass(frozen=True)
class RandomFailures:
    """Each eligible healthy session drops to ``status`` with probability ``rate`` per second."""

    rate: float = 0.0
    status: str = "FAILED"
    sessions: frozenset[str] | None = None  # None: every session

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "status": self.status, "sessions": _names(self.sessions)}


@dataclass(frozen=True)
class ScheduledFailure:
    """At ``at`` seconds after start, the sessions named (or all) go to ``status``."""

    at: float
    status: str = "FAILED"
    sessions: frozenset[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "sessions": _names(self.sessions)}


@dataclass(frozen=True)
class RateLimit:
    """``requests`` accepted per sliding ``window`` seconds per API key (0: no limit).

    ``burst`` answers the next that many requests with 429 regardless of the rate; it
    counts down as it is used. ``retry_after_form`` picks how 429s carry ``Retry-After``:
    ``seconds`` (delay-seconds, rounded up to an integer), ``http-date`` (IMF-fixdate,
    the instant rounded up to a whole second), ``absent``, or ``raw`` (``retry_after_raw``
    verbatim, to test a client's handling of a malformed value).
    """

    requests: int = 0
    window: float = 60.0
    retry_after: float = 1.0
    retry_after_form: RetryAfterForm = "seconds"
    retry_after_raw: str = ""
    burst: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "window": self.window,
            "retry_after": self.retry_after,
            "retry_after_form": self.retry_after_form,
            "retry_after_raw": self.retry_after_raw,
            "burst": self.burst,
        }


@dataclass(frozen=True)
class RequestFilter:
    """Which requests a per-request fault applies to (None: all)."""

    kinds: frozenset[str] | None = None
    sessions: frozenset[str] | None = None

    def matches(self, kind: str, session_id: str | None) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        return self.sessions is None or (session_id is not None and session_id in self.sessions)

    def to_dict(self) -> dict[str, Any]:
        return {"kinds": _names(self.kinds), "sessions": _names(self.sessions)}


@dataclass(frozen=True)
class ServerErrors:
    """Answer ``status`` (a 5xx) with probability ``rate`` per request."""

    rate: float = 0.0
    status: int = 500
    only: RequestFilter = field(default_factory=RequestFilter)

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "status": self.status, **self.only.to_dict()}


@dataclass(frozen=True)
class Latency:
    """Delay every answer by ``seconds`` plus a uniform random share of ``jitter``."""

    seconds: float = 0.0
    jitter: float = 0.0
    only: RequestFilter = field(default_factory=RequestFilter)

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "jitter": self.jitter, **self.only.to_dict()}


@dataclass(frozen=True)
class Hang:
    """Hold a request unanswered for ``seconds`` (always, or with probability ``rate``).

    The request is answered normally afterwards, unless the client has gone away.
    """

    rate: float = 0.0
    always: bool = False
    seconds: float = DEFAULT_HANG_SECONDS
    only: RequestFilter = field(default_factory=RequestFilter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "always": self.always,
            "seconds": self.seconds,
            **self.only.to_dict(),
        }


@dataclass(frozen=True)
class MalformedJson:
    """With probability ``rate``, a successful JSON answer is cut short (200, not JSON)."""

    rate: float = 0.0
    only: RequestFilter = field(default_factory=RequestFilter)

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, **self.only.to_dict()}


@dataclass(frozen=True)
class Outage:
    """From ``at`` for ``duration`` seconds the API is down.

    Mode ``503`` answers every API request 503; mode ``refuse`` closes the listening
    socket (connections are refused) and listens again on the same port afterwards.
    ``at`` None means "now" and is resolved when the outage is applied.
    """

    duration: float
    mode: OutageMode = "503"
    at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "duration": self.duration, "mode": self.mode}


@dataclass(frozen=True)
class WebhookDelay:
    """With probability ``rate``, an event is held back ``seconds`` before it is sent."""

    rate: float = 0.0
    seconds: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "seconds": self.seconds}


@dataclass(frozen=True)
class WebhookFaults:
    """Faults of the webhooks the simulator sends, each a probability per event.

    ``drop``: never sent; ``duplicate``: sent twice (the same id); ``delay``: held back;
    ``reorder``: swapped with the next event of the same session; ``bad_signature``:
    sent with a wrong ``X-Webhook-Hmac``.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    delay: WebhookDelay = field(default_factory=WebhookDelay)
    reorder: float = 0.0
    bad_signature: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "duplicate": self.duplicate,
            "delay": self.delay.to_dict(),
            "reorder": self.reorder,
            "bad_signature": self.bad_signature,
        }


@dataclass(frozen=True)
class Faults:
    """Everything that can be changed while the simulator runs: options and faults."""

    seed: int | None = None
    list_shape: ListShape = "nested"
    post_status: int = 200
    start_delay: float = 1.0
    outcome: tuple[str, ...] = ("WORKING",)
    conflict_on_failed_restart: bool = False
    start_only_from_stopped: bool = False
    qr_rotate: float = DEFAULT_QR_ROTATE
    random_failures: RandomFailures = field(default_factory=RandomFailures)
    scheduled_failures: tuple[ScheduledFailure, ...] = ()
    rate_limit: RateLimit = field(default_factory=RateLimit)
    server_errors: ServerErrors = field(default_factory=ServerErrors)
    latency: Latency = field(default_factory=Latency)
    hang: Hang = field(default_factory=Hang)
    malformed_json: MalformedJson = field(default_factory=MalformedJson)
    outage: Outage | None = None
    webhook_faults: WebhookFaults = field(default_factory=WebhookFaults)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with every key; accepted back by ``PUT /_simulator/faults``."""
        return {
            "seed": self.seed,
            "list_shape": self.list_shape,
            "post_status": self.post_status,
            "start_delay": self.start_delay,
            "outcome": list(self.outcome),
            "conflict_on_failed_restart": self.conflict_on_failed_restart,
            "start_only_from_stopped": self.start_only_from_stopped,
            "qr_rotate": self.qr_rotate,
            "random_failures": self.random_failures.to_dict(),
            "scheduled_failures": [s.to_dict() for s in self.scheduled_failures],
            "rate_limit": self.rate_limit.to_dict(),
            "server_errors": self.server_errors.to_dict(),
            "latency": self.latency.to_dict(),
            "hang": self.hang.to_dict(),
            "malformed_json": self.malformed_json.to_dict(),
            "outage": None if self.outage is None else self.outage.to_dict(),
            "webhook_faults": self.webhook_faults.to_dict(),
        }


DEFAULT_RETRY_DELAY: Final = 2.0
DEFAULT_RETRY_ATTEMPTS: Final = 15


@dataclass(frozen=True)
class WebhookRetries:
    """WAHA's retries of a failed delivery (a non-2xx answer or a transport error).

    ``attempts`` counts every try, the first one included; the wait before try ``n + 1``
    is ``delay`` (``constant``), ``delay * n`` (``linear``) or ``delay * 2 ** (n - 1)``
    (``exponential``).
    """

    policy: RetryPolicy = "constant"
    delay: float = DEFAULT_RETRY_DELAY
    attempts: int = DEFAULT_RETRY_ATTEMPTS

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (from 1)."""
        if self.policy == "linear":
            return self.delay * attempt
        if self.policy == "exponential":
            return self.delay * 2.0 ** (attempt - 1)
        return self.delay

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "delay": self.delay, "attempts": self.attempts}


@dataclass(frozen=True)
class WebhookSettings:
    """Where and how the simulator sends its webhooks (no ``url``: none are sent).

    The HMAC key is a secret: it is kept out of ``repr`` and out of :meth:`to_dict`,
    which says only whether one is set (and hides a password in the URL).
    """

    url: str | None = field(default=None, repr=False)
    hmac_key: str | None = field(default=None, repr=False)
    hmac_algorithm: HmacAlgorithm = "sha512"
    legacy: bool = False
    retries: WebhookRetries = field(default_factory=WebhookRetries)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``PATCH /_simulator/webhooks`` (the key only as set or not)."""
        return {
            "webhook_url": None if self.url is None else _without_password(self.url),
            "webhook_hmac_key_set": self.hmac_key is not None,
            "webhook_hmac_algorithm": self.hmac_algorithm,
            "webhook_legacy": self.legacy,
            "webhook_retries": self.retries.to_dict(),
        }
