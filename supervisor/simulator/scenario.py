"""Scenario files (TOML or JSON) and the validation shared with the admin API.

A scenario holds the sessions to create and the initial :class:`~.faults.Faults`.
``PATCH``/``PUT /_simulator/faults`` and :meth:`Simulator.update_faults` go through the
same parser, so a bad key is reported the same way everywhere: a :class:`ScenarioError`
whose message names the key, e.g. ``rate_limit.retry_after_form: must be one of
'seconds', 'http-date', 'absent', 'raw' (got 'date')``.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, cast

from . import statuses
from .faults import (
    DEFAULT_QR_ROTATE,
    HMAC_ALGORITHMS,
    KINDS,
    LIST_SHAPES,
    OUTAGE_MODES,
    RETRY_AFTER_FORMS,
    RETRY_POLICIES,
    Faults,
    Hang,
    HmacAlgorithm,
    Latency,
    ListShape,
    MalformedJson,
    Outage,
    OutageMode,
    RandomFailures,
    RateLimit,
    RequestFilter,
    RetryAfterForm,
    RetryPolicy,
    ScheduledFailure,
    ServerErrors,
    WebhookDelay,
    WebhookFaults,
    WebhookRetries,
    WebhookSettings,
)

DEFAULT_SESSION_COUNT: Final = 10
MAX_SESSIONS: Final = 1_000_000


class ScenarioError(ValueError):
    """A scenario (or a fault update) is invalid; the message names the key at fault."""


@dataclass(frozen=True)
class SessionSpec:
    """A session to create. Unset fields are generated from the id."""

    id: str
    status: str = statuses.WORKING
    session_name: str | None = None
    name: str | None = None
    phone_number: str | None = None
    outcome: tuple[str, ...] | None = None  # None: the global ``outcome``
    enable_account_protection: bool = False
    enable_message_logging: bool = False
    enable_webhook: bool = False
    webhook_url: str | None = None
    zombie: bool = False  # its engine not connected while its status says WORKING


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario: which sessions exist at start, and the initial faults."""

    session_count: int | None = None  # None: the caller's default
    initial_status: str = statuses.WORKING
    sessions: tuple[SessionSpec, ...] = ()
    faults: Faults = field(default_factory=Faults)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)


_MISSING: Final = object()


class _Table:
    """A mapping being validated: typed getters that name the key path on error."""

    def __init__(self, data: object, where: str, allowed: Iterable[str]) -> None:
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{where or 'scenario'}: must be a table/object, got {_kind(data)}")
        self.where = where
        self.data = cast(Mapping[str, object], data)
        known = list(allowed)
        for key in self.data:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ScenarioError(f"{self.path(str(key))}: unknown key{suggestion}")

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str) -> object:
        value = self.data.get(key, _MISSING)
        return _MISSING if value is None else value

    def has(self, key: str) -> bool:
        return self.raw(key) is not _MISSING

    def number(
        self, key: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
    ) -> float:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{self.path(key)}: must be a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise ScenarioError(f"{self.path(key)}: must be a number, got {_kind(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = (
                f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
            )
            raise ScenarioError(f"{self.path(key)}: must be {bound}, got {value!r}")
        return float(value)

    def probability(self, key: str) -> float:
        return self.number(key, 0.0, minimum=0.0, maximum=1.0)

    def integer(
        self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{self.path(key)}: must be an integer, got {_kind(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ScenarioError(f"{self.path(key)}: must be {bound}, got {value!r}")
        return value

    def optional_integer(self, key: str) -> int | None:
        return None if not self.has(key) else self.integer(key, 0, minimum=-(2**63))

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ScenarioError(f"{self.path(key)}: must be true or false, got {_kind(value)}")
        return value

    def string(self, key: str, default: str) -> str:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise ScenarioError(f"{self.path(key)}: must be a string, got {_kind(value)}")
        return value

    def optional_string(self, key: str) -> str | None:
        return self.string(key, "") if self.has(key) else None

    def choice(self, key: str, default: str, options: Iterable[str]) -> str:
        allowed = list(options)
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # lets `mode = 503` stand for "503"
        if value not in allowed:
            listed = ", ".join(f"'{o}'" for o in allowed)
            raise ScenarioError(f"{self.path(key)}: must be one of {listed} (got {value!r})")
        return str(value)

    def status(self, key: str, default: str) -> str:
        value = self.raw(key)
        if value is _MISSING:
            return default
        return _status(value, self.path(key))

    def statuses(self, key: str) -> tuple[str, ...] | None:
        value = self.raw(key)
        if value is _MISSING:
            return None
        if isinstance(value, str):
            return (_status(value, self.path(key)),)
        if not isinstance(value, list) or not value:
            raise ScenarioError(
                f"{self.path(key)}: must be a status or a non-empty list of statuses, "
                f"got {_kind(value)}"
            )
        return tuple(_status(v, f"{self.path(key)}[{i}]") for i, v in enumerate(value))

    def names(self, key: str, allowed: Iterable[str] | None = None) -> frozenset[str] | None:
        value = self.raw(key)
        if value is _MISSING:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ScenarioError(f"{self.path(key)}: must be a list of strings, got {_kind(value)}")
        names = cast(list[str], value)
        if allowed is not None:
            known = sorted(allowed)
            for name in names:
                if name not in known:
                    listed = ", ".join(known)
                    raise ScenarioError(
                        f"{self.path(key)}: unknown value {name!r} (known: {listed})"
                    )
        return frozenset(names)

    def table(self, key: str, allowed: Iterable[str]) -> _Table:
        value = self.raw(key)
        return _Table({} if value is _MISSING else value, self.path(key), allowed)

    def tables(self, key: str, allowed: Iterable[str]) -> list[_Table]:
        value = self.raw(key)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            raise ScenarioError(f"{self.path(key)}: must be a list of tables, got {_kind(value)}")
        return [_Table(v, f"{self.path(key)}[{i}]", allowed) for i, v in enumerate(value)]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def parse_status(value: object, where: str = "status") -> str:
    """A known status, upper-cased (raises :class:`ScenarioError` naming ``where``)."""
    return _status(value, where)


def _status(value: object, where: str) -> str:
    if not isinstance(value, str) or value.upper() not in statuses.KNOWN:
        known = ", ".join(sorted(statuses.KNOWN))
        raise ScenarioError(f"{where}: must be a known status ({known}), got {_kind(value)}")
    return value.upper()


_FILTER_KEYS: Final = ("kinds", "sessions")


def _filter(t: _Table) -> RequestFilter:
    return RequestFilter(kinds=t.names("kinds", KINDS), sessions=t.names("sessions"))


def _random_failures(t: _Table) -> RandomFailures:
    status = t.status("status", statuses.FAILED)
    if status in statuses.HEALTHY:
        raise ScenarioError(
            f"{t.path('status')}: a failure cannot lead to a healthy status ({status})"
        )
    return RandomFailures(rate=t.probability("rate"), status=status, sessions=t.names("sessions"))


def _scheduled(t: _Table) -> ScheduledFailure:
    if not t.has("at"):
        raise ScenarioError(f"{t.path('at')}: required (seconds after start)")
    sessions = t.names("sessions")
    if t.has("session"):
        if sessions is not None:
            raise ScenarioError(f"{t.path('session')}: give 'session' or 'sessions', not both")
        sessions = frozenset({t.string("session", "")})
    return ScheduledFailure(
        at=t.number("at", 0.0), status=t.status("status", statuses.FAILED), sessions=sessions
    )


def _rate_limit(t: _Table) -> RateLimit:
    form = cast(RetryAfterForm, t.choice("retry_after_form", "seconds", RETRY_AFTER_FORMS))
    raw = t.string("retry_after_raw", "")
    if form == "raw" and not t.has("retry_after_raw"):
        raise ScenarioError(f"{t.path('retry_after_raw')}: required when retry_after_form is 'raw'")
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in raw):
        raise ScenarioError(f"{t.path('retry_after_raw')}: must be printable ASCII")
    return RateLimit(
        requests=t.integer("requests", 0),
        window=t.number("window", 60.0, minimum=0.001),
        retry_after=t.number("retry_after", 1.0, maximum=10.0**10),
        retry_after_form=form,
        retry_after_raw=raw,
        burst=t.integer("burst", 0),
    )


def _outage(t: _Table) -> Outage:
    if not t.has("duration"):
        raise ScenarioError(f"{t.path('duration')}: required (seconds)")
    at = t.number("at", 0.0) if t.has("at") else None
    return Outage(
        duration=t.number("duration", 0.0),
        mode=cast(OutageMode, t.choice("mode", "503", OUTAGE_MODES)),
        at=at,
    )


FAULT_KEYS: Final = (
    "seed",
    "list_shape",
    "post_status",
    "start_delay",
    "outcome",
    "conflict_on_failed_restart",
    "start_only_from_stopped",
    "qr_rotate",
    "random_failures",
    "scheduled_failures",
    "rate_limit",
    "server_errors",
    "latency",
    "hang",
    "malformed_json",
    "outage",
    "webhook_faults",
)
WEBHOOK_KEYS: Final = (
    "webhook_url",
    "webhook_hmac_key",
    "webhook_hmac_algorithm",
    "webhook_legacy",
    "webhook_retries",
)
SECTION_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "random_failures": ("rate", "status", "sessions"),
    "scheduled_failures": ("at", "status", "session", "sessions"),
    "rate_limit": (
        "requests",
        "window",
        "retry_after",
        "retry_after_form",
        "retry_after_raw",
        "burst",
    ),
    "server_errors": ("rate", "status", *_FILTER_KEYS),
    "latency": ("seconds", "jitter", *_FILTER_KEYS),
    "hang": ("rate", "always", "seconds", *_FILTER_KEYS),
    "malformed_json": ("rate", *_FILTER_KEYS),
    "outage": ("at", "duration", "mode"),
    "webhook_faults": ("drop", "duplicate", "delay", "reorder", "bad_signature"),
    "webhook_retries": ("policy", "delay", "attempts"),
}
_DELAY_KEYS: Final = ("rate", "seconds")
SESSION_KEYS: Final = (
    "id",
    "status",
    "session_name",
    "name",
    "phone_number",
    "outcome",
    "enable_account_protection",
    "enable_message_logging",
    "enable_webhook",
    "webhook_url",
    "zombie",
)
SCENARIO_KEYS: Final = (
    "session_count", "initial_status", "sessions", *FAULT_KEYS, *WEBHOOK_KEYS
)


def _faults(t: _Table) -> Faults:
    random = t.table("random_failures", SECTION_KEYS["random_failures"])
    scheduled = t.tables("scheduled_failures", SECTION_KEYS["scheduled_failures"])
    errors = t.table("server_errors", SECTION_KEYS["server_errors"])
    latency = t.table("latency", SECTION_KEYS["latency"])
    hang = t.table("hang", SECTION_KEYS["hang"])
    malformed = t.table("malformed_json", SECTION_KEYS["malformed_json"])
    outage = t.table("outage", SECTION_KEYS["outage"]) if t.has("outage") else None
    hooks = t.table("webhook_faults", SECTION_KEYS["webhook_faults"])
    delay = hooks.table("delay", _DELAY_KEYS)
    return Faults(
        seed=t.optional_integer("seed"),
        list_shape=cast(ListShape, t.choice("list_shape", "nested", LIST_SHAPES)),
        post_status=t.integer("post_status", 200, minimum=200, maximum=299),
        start_delay=t.number("start_delay", 1.0),
        outcome=t.statuses("outcome") or (statuses.WORKING,),
        conflict_on_failed_restart=t.boolean("conflict_on_failed_restart", False),
        start_only_from_stopped=t.boolean("start_only_from_stopped", False),
        qr_rotate=t.number("qr_rotate", DEFAULT_QR_ROTATE, minimum=0.001),
        random_failures=_random_failures(random),
        scheduled_failures=tuple(sorted((_scheduled(s) for s in scheduled), key=lambda s: s.at)),
        rate_limit=_rate_limit(t.table("rate_limit", SECTION_KEYS["rate_limit"])),
        server_errors=ServerErrors(
            rate=errors.probability("rate"),
            status=errors.integer("status", 500, minimum=500, maximum=599),
            only=_filter(errors),
        ),
        latency=Latency(
            seconds=latency.number("seconds", 0.0),
            jitter=latency.number("jitter", 0.0),
            only=_filter(latency),
        ),
        hang=Hang(
            rate=hang.probability("rate"),
            always=hang.boolean("always", False),
            seconds=hang.number("seconds", Hang.seconds),
            only=_filter(hang),
        ),
        malformed_json=MalformedJson(rate=malformed.probability("rate"), only=_filter(malformed)),
        outage=None if outage is None else _outage(outage),
        webhook_faults=WebhookFaults(
            drop=hooks.probability("drop"),
            duplicate=hooks.probability("duplicate"),
            delay=WebhookDelay(
                rate=delay.probability("rate"),
                seconds=delay.number("seconds", WebhookDelay.seconds, maximum=3600.0),
            ),
            reorder=hooks.probability("reorder"),
            bad_signature=hooks.probability("bad_signature"),
        ),
    )


def parse_faults(data: Mapping[str, Any], where: str = "") -> Faults:
    """Validate a complete faults document (missing keys take their defaults)."""
    return _faults(_Table(data, where, FAULT_KEYS))


_REPLACED_WHOLE: Final = frozenset({"outage", "scheduled_failures"})


def merge_faults(current: Faults, patch: Mapping[str, Any], where: str = "") -> Faults:
    """Apply a partial update: scalars are replaced, sections are merged key by key.

    ``outage`` and ``scheduled_failures`` are replaced whole (an outage without ``at``
    starts when applied); a section given as null goes back to its defaults.
    """
    _Table(patch, where, FAULT_KEYS)  # reject unknown top-level keys first
    merged = current.to_dict()
    for key, value in patch.items():
        old = merged.get(key)
        mergeable = key in SECTION_KEYS and key not in _REPLACED_WHOLE
        if mergeable and isinstance(value, Mapping) and isinstance(old, dict):
            merged[key] = {**old, **value}
        elif value is None and key in SECTION_KEYS:
            del merged[key]
        else:
            merged[key] = value
    return parse_faults(merged, where)


def webhook_url(value: object, where: str = "webhook_url") -> str:
    """An ``http://`` or ``https://`` URL with a host (raises :class:`ScenarioError`)."""
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: must be a string, got {_kind(value)}")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or not value.isprintable():
        raise ScenarioError(f"{where}: must be an http:// or https:// URL with a host")
    return value


def _webhook_key(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where}: must be a non-empty string")
    return value


def merge_webhooks(
    current: WebhookSettings, patch: Mapping[str, Any], where: str = ""
) -> WebhookSettings:
    """Apply the ``webhook_*`` keys of ``patch`` to ``current`` (the scenario's keys, as
    in ``PATCH /_simulator/webhooks``): a key given replaces its value, null returns it to
    its default; ``webhook_retries`` is merged key by key."""
    t = _Table(patch, where, WEBHOOK_KEYS)
    new = current
    if "webhook_url" in t.data:
        raw = t.data["webhook_url"]
        new = replace(new, url=None if raw is None else webhook_url(raw, t.path("webhook_url")))
    if "webhook_hmac_key" in t.data:
        raw = t.data["webhook_hmac_key"]
        key = None if raw is None else _webhook_key(raw, t.path("webhook_hmac_key"))
        new = replace(new, hmac_key=key)
    if "webhook_hmac_algorithm" in t.data:
        algorithm = t.choice("webhook_hmac_algorithm", "sha512", HMAC_ALGORITHMS)
        new = replace(new, hmac_algorithm=cast(HmacAlgorithm, algorithm))
    if "webhook_legacy" in t.data:
        new = replace(new, legacy=t.boolean("webhook_legacy", False))
    if "webhook_retries" in t.data:
        raw = t.data["webhook_retries"]
        old = {} if raw is None else new.retries.to_dict()
        given = raw if isinstance(raw, Mapping) else ({} if raw is None else raw)
        retries = _Table(given, t.path("webhook_retries"), SECTION_KEYS["webhook_retries"])
        merged = _Table({**old, **retries.data}, retries.where, SECTION_KEYS["webhook_retries"])
        new = replace(
            new,
            retries=WebhookRetries(
                policy=cast(RetryPolicy, merged.choice("policy", "constant", RETRY_POLICIES)),
                delay=merged.number("delay", WebhookRetries.delay, maximum=3600.0),
                attempts=merged.integer("attempts", WebhookRetries.attempts, minimum=1,
                                        maximum=1000),
            ),
        )
    return new


def _session_spec(t: _Table, default_status: str) -> SessionSpec:
    if not t.has("id"):
        raise ScenarioError(f"{t.path('id')}: required")
    sid = t.string("id", "")
    if not sid or "/" in sid or len(sid) > 200 or not sid.isprintable() or sid.strip() != sid:
        raise ScenarioError(f"{t.path('id')}: must be a non-empty printable string without '/'")
    return SessionSpec(
        id=sid,
        status=t.status("status", default_status),
        session_name=t.optional_string("session_name"),
        name=t.optional_string("name"),
        phone_number=t.optional_string("phone_number"),
        outcome=t.statuses("outcome"),
        enable_account_protection=t.boolean("enable_account_protection", False),
        enable_message_logging=t.boolean("enable_message_logging", False),
        enable_webhook=t.boolean("enable_webhook", False),
        webhook_url=t.optional_string("webhook_url"),
        zombie=t.boolean("zombie", False),
    )


def parse_session_specs(
    data: object, where: str = "sessions", default_status: str = statuses.WORKING
) -> tuple[SessionSpec, ...]:
    """Validate a list of session tables (as in ``[[sessions]]``)."""
    holder = _Table({"sessions": data}, "", ("sessions",))
    specs = tuple(_session_spec(t, default_status) for t in holder.tables("sessions", SESSION_KEYS))
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.id in seen:
            raise ScenarioError(f"{where}[{i}].id: duplicate session id {spec.id!r}")
        seen.add(spec.id)
    return specs


def parse_scenario(data: Mapping[str, Any], where: str = "") -> Scenario:
    """Validate a whole scenario document (already decoded from TOML or JSON)."""
    top = _Table(data, where, SCENARIO_KEYS)
    fault_data = {k: v for k, v in top.data.items() if k in FAULT_KEYS}
    webhook_data = {k: v for k, v in top.data.items() if k in WEBHOOK_KEYS}
    initial = top.status("initial_status", statuses.WORKING)
    count = None
    if top.has("session_count"):
        count = top.integer("session_count", 0, maximum=MAX_SESSIONS)
    explicit = top.raw("sessions") if top.has("sessions") else []
    return Scenario(
        session_count=count,
        initial_status=initial,
        sessions=parse_session_specs(explicit, top.path("sessions"), initial),
        faults=parse_faults(fault_data, where),
        webhooks=merge_webhooks(WebhookSettings(), webhook_data, where),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file: JSON if it ends in ``.json``, TOML otherwise.

    Raises :class:`ScenarioError` with a one-line message that names the file and the
    key at fault; nothing else escapes for a bad or unreadable file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(f"{p}: cannot read the scenario: {reason}") from None
    data: object
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{p}: invalid JSON: {exc}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{p}: invalid TOML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{p}: the scenario must be a table/object at the top level")
    try:
        return parse_scenario(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{p}: {exc}") from None
