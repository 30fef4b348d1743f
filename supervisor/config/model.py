"""The settings model: every key, its type, its rules and its default, and its two tables.

``Settings`` is immutable. ``load_settings`` (``supervisor.config.load``) builds it from
every source; ``Settings(...)`` with keyword arguments reads no environment and no file: it
validates exactly what it is given on top of the defaults, which is what tests of other
modules want. The decision core's defaults are the domain policy's (``Policy``,
``Backoff``, the ``DEFAULT_*`` status lists), the history's the state store's: this model
takes them from there, and writes none of them again.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from supervisor.config.key import ApiKeySource
from supervisor.config.origin import DEFAULT, Origin
from supervisor.config.urls import TAG, AlertUrl, UrlsFile, duplicates, parse_entry, secret_pieces
from supervisor.domain.api_key import key_problem
from supervisor.domain.leadership import DEFAULT_LEASE, DEFAULT_RENEW, Terms
from supervisor.domain.leadership import problem as terms_problem
from supervisor.domain.models import StatusClass
from supervisor.domain.policy import (
    DEFAULT_HEALTHY,
    DEFAULT_NEEDS_PERSON,
    DEFAULT_RESTARTABLE,
    DEFAULT_TRANSITIONAL,
    Backoff,
    Policy,
    StatusClasses,
    overlaps,
)
from supervisor.state.store import (
    DEFAULT_HISTORY_MAX_AGE,
    DEFAULT_HISTORY_MAX_ROWS,
    MEMORY,
    dsn_secrets,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "TABLES",
    "AlertSettings",
    "BackoffSettings",
    "HaSettings",
    "Settings",
    "StatusSettings",
    "listen_address",
    "setting_keys",
]

DEFAULT_BASE_URL = "https://api.wasend.dev"
_POLICY = Policy()  # the decision core's defaults, read once


# --- validators ----------------------------------------------------------------------------


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("not_a_number", "must be a number, not true or false")
    return value


_Number = BeforeValidator(_not_bool)
_PositiveSeconds = Annotated[float, _Number, Field(gt=0)]
_NonNegativeSeconds = Annotated[float, _Number, Field(ge=0)]


def _split_list(value: Any) -> Any:
    """A list as given, or parsed from text: a JSON list, or comma-separated names."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise PydanticCustomError(
                "list_text", "must be a JSON list or comma-separated names"
            ) from None
    return [part.strip() for part in text.split(",")]


def _names(value: Any, *, upper: bool) -> tuple[str, ...]:
    items = _split_list(value)
    if not isinstance(items, list | tuple):
        raise PydanticCustomError("list_type", "must be a list of names")
    names: list[str] = []
    for index, item in enumerate(items, 1):
        if not isinstance(item, str):
            raise PydanticCustomError(
                "item_type", "item {index} must be a string", {"index": index}
            )
        name = item.strip()
        if not name:
            raise PydanticCustomError("item_empty", "item {index} is empty", {"index": index})
        names.append(name.upper() if upper else name)
    return tuple(names)


def _statuses(value: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_names(value, upper=True)))  # upper case, duplicates dropped


# NoDecode: a list from the environment reaches _statuses as text (commas or JSON).
_StatusList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_statuses)]


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_url(value: str, *, insecure: bool = False, userinfo: bool = False,
              query: bool = False) -> str:
    """An http(s) URL, scheme lower-cased, or PydanticCustomError saying what is wrong.
    ``insecure``: plain http:// for any host (else for a loopback host only); ``userinfo``:
    a user name and password may be in it; ``query``: a query and a fragment may be too
    (else neither, and a trailing ``/`` is dropped)."""
    text = value.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise PydanticCustomError(
            "url_scheme",
            "must be an http:// or https:// URL" if insecure
            else "must be an https:// (or loopback http://) URL",
        )
    if "@" in parts.netloc and not userinfo:
        raise PydanticCustomError("url_userinfo", "must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise PydanticCustomError("url_host", "must name a host")
    try:
        _ = parts.port
    except ValueError:
        raise PydanticCustomError("url_port", "has an invalid port") from None
    if (parts.query or parts.fragment) and not query:
        raise PydanticCustomError("url_query", "must not have a query or fragment")
    if scheme == "http" and not insecure and not _is_loopback(host):
        raise PydanticCustomError(
            "url_insecure",
            "plain http:// is only allowed for a loopback host "
            "(127.0.0.0/8, ::1, localhost); use https://",
        )
    if query:
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _normalise_base_url(value: str) -> str:
    return _http_url(value)


_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_LISTEN_FORMS = "host:port, [IPv6]:port or a port alone (empty: off)"


def listen_address(value: str) -> tuple[str, int] | None:
    """``http_listen`` as (host, port), or None when it is empty (the listener is off).

    ``9187`` means ``127.0.0.1:9187``; ``[::1]:9187`` is an IPv6 address; port 0 picks a
    free port. Raises ValueError with a short reason for anything else.
    """
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        inside, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"must be {_LISTEN_FORMS}")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            raise ValueError(f"{inside!r} in brackets is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"must be {_LISTEN_FORMS}")
        if ":" in host:
            raise ValueError("an IPv6 address must be in brackets: [::1]:9187")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host[:24]!r} is not a host name or address")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("the port must be a number from 0 to 65535")
    return host, int(port_text)


def _check_listen(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # http_listen = 9187 in TOML
    if not isinstance(value, str):
        return value  # pydantic reports the type
    try:
        found = listen_address(value)
    except ValueError as exc:
        raise PydanticCustomError("listen_address", "{reason}", {"reason": str(exc)}) from None
    if found is None:
        return ""
    host, port = found
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- the model -----------------------------------------------------------------------------

_MODEL_CONFIG = ConfigDict(
    frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=True
)


class BackoffSettings(BaseModel):
    """Waiting between restart attempts: full jitter under ``min(max, initial * multiplier**n)``."""

    model_config = _MODEL_CONFIG

    initial: _NonNegativeSeconds = Field(
        default=_POLICY.backoff.initial, description="cap of the first delay, seconds"
    )
    max: _NonNegativeSeconds = Field(
        default=_POLICY.backoff.max, description="cap of every delay, seconds"
    )
    multiplier: Annotated[float, _Number, Field(ge=1)] = Field(
        default=_POLICY.backoff.multiplier, description="growth of the cap per attempt"
    )

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> BackoffSettings:
        if self.max < self.initial:
            raise PydanticCustomError(
                "below_other",
                "must be at least {other}, which is {other_value}",
                {
                    "field": "max",
                    "value": self.max,
                    "other": "backoff.initial",
                    "other_value": self.initial,
                },
            )
        return self


class StatusSettings(BaseModel):
    """Which status names fall in which class; upper-cased, and no name in two classes."""

    model_config = _MODEL_CONFIG

    healthy: _StatusList = Field(default=DEFAULT_HEALTHY, description="running; nothing to do")
    transitional: _StatusList = Field(default=DEFAULT_TRANSITIONAL, description="on its way up")
    restartable: _StatusList = Field(default=DEFAULT_RESTARTABLE, description="restart it")
    needs_person: _StatusList = Field(
        default=DEFAULT_NEEDS_PERSON, description="a restart cannot help (e.g. a QR code to scan)"
    )

    @model_validator(mode="after")
    def _disjoint(self) -> StatusSettings:
        found = [
            (status, first.value, second.value)
            for status, first, second in overlaps(
                [(StatusClass(name), getattr(self, name)) for name in type(self).model_fields]
            )
        ]
        if found:
            raise PydanticCustomError(
                "status_overlap",
                "{summary}",
                {
                    "summary": "; ".join(
                        f"{s} is in both statuses.{a} and statuses.{b}" for s, a, b in found
                    ),
                    "overlaps": found,
                },
            )
        return self


# --- alerts --------------------------------------------------------------------------------


def _entries(value: Any) -> Any:
    """Text as a list of entries: a JSON list, else separated by whitespace (spaces or
    newlines; an Apprise URL holds none, and may hold commas). Anything else as given:
    the caller checks that it is a list of strings."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            found = json.loads(text)
        except json.JSONDecodeError:
            raise PydanticCustomError(
                "list_text", "must be a JSON list or URLs separated by spaces or newlines"
            ) from None
        return found
    return tuple(text.split())


def _alert_urls(value: Any) -> tuple[SecretStr, ...]:
    items = _entries(value)
    if not isinstance(items, list | tuple):
        raise PydanticCustomError("list_type", "must be a list of Apprise URLs")
    found: list[AlertUrl] = []
    texts: list[str] = []
    for index, item in enumerate(items, 1):
        text = item.get_secret_value() if isinstance(item, SecretStr) else item
        if not isinstance(text, str):
            raise PydanticCustomError(
                "item_type", "item {index} must be a string", {"index": index}
            )
        texts.append(text.strip())  # as given, tags and all
        try:
            found.append(parse_entry(text, f"alerts.urls item {index}"))
        except ValueError as exc:
            raise PydanticCustomError(
                "alert_url", "item {index} is {reason}", {"index": index, "reason": str(exc)}
            ) from None
    for first, again in duplicates(found):
        raise PydanticCustomError(
            "alert_url_twice",
            "{again} is the same URL as {first}",
            {"first": first.where.removeprefix("alerts.urls "),
             "again": again.where.removeprefix("alerts.urls ")},
        )
    return tuple(SecretStr(text) for text in texts)


def _kind_names() -> tuple[str, ...]:
    # Imported here: only settings that route alerts need it, and a check without does not.
    from supervisor.domain.episodes import Kind  # noqa: PLC0415

    return tuple(kind.value for kind in Kind)


def _route_text(text: str) -> Any:
    """``routes`` from the environment: a JSON object, or ``kind=tag,tag`` pairs separated
    by spaces or newlines."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise PydanticCustomError(
                "routes_text", "must be a JSON object or kind=tag,tag pairs separated by spaces"
            ) from None
    routes: dict[str, str] = {}
    for pair in text.split():
        kind, sep, tags = pair.partition("=")
        if not sep:
            raise PydanticCustomError(
                "routes_text", "must be a JSON object or kind=tag,tag pairs separated by spaces"
            )
        routes[kind] = tags
    return routes


def _routes(value: Any) -> Any:
    """``routes`` as (kind, tags) pairs in the kinds' order; a kind given tags goes only to
    the URLs carrying one of them."""
    if isinstance(value, str):
        value = _route_text(value)
    if isinstance(value, tuple):
        value = dict(value)
    if not isinstance(value, Mapping):
        raise PydanticCustomError("routes_type", "must be a table of kind = [tags]")
    if not value:
        return ()
    kinds = _kind_names()
    routes: dict[str, tuple[str, ...]] = {}
    for kind, tags in value.items():
        if kind not in kinds:
            # Imported here: only this message needs it.
            import difflib  # noqa: PLC0415

            named = str(kind) if re.fullmatch(r"[a-z_]{1,32}", str(kind)) else "a kind"
            close = difflib.get_close_matches(str(kind), kinds, n=1, cutoff=0.75)
            guess = f", did you mean {close[0]}?" if close else f" (kinds: {', '.join(kinds)})"
            raise PydanticCustomError("route_kind", "{named} is no kind of alert{guess}",
                                      {"named": named, "guess": guess})
        items = tags.split(",") if isinstance(tags, str) else tags
        if not isinstance(items, list | tuple) or not all(isinstance(t, str) for t in items):
            raise PydanticCustomError(
                "route_tags", "{kind} must be given a list of tags", {"kind": kind})
        names = tuple(dict.fromkeys(t.strip().lower() for t in items))
        if not names or not all(TAG.fullmatch(t) for t in names):
            raise PydanticCustomError(
                "route_tags",
                "{kind}'s tags must be letters, digits, _ and -, and at least one",
                {"kind": kind},
            )
        routes[kind] = names
    return tuple((kind, routes[kind]) for kind in kinds if kind in routes)


def _alertmanager_url(value: Any) -> Any:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        return value  # pydantic reports the type
    return SecretStr(_http_url(value, insecure=True, userinfo=True))


STATE_URL_SCHEMES: Final = ("postgresql", "postgres")


def check_state_url(value: Any) -> Any:
    """``state_url``: a libpq URL, ``postgresql://`` or ``postgres://`` (``postgresql://``
    alone: everything from libpq's ``PG*`` variables). A secret: never echoed."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return None
    if not isinstance(value, str):
        return value  # pydantic reports the type
    text = value.strip()
    if not text:
        raise PydanticCustomError("path_empty", "must not be empty")
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in STATE_URL_SCHEMES:
        raise PydanticCustomError(
            "state_url", "must be a PostgreSQL URL: postgresql://[user@]host[:port]/database")
    try:
        urlsplit(text).port  # noqa: B018 (a bad port raises)
    except ValueError:
        raise PydanticCustomError("state_url", "has a port that is not a number") from None
    return SecretStr(text)


def _status_page_url(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value.strip() if isinstance(value, str) else value
    return _http_url(value, insecure=True, query=True)


class AlertSettings(BaseModel):
    """Where alerts go (Apprise URLs, Alertmanager) and how they are grouped and queued.

    The URLs hold tokens: they are ``SecretStr`` s, never printed, and every one of them
    (with its password and token-like pieces) is in ``secret_values()`` for the process's
    ``Secrets``. ``alerts.urls_file``'s URLs are read by ``load_settings`` (settings built
    in code read no file), and ``channel_urls()`` holds both."""

    model_config = _MODEL_CONFIG

    urls: Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_alert_urls)] = Field(
        default=(), description="Apprise URLs, each optionally behind its tags (TAGS=URL)"
    )
    urls_file: Path | None = Field(
        default=None, description="a file of Apprise URLs, one per line (# comments)"
    )
    routes: Annotated[
        tuple[tuple[str, tuple[str, ...]], ...], NoDecode, BeforeValidator(_routes)
    ] = Field(default=(), description="kind = [tags]: that kind goes only to URLs so tagged")
    alertmanager_url: Annotated[SecretStr | None, BeforeValidator(_alertmanager_url)] = Field(
        default=None, description="Prometheus Alertmanager's base URL (its v2 API); none: off"
    )
    unreachable_after: _PositiveSeconds = Field(
        default=120.0, description="seconds of failing polls before api_unreachable opens"
    )
    group_window: _NonNegativeSeconds = Field(
        default=10.0, description="seconds in which episodes of one kind make one message"
    )
    max_age: _PositiveSeconds = Field(
        default=3600.0, description="seconds after which an undelivered message is dropped"
    )
    queue_max: Annotated[int, _Number, Field(ge=1)] = Field(
        default=10000, description="undelivered messages kept at most (the oldest go first)"
    )
    status_page_url: Annotated[str, BeforeValidator(_status_page_url)] = Field(
        default="", description="a page named in needs_person alerts instead of the dashboard"
    )

    _file: UrlsFile | None = PrivateAttr(default=None)  # set by load_settings

    @field_validator("urls_file", mode="before")
    @classmethod
    def _check_urls_file(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError("path_empty", "must not be empty")
        return value

    @property
    def enabled(self) -> bool:
        """Whether any channel is configured (an Apprise URL or Alertmanager)."""
        return bool(self.urls) or self._file is not None or self.alertmanager_url is not None

    def channel_urls(self) -> tuple[AlertUrl, ...]:
        """Every Apprise URL: ``urls`` in order, then the ``urls_file``'s."""
        listed = tuple(
            parse_entry(url.get_secret_value(), f"alerts.urls item {index}")
            for index, url in enumerate(self.urls, 1)
        )
        return listed + (() if self._file is None else self._file.urls)

    def urls_file_read(self) -> UrlsFile | None:
        """``urls_file`` as ``load_settings`` read it (its URLs and who else could read
        it), or None."""
        return self._file

    def route(self, kind: str) -> tuple[str, ...] | None:
        """The tags a kind is routed to, or None: it goes to every URL."""
        return dict(self.routes).get(kind)

    def secret_values(self) -> tuple[str, ...]:
        """What the process must never print: every Apprise URL (and its password and
        token-like pieces), and the Alertmanager URL when it holds a user name."""
        values: list[str] = []
        for entry in self.channel_urls():
            values.extend(secret_pieces(entry.url.get_secret_value()))
        if self.alertmanager_url is not None:
            url = self.alertmanager_url.get_secret_value()
            if "@" in urlsplit(url).netloc:
                values.extend(secret_pieces(url))
        return tuple(dict.fromkeys(values))


_LogLevel = Literal["debug", "info", "warning", "error", "critical"]
_LogFormat = Literal["json", "console", "auto"]


def _webhook_path(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if not value.startswith("/") or "?" in value or "#" in value or not value.isprintable():
            raise PydanticCustomError(
                "webhook_path", "must be a path starting with / (no query): /webhooks/wasend")
        if value in ("/livez", "/readyz", "/metrics"):
            raise PydanticCustomError("webhook_path", "must not be one of the probes' paths")
    return value


def _networks(value: Any) -> Any:
    value = _split_list(value)
    if isinstance(value, list | tuple):
        for item in value:
            try:
                ipaddress.ip_network(str(item), strict=False)
            except ValueError:
                raise PydanticCustomError(
                    "network", "{item!r} is not a network (10.0.0.0/8, 2001:db8::/32, "
                    "192.0.2.7)", {"item": item}) from None
        return tuple(str(item) for item in value)
    return value


_REPLICA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _check_replica(value: Any) -> Any:
    if isinstance(value, str) and value and not _REPLICA.fullmatch(value):
        raise PydanticCustomError(
            "replica", "must be 1 to 63 letters, digits, '.', '_' or '-' (a host name)")
    return value


class HaSettings(BaseModel):
    """Several replicas on one PostgreSQL database, one of them leading at a time
    (``supervisor.runtime.leadership``). On by default whenever the state is in
    PostgreSQL; it cannot be with SQLite."""

    model_config = _MODEL_CONFIG

    enabled: bool | None = Field(
        default=None, description="one leader among the replicas; unset: on with state_url"
    )
    lease: _PositiveSeconds = Field(
        default=DEFAULT_LEASE, description="seconds the leader's lease lasts from a renewal"
    )
    renew: _PositiveSeconds = Field(
        default=DEFAULT_RENEW, description="seconds between the leader's renewals"
    )
    replica: Annotated[str, BeforeValidator(_check_replica)] = Field(
        default="", description="this replica's name; empty: the host name"
    )

    @model_validator(mode="after")
    def _check_terms(self) -> HaSettings:
        found = terms_problem(self.terms())
        if found is not None:
            raise PydanticCustomError("ha_terms", "{problem}",
                                      {"field": "renew", "problem": found})
        return self

    def terms(self) -> Terms:
        return Terms(lease=self.lease, renew=self.renew)


class WebhookSettings(BaseModel):
    """The endpoint for the provider's session events (a hint: each one has the session
    read from the API at once). It exists only with ``hmac_key`` (or its file), or with
    ``allow_unsigned`` set on purpose; otherwise its path answers 404. ``hmac_key`` is a
    secret: never printed, in ``secret_values()``; ``hmac_key_file`` is read by
    ``load_settings`` (settings built in code read no file)."""

    model_config = _MODEL_CONFIG

    path: Annotated[str, BeforeValidator(_webhook_path)] = Field(
        default="/webhooks/wasend", description="the path the provider posts to"
    )
    listen: Annotated[str, BeforeValidator(_check_listen)] = Field(
        default="", description="HOST:PORT of its own (else on http_listen)"
    )
    hmac_key: SecretStr | None = Field(
        default=None, description="the HMAC key the provider signs with (a secret)"
    )
    hmac_key_file: Path | None = Field(default=None, description="a file holding hmac_key")
    allow_unsigned: bool = Field(
        default=False, description="accept unsigned events (loopback and allow_from only)"
    )
    allow_from: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_networks)] = Field(
        default=(), description="networks unsigned events are accepted from, besides loopback"
    )
    max_skew: _PositiveSeconds = Field(
        default=300.0, description="seconds an event's timestamp may be off; ids kept as long"
    )
    queue_max: Annotated[int, _Number, Field(ge=1)] = Field(
        default=10000, description="sessions waiting to be read at most (then 503)"
    )
    concurrency: Annotated[int, _Number, Field(ge=1, le=64)] = Field(
        default=8, description="sessions read at once"
    )

    _file_key: SecretStr | None = PrivateAttr(default=None)  # set by load_settings

    @field_validator("hmac_key", mode="before")
    @classmethod
    def _check_key(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value.strip()) < 16:
            raise PydanticCustomError("key_short", "must be at least 16 characters")
        return value

    def key(self) -> SecretStr | None:
        """The HMAC key: ``hmac_key_file``'s when given, else ``hmac_key``."""
        return self._file_key or self.hmac_key

    @property
    def enabled(self) -> bool:
        """Whether the endpoint exists (a key, or unsigned events allowed on purpose)."""
        return self.key() is not None or self.allow_unsigned

    def secret_values(self) -> tuple[str, ...]:
        key = self.key()
        return () if key is None else (key.get_secret_value(),)


class Settings(BaseSettings):
    """The validated configuration. Build it with ``load_settings``; it is immutable.

    ``Settings(...)`` with keyword arguments reads no environment and no file: it validates
    exactly what it is given on top of the defaults, which is what tests of other modules want.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        hide_input_in_errors=True,
        validate_default=True,
    )

    api_key: SecretStr | None = Field(default=None, description="the WASend API key")
    api_key_file: Path | None = Field(default=None, description="a file holding the API key")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="the WASend API's base URL")
    sessions: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="session ids to supervise; empty: all"
    )
    poll_interval: _PositiveSeconds = Field(default=30.0, description="seconds between poll cycles")
    poll_jitter: _NonNegativeSeconds = Field(
        default=0.1, description="up to this many seconds added at random to each poll time"
    )
    request_timeout: _PositiveSeconds = Field(default=15.0, description="seconds per HTTP request")
    backoff: BackoffSettings = Field(default=BackoffSettings())
    max_restarts: Annotated[int, _Number, Field(ge=1)] = Field(
        default=_POLICY.max_restarts,
        description="failed attempts inside restart_window before giving up",
    )
    restart_window: _PositiveSeconds = Field(
        default=_POLICY.restart_window, description="seconds; see max_restarts"
    )
    stable_after: _NonNegativeSeconds = Field(
        default=_POLICY.stable_after, description="seconds healthy before the backoff resets"
    )
    starting_timeout: _PositiveSeconds = Field(
        default=_POLICY.starting_timeout,
        description="seconds in a transitional status before an attempt counts as failed",
    )
    gave_up_retry_interval: _PositiveSeconds = Field(
        default=_POLICY.gave_up_retry_interval,
        description="seconds between tries of a given-up session",
    )
    zombie_after: _NonNegativeSeconds = Field(
        default=_POLICY.zombie_after,
        description="seconds a healthy status may disagree with a disconnected engine "
        "before the session counts as failed (0: never)",
    )
    auth_retry_interval: _PositiveSeconds = Field(
        default=300.0, description="seconds between key re-reads and retries after a 401"
    )
    max_retry_after: _PositiveSeconds = Field(
        default=300.0, description="cap on a server's Retry-After, seconds"
    )
    rate_limit: Annotated[float, _Number, Field(gt=0)] = Field(
        default=5.0, description="requests in any one-second window"
    )
    get_concurrency: Annotated[int, _Number, Field(ge=1, le=64)] = Field(
        default=8, description="parallel per-session GETs"
    )
    shutdown_grace: _NonNegativeSeconds = Field(
        default=10.0, description="seconds in-flight work may take after SIGTERM"
    )
    http_listen: Annotated[str, BeforeValidator(_check_listen)] = Field(
        default="",
        description="host:port of the health and metrics listener (run only); empty: off",
    )
    unready_after: _NonNegativeSeconds = Field(
        default=0.0,
        description="seconds without a successful poll before /readyz fails; 0: 3 x poll_interval",
    )
    metrics_per_session: bool = Field(
        default=False, description="add per-session series to /metrics"
    )
    http_auth_file: Path | None = Field(
        default=None,
        description="a file of name:token lines; set: http_listen serves the status page "
        "to those named in it; unset: no page",
    )
    http_metrics_auth: bool = Field(
        default=False, description="/metrics answers only with a token of http_auth_file"
    )
    state_url: Annotated[SecretStr | None, BeforeValidator(check_state_url)] = Field(
        default=None,
        description="the state in PostgreSQL: postgresql://user@host/db (a secret; "
        "instead of state_path)",
    )
    state_url_file: Path | None = Field(default=None, description="a file holding state_url")
    state_prepared_statements: bool = Field(
        default=True,
        description="with state_url: let psycopg prepare the statements it runs often; "
        "false through a transaction pool that does not track them (PgBouncer before 1.21)",
    )
    state_path: Path | None = Field(
        default=None,
        description="the SQLite state file, or :memory:; load_settings fills in "
        "default_state_path; None (settings built in code) keeps the state in memory",
    )
    history_max_age: _PositiveSeconds = Field(
        default=DEFAULT_HISTORY_MAX_AGE, description="seconds a restart history row is kept"
    )
    history_max_rows: Annotated[int, _Number, Field(ge=1)] = Field(
        default=DEFAULT_HISTORY_MAX_ROWS, description="restart history rows kept at most"
    )
    statuses: StatusSettings = Field(default=StatusSettings())
    alerts: AlertSettings = Field(default=AlertSettings())
    webhooks: WebhookSettings = Field(default=WebhookSettings())
    ha: HaSettings = Field(default=HaSettings())
    log_format: Annotated[_LogFormat, BeforeValidator(_lower)] = Field(
        default="auto", description="json, console, or auto (console on a TTY)"
    )
    log_level: Annotated[_LogLevel, BeforeValidator(_lower)] = Field(
        default="info", description="debug, info, warning, error or critical"
    )

    _file_state_url: SecretStr | None = PrivateAttr(default=None)  # set by load_settings
    _origins: dict[str, Origin] | None = PrivateAttr(default=None)  # None: not loaded
    _api_key_source: ApiKeySource | None = PrivateAttr(default=None)
    _config_file: tuple[Path, Origin] | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments only: os.environ, .env files and secrets_dir are never read
        # behind the caller's back. load_settings hands its own sources in instead.
        return (init_settings,)

    @field_validator("api_key", mode="before")
    @classmethod
    def _clean_api_key(cls, value: Any) -> Any:
        if value is None:
            return None
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            raise PydanticCustomError("string_type", "must be a string")
        reason = key_problem(raw.strip())
        if reason is not None:
            raise PydanticCustomError("api_key", reason)
        return SecretStr(raw.strip())

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return _normalise_base_url(value)

    @field_validator("state_path", mode="before")
    @classmethod
    def _check_state_path(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError("path_empty", "must not be empty")
        return value

    @field_validator("http_auth_file", mode="before")
    @classmethod
    def _check_auth_file(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError("path_empty", "must not be empty")
        return value

    @field_validator("state_url_file", mode="before")
    @classmethod
    def _check_state_url_file(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError("path_empty", "must not be empty")
        return value

    @model_validator(mode="after")
    def _check_state_place(self) -> Settings:
        if self.state_url is not None and self.state_url_file is not None:
            raise PydanticCustomError(
                "one_of", "cannot be given with state_url_file: give one of them",
                {"field": "state_url", "other": "state_url_file"})
        if (self.state_url is not None or self.state_url_file is not None) and (
                self.state_path is not None):
            named = "state_url" if self.state_url is not None else "state_url_file"
            raise PydanticCustomError(
                "one_of", "cannot be given with state_path (the state is in PostgreSQL or"
                " in an SQLite file, not both)", {"field": named, "other": "state_path"})
        return self

    @model_validator(mode="after")
    def _check_ha(self) -> Settings:
        if self.ha.enabled and self.state_url is None and self.state_url_file is None:
            raise PydanticCustomError(
                "needs_other", "needs the state in PostgreSQL (state_url or state_url_file):"
                " replicas share it", {"field": "ha.enabled"})
        return self

    def ha_enabled(self) -> bool:
        """Whether this process takes part in leadership (``ha.enabled``, on by default
        with the state in PostgreSQL)."""
        if self.ha.enabled is not None:
            return self.ha.enabled
        return self.state_url is not None or self.state_url_file is not None

    @model_validator(mode="after")
    def _check_metrics_auth(self) -> Settings:
        if self.http_metrics_auth and self.http_auth_file is None:
            raise PydanticCustomError(
                "needs_other", "needs http_auth_file set (the tokens it checks)",
                {"field": "http_metrics_auth"})
        return self

    @field_validator("sessions", mode="before")
    @classmethod
    def _check_sessions(cls, value: Any) -> tuple[str, ...]:
        names = _names(value, upper=False)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise PydanticCustomError(
                "duplicates", "duplicate session ids: {names}", {"names": ", ".join(duplicates)}
            )
        return names

    def model_post_init(self, context: Any, /) -> None:
        if self.api_key is not None:
            self._api_key_source = ApiKeySource("code", "", self.api_key)

    def state_location(self) -> str:
        """The state file to use, or ``:memory:``. ``load_settings`` always sets
        ``state_path`` (to ``default_state_path`` when no source gives one); settings
        built in code without it keep the state in memory, so that tests and embedders
        never share a file by accident."""
        return MEMORY if self.state_path is None else str(self.state_path)

    def state_dsn(self) -> SecretStr | None:
        """The PostgreSQL DSN the state is kept in (``state_url_file``'s when given, else
        ``state_url``); None: the state is in SQLite (``state_location``)."""
        return self._file_state_url or self.state_url

    def api_key_source(self) -> ApiKeySource | None:
        """Where the key came from (``.describe()``) and how to read it again (``.read()``)."""
        return self._api_key_source

    def secret_values(self) -> tuple[str, ...]:
        """Every secret of the settings but the API key (which the client adds): the alert
        URLs and their pieces, the webhooks' HMAC key. For the process's ``Secrets``."""
        return (self.alerts.secret_values() + self.webhooks.secret_values()
                + self._state_url_secrets())

    def _state_url_secrets(self) -> tuple[str, ...]:
        """The DSN, and its password alone (a traceback or libpq may show either)."""
        dsn = self.state_dsn()
        return () if dsn is None else dsn_secrets(dsn.get_secret_value())

    @property
    def config_file(self) -> Path | None:
        """The TOML file that was read, if any (the daemon reloads it on SIGHUP)."""
        return None if self._config_file is None else self._config_file[0]

    def config_file_origin(self) -> tuple[Path, Origin] | None:
        """The TOML file that was read and who named it (``--config`` or the environment)."""
        return self._config_file

    def source_of(self, key: str, *, long: bool = False) -> str:
        """Where a key's value came from: ``default``, ``env X``, a path, ``command line --x``
        (``long``: as in problem lines, ``from environment variable X``...)."""
        if key not in setting_keys():
            raise KeyError(key)
        if self._origins is not None:  # built by load_settings
            origin = self._origins.get(key, DEFAULT)
        else:
            top = key.partition(".")[0]
            origin = Origin("code") if top in self.model_fields_set else DEFAULT
        return origin.long() if long else origin.short()

    @property
    def unready_threshold(self) -> float:
        """Seconds without a successful poll after which ``/readyz`` answers 503."""
        return self.unready_after or 3 * self.poll_interval

    @property
    def in_flight_grace(self) -> float:
        """Seconds a restart another process recorded as in flight is left to it: its
        request may wait at its rate gate for up to ``max_retry_after``, then take up to
        ``request_timeout``."""
        return self.request_timeout + self.max_retry_after

    def policy(self) -> Policy:
        """The decision core's knobs."""
        return Policy(
            classes=StatusClasses.of(
                healthy=self.statuses.healthy,
                transitional=self.statuses.transitional,
                restartable=self.statuses.restartable,
                needs_person=self.statuses.needs_person,
            ),
            backoff=Backoff(
                initial=self.backoff.initial,
                max=self.backoff.max,
                multiplier=self.backoff.multiplier,
            ),
            max_restarts=self.max_restarts,
            restart_window=self.restart_window,
            stable_after=self.stable_after,
            starting_timeout=self.starting_timeout,
            gave_up_retry_interval=self.gave_up_retry_interval,
            zombie_after=self.zombie_after,
        )


TABLES: dict[str, type[BaseModel]] = {
    "backoff": BackoffSettings,
    "statuses": StatusSettings,
    "alerts": AlertSettings,
    "webhooks": WebhookSettings,
    "ha": HaSettings,
}
"""The tables of keys (``[backoff]`` in TOML, ``backoff.initial`` dotted)."""


def setting_keys() -> tuple[str, ...]:
    """Every key in table order, nested ones dotted: ``poll_interval``, ``backoff.initial``..."""
    keys: list[str] = []
    for name in Settings.model_fields:
        table = TABLES.get(name)
        if table is None:
            keys.append(name)
        else:
            keys.extend(f"{name}.{sub}" for sub in table.model_fields)
    return tuple(keys)
