"""Settings: what the supervisor is configured to do, where each value came from, and the key.

Sources, highest priority first::

    command line   a mapping handed in by the CLI: load_settings(cli={...})
    environment    WASEND_SUPERVISOR_<KEY> (tables nested with "__"), WASEND_API_KEY,
                   WASEND_BASE_URL
    secret files   wasend_api_key in $CREDENTIALS_DIRECTORY or /run/secrets (the key only)
    config file    TOML, from --config PATH or WASEND_SUPERVISOR_CONFIG; none given: skipped
    defaults       the field defaults below

``load_settings`` reads every source itself into a ``_Layer`` (raw values plus the origin of
each), hands the layers to pydantic-settings as custom sources through
``settings_customise_sources`` (which merges them in the order above) and lets pydantic
validate the result. Every problem, whether found while reading or while validating, becomes
one line naming the key and its source, and all of them are raised together as ``ConfigError``.

The built-in sources of pydantic-settings are not used, for reasons checked by experiment on
2.16: ``SecretsSettingsSource`` names files after the env prefix (``wasend_supervisor_api_key``,
not ``wasend_api_key``) and warns about a missing directory; ``EnvSettingsSource`` reads
``os.environ`` and aborts with ``SettingsError`` on a comma-separated list;
``TomlConfigSettingsSource`` silently skips a missing file and lets ``TOMLDecodeError`` escape.

The API key is a ``SecretStr`` from the moment it is read; it never appears in a repr, a
problem message or ``render_settings``. ``ApiKeySource`` remembers where it came from so the
daemon can read it again after a 401 or on SIGHUP. Nothing here runs on import.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from supervisor.domain.api_key import key_problem
from supervisor.domain.policy import (
    DEFAULT_HEALTHY,
    DEFAULT_NEEDS_PERSON,
    DEFAULT_RESTARTABLE,
    DEFAULT_TRANSITIONAL,
    Backoff,
    Policy,
    StatusClasses,
)

__all__ = [
    "API_KEY_ENV",
    "API_KEY_FILE_NAME",
    "BASE_URL_ENV",
    "CONFIG_ENV",
    "CONTAINER_SECRETS_DIR",
    "CREDENTIALS_ENV",
    "DEFAULT_BASE_URL",
    "ENV_PREFIX",
    "MEMORY_STATE",
    "STATE_FILE_NAME",
    "ApiKeySource",
    "BackoffSettings",
    "ConfigError",
    "Settings",
    "StatusSettings",
    "cli_flag",
    "default_state_path",
    "env_var_names",
    "listen_address",
    "load_settings",
    "render_settings",
    "setting_keys",
]

ENV_PREFIX = "WASEND_SUPERVISOR_"
API_KEY_ENV = "WASEND_API_KEY"
BASE_URL_ENV = "WASEND_BASE_URL"
CONFIG_ENV = "WASEND_SUPERVISOR_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
API_KEY_FILE_NAME = "wasend_api_key"
CONTAINER_SECRETS_DIR = Path("/run/secrets")
DEFAULT_BASE_URL = "https://api.wasend.dev"
DEFAULT_HTTP_PORT = 9187  # the conventional port of the health and metrics listener
MEMORY_STATE = ":memory:"  # a state_path that keeps the state in memory (no disk)
STATE_FILE_NAME = "state.db"

_MASK = "********"
_EXCERPT_MAX = 24  # characters of a rejected input shown in a problem line
_MIN_SECRET_LEN = 4  # shorter strings are not matched when redacting known key values


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` holds one line per problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- where a value came from ---------------------------------------------------------------


class _Origin(msgspec.Struct, frozen=True):
    kind: Literal["default", "code", "cli", "env", "config", "credential", "secret", "file"]
    where: str = ""

    def long(self) -> str:
        """For problem lines: ``from environment variable X``, or ``default``."""
        return {
            "default": f"default, {self.where}" if self.where else "default",
            "code": "set in code",
            "cli": f"from command line {self.where}",
            "env": f"from environment variable {self.where}",
            "config": f"from {self.where}",
            "credential": f"from credential {self.where}",
            "secret": f"from secret file {self.where}",
            "file": f"from file {self.where}",
        }[self.kind]

    def short(self) -> str:
        """For ``render_settings`` comments: ``env X``, ``default``, a path..."""
        return {
            "default": "default",
            "code": "set in code",
            "cli": f"command line {self.where}",
            "env": f"env {self.where}",
            "config": self.where,
            "credential": f"credential {self.where}",
            "secret": f"secret file {self.where}",
            "file": f"file {self.where}",
        }[self.kind]


_DEFAULT = _Origin("default")


# --- the API key -------------------------------------------------------------------------


KEY_FILE_MAX_BYTES = 64 * 1024
"""A key file longer than this is not a key file: it is refused, not read on."""

_FILE_TYPES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _irregular(mode: int) -> OSError | None:
    """The error for a file that is not a regular file, or None for a regular one."""
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _FILE_TYPES if test(mode)), "of another type")
    return OSError(errno.EINVAL, f"not a regular file ({what})")


CONFIG_FILE_MAX_BYTES = 1024 * 1024
"""A configuration file longer than this is refused, not read on."""


def read_regular_file(path: Path, max_bytes: int, what: str) -> tuple[bytes, os.stat_result]:
    """The content of a regular file of at most ``max_bytes``, and its status.

    Raises OSError, and never blocks: anything but a regular file (a FIFO, a device, a
    directory, a socket) is refused before it is opened; it is opened with O_NONBLOCK, so
    that a FIFO put in its place meanwhile cannot block the open either (and is refused
    by the fstat that follows); at most ``max_bytes`` are read. Key and configuration
    files are re-read on the daemon's event loop (after a 401, on SIGHUP), so this is
    what keeps a misplaced FIFO from freezing the daemon.
    """
    refused = _irregular(os.stat(path).st_mode)  # follows links, as systemd and k8s use
    if refused is not None:
        raise refused
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        refused = _irregular(info.st_mode)
        if refused is not None:
            raise refused
        data = bytearray()
        while len(data) <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"over {max_bytes} bytes, so not {what}")
    return bytes(data), info


def _read_key(path: Path) -> tuple[SecretStr, os.stat_result]:
    """The stripped content of a key file, and its status (for its permissions); raises
    OSError or UnicodeDecodeError, never blocks (``read_regular_file``)."""
    data, info = read_regular_file(path, KEY_FILE_MAX_BYTES, "a key file")
    return SecretStr(data.decode("utf-8").strip()), info


def _exposure(info: os.stat_result) -> str | None:
    """Who else may read a key file with this status: ``other users``, ``group NAME``
    (a group the supervisor is not in), or None. A group the supervisor's own process is
    in (its primary group, or a supplementary one such as a Kubernetes ``fsGroup``) is
    trusted: that is how a key is shared with a service account."""
    if info.st_mode & stat.S_IROTH:
        return "other users"
    if info.st_mode & stat.S_IRGRP and info.st_gid not in {os.getgid(), *os.getgroups()}:
        import grp  # noqa: PLC0415  (only this rare message needs it)

        try:
            return f"group {grp.getgrgid(info.st_gid).gr_name}"
        except KeyError:
            return f"group {info.st_gid}"
    return None


def _read_failure(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"  # str(exc) would quote a byte of the file
    return exc.strerror or type(exc).__name__


_KeyKind = Literal["env", "credential", "secret", "file", "code"]


class ApiKeySource:
    """Where the API key came from; ``read()`` fetches it again from that same place.

    Files (an ``api_key_file``, a systemd credential, a container secret) are re-read on every
    call, so a rotated key is picked up. A key from the environment cannot change inside a
    running process: ``read()`` returns the value seen at load.
    """

    __slots__ = ("_exposure", "_kind", "_location", "_reported", "_value")

    def __init__(self, kind: _KeyKind, location: str, value: SecretStr | None = None) -> None:
        if kind in ("env", "code") and value is None:
            raise ValueError(f"an ApiKeySource of kind {kind!r} needs its value")
        self._kind: _KeyKind = kind
        self._location = location
        self._value = value if kind in ("env", "code") else None
        self._exposure: tuple[int, str] | None = None  # (mode, who) at the last read
        self._reported: tuple[int, str] | None = None

    @property
    def kind(self) -> _KeyKind:
        """``env``, ``credential``, ``secret``, ``file`` (api_key_file) or ``code``."""
        return self._kind

    @property
    def path(self) -> Path | None:
        """The file the key is read from, or None for a key from the environment or code."""
        return None if self._kind in ("env", "code") else Path(self._location)

    def describe(self) -> str:
        """E.g. ``environment variable WASEND_API_KEY`` or ``file /etc/wasend/key``."""
        return {
            "env": f"environment variable {self._location}",
            "credential": f"credential {self._location}",
            "secret": f"secret file {self._location}",
            "file": f"file {self._location}",
            "code": "value given in code",
        }[self._kind]

    def _origin(self) -> _Origin:
        return _Origin(self._kind, self._location)

    def _fetch(self) -> SecretStr:
        """Read the key file (raises OSError or UnicodeDecodeError), noting who else may
        read it. A systemd credential is not checked: systemd keeps it in a directory
        only the service can open, whatever the file's own mode (0400 or 0440)."""
        key, info = _read_key(Path(self._location))
        who = None if self._kind == "credential" else _exposure(info)
        self._exposure = None if who is None else (stat.S_IMODE(info.st_mode), who)
        return key

    def exposure(self) -> tuple[int, str] | None:
        """``(mode, who)`` when the key file, at its last read, was readable by someone
        other than the supervisor (``who``: ``other users`` or ``group NAME``)."""
        return self._exposure

    def unreported_exposure(self) -> tuple[int, str] | None:
        """``exposure()``, once: None again until it changes (so that re-reading the key
        every ``auth_retry_interval`` does not repeat the warning)."""
        if self._exposure == self._reported:
            return None
        self._reported = self._exposure
        return self._exposure

    def read(self) -> SecretStr:
        """The key, read again. Raises ConfigError (one problem) if it is gone or unusable."""
        if self._value is not None:
            return self._value
        path = Path(self._location)
        try:
            key = self._fetch()
        except (OSError, UnicodeDecodeError) as exc:
            if self._kind == "file":
                problem = f"api_key_file: cannot read {path}: {_read_failure(exc)}"
            else:
                problem = f"api_key: cannot read {self.describe()}: {_read_failure(exc)}"
            raise ConfigError([problem]) from None
        reason = key_problem(key.get_secret_value())
        if reason is not None:
            raise ConfigError([f"api_key: {reason} (from {self.describe()})"])
        return key

    def __repr__(self) -> str:
        return f"ApiKeySource({self.describe()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiKeySource):
            return NotImplemented
        return (self._kind, self._location, self._value) == (
            other._kind,
            other._location,
            other._value,
        )

    def __hash__(self) -> int:
        return hash((self._kind, self._location))


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


_StatusList = Annotated[tuple[str, ...], BeforeValidator(_statuses)]


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _normalise_base_url(value: str) -> str:
    text = value.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise PydanticCustomError("url_scheme", "must be an https:// (or loopback http://) URL")
    if "@" in parts.netloc:
        raise PydanticCustomError("url_userinfo", "must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise PydanticCustomError("url_host", "must name a host")
    try:
        _ = parts.port
    except ValueError:
        raise PydanticCustomError("url_port", "has an invalid port") from None
    if parts.query or parts.fragment:
        raise PydanticCustomError("url_query", "must not have a query or fragment")
    if scheme == "http" and not _is_loopback(host):
        raise PydanticCustomError(
            "url_insecure",
            "plain http:// is only allowed for a loopback host "
            "(127.0.0.0/8, ::1, localhost); use https://",
        )
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


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

    initial: _NonNegativeSeconds = Field(default=5.0, description="cap of the first delay, seconds")
    max: _NonNegativeSeconds = Field(default=300.0, description="cap of every delay, seconds")
    multiplier: Annotated[float, _Number, Field(ge=1)] = Field(
        default=2.0, description="growth of the cap per attempt"
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


_STATUS_CLASSES = ("healthy", "transitional", "restartable", "needs_person")


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
        first_class: dict[str, str] = {}
        overlaps: list[tuple[str, str, str]] = []
        for klass in _STATUS_CLASSES:
            for status in getattr(self, klass):
                if status in first_class:
                    overlaps.append((status, first_class[status], klass))
                else:
                    first_class[status] = klass
        if overlaps:
            raise PydanticCustomError(
                "status_overlap",
                "{summary}",
                {
                    "summary": "; ".join(
                        f"{s} is in both statuses.{a} and statuses.{b}" for s, a, b in overlaps
                    ),
                    "overlaps": overlaps,
                },
            )
        return self


_LogLevel = Literal["debug", "info", "warning", "error", "critical"]
_LogFormat = Literal["json", "console", "auto"]


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
    sessions: tuple[str, ...] = Field(
        default=(), description="session ids to supervise; empty: all"
    )
    poll_interval: _PositiveSeconds = Field(default=30.0, description="seconds between poll cycles")
    poll_jitter: _NonNegativeSeconds = Field(
        default=0.1, description="up to this many seconds added at random to each poll time"
    )
    request_timeout: _PositiveSeconds = Field(default=15.0, description="seconds per HTTP request")
    backoff: BackoffSettings = Field(default=BackoffSettings())
    max_restarts: Annotated[int, _Number, Field(ge=1)] = Field(
        default=5, description="failed attempts inside restart_window before giving up"
    )
    restart_window: _PositiveSeconds = Field(
        default=3600.0, description="seconds; see max_restarts"
    )
    stable_after: _NonNegativeSeconds = Field(
        default=300.0, description="seconds healthy before the backoff resets"
    )
    starting_timeout: _PositiveSeconds = Field(
        default=120.0,
        description="seconds in a transitional status before an attempt counts as failed",
    )
    gave_up_retry_interval: _PositiveSeconds = Field(
        default=3600.0, description="seconds between tries of a given-up session"
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
    state_path: Path | None = Field(
        default=None,
        description="the SQLite state file, or :memory:; load_settings fills in "
        "default_state_path; None (settings built in code) keeps the state in memory",
    )
    history_max_age: _PositiveSeconds = Field(
        default=30 * 86400.0, description="seconds a restart history row is kept"
    )
    history_max_rows: Annotated[int, _Number, Field(ge=1)] = Field(
        default=100_000, description="restart history rows kept at most"
    )
    statuses: StatusSettings = Field(default=StatusSettings())
    log_format: Annotated[_LogFormat, BeforeValidator(_lower)] = Field(
        default="auto", description="json, console, or auto (console on a TTY)"
    )
    log_level: Annotated[_LogLevel, BeforeValidator(_lower)] = Field(
        default="info", description="debug, info, warning, error or critical"
    )

    _origins: dict[str, _Origin] | None = PrivateAttr(default=None)  # None: not loaded
    _api_key_source: ApiKeySource | None = PrivateAttr(default=None)
    _config_file: tuple[Path, _Origin] | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments first, then the layers load_settings prepared (none otherwise):
        # os.environ, .env files and secrets_dir are never read behind the caller's back.
        layers = _LAYERS.get()
        return (init_settings, *(_LayerSource(settings_cls, layer) for layer in layers))

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
        return MEMORY_STATE if self.state_path is None else str(self.state_path)

    def api_key_source(self) -> ApiKeySource | None:
        """Where the key came from (``.describe()``) and how to read it again (``.read()``)."""
        return self._api_key_source

    @property
    def config_file(self) -> Path | None:
        """The TOML file that was read, if any (the daemon reloads it on SIGHUP)."""
        return None if self._config_file is None else self._config_file[0]

    def source_of(self, key: str, *, long: bool = False) -> str:
        """Where a key's value came from: ``default``, ``env X``, a path, ``command line --x``
        (``long``: as in problem lines, ``from environment variable X``...)."""
        if key not in setting_keys():
            raise KeyError(key)
        if self._origins is not None:  # built by load_settings
            origin = self._origins.get(key, _DEFAULT)
        else:
            top = key.partition(".")[0]
            origin = _Origin("code") if top in self.model_fields_set else _DEFAULT
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
        )


_TABLES: dict[str, type[BaseModel]] = {"backoff": BackoffSettings, "statuses": StatusSettings}


def setting_keys() -> tuple[str, ...]:
    """Every key in table order, nested ones dotted: ``poll_interval``, ``backoff.initial``..."""
    keys: list[str] = []
    for name in Settings.model_fields:
        table = _TABLES.get(name)
        if table is None:
            keys.append(name)
        else:
            keys.extend(f"{name}.{sub}" for sub in table.model_fields)
    return tuple(keys)


def env_var_names(key: str) -> tuple[str, ...]:
    """The environment variables a key is read from, the one that wins first."""
    if key == "api_key":
        return (API_KEY_ENV,)
    name = ENV_PREFIX + key.upper().replace(".", "__")
    if key == "base_url":
        return (name, BASE_URL_ENV)
    return (name,)


def cli_flag(key: str) -> str:
    """The flag named in problem lines for a key given on the command line: ``--backoff-max``."""
    return "--" + key.replace(".", "-").replace("_", "-")


# --- layers: one per source, handed to pydantic-settings -----------------------------------


class _Layer(msgspec.Struct):
    """Raw values of one source by dotted key, and where each came from."""

    name: str
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    origins: dict[str, _Origin] = msgspec.field(default_factory=dict)

    def put(self, key: str, value: Any, origin: _Origin) -> None:
        self.values[key] = value
        self.origins[key] = origin

    def nested(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            head, _, tail = key.partition(".")
            if tail:
                out.setdefault(head, {})[tail] = value
            else:
                out[head] = value
        return out


class _LayerSource(PydanticBaseSettingsSource):
    """A pydantic-settings source serving one prepared layer."""

    def __init__(self, settings_cls: type[BaseSettings], layer: _Layer) -> None:
        super().__init__(settings_cls)
        self._data = layer.nested()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


_LAYERS: ContextVar[tuple[_Layer, ...]] = ContextVar("wasend_settings_layers", default=())


class _Load(msgspec.Struct):
    """The state of one load_settings call."""

    env: Mapping[str, str]
    problems: list[str] = msgspec.field(default_factory=list)
    # Every key value seen, kept secret even in a traceback's locals, to redact anywhere.
    known_keys: list[SecretStr] = msgspec.field(default_factory=list)
    key_reported: bool = False  # a problem about the key is already in ``problems``

    def remember(self, value: Any) -> None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str) and len(value.strip()) >= _MIN_SECRET_LEN:
            self.known_keys.append(SecretStr(value.strip()))

    def key_problem(self, problem: str) -> None:
        self.problems.append(problem)
        self.key_reported = True


def _unknown(key: str) -> str:
    """``unknown key``, with a guess at the key meant when one is close."""
    table, _, name = key.rpartition(".")
    if table in _TABLES:
        candidates = [f"{table}.{sub}" for sub in _TABLES[table].model_fields]
    else:
        candidates = [*setting_keys(), *_TABLES]
    names = {c.rpartition(".")[2] if table else c: c for c in candidates}
    # Imported here: only this message needs it, and a check that starts well never does.
    import difflib  # noqa: PLC0415

    close = difflib.get_close_matches(name if table else key, list(names), n=1, cutoff=0.75)
    return f"unknown key, did you mean {names[close[0]]}?" if close else "unknown key"


def default_state_path(env: Mapping[str, str]) -> tuple[Path, str]:
    """Where the state file lives when ``state_path`` is not set, and why there:
    ``$STATE_DIRECTORY/state.db`` (systemd's ``StateDirectory=``; the first of several),
    else ``$XDG_STATE_HOME/wasend-supervisor/state.db`` (an absolute one only, as the XDG
    specification says), else ``~/.local/state/wasend-supervisor/state.db``."""
    first = env.get("STATE_DIRECTORY", "").split(":")[0].strip()
    if first:
        return Path(first) / STATE_FILE_NAME, "$STATE_DIRECTORY"
    xdg = env.get("XDG_STATE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "wasend-supervisor" / STATE_FILE_NAME, "$XDG_STATE_HOME"
    home = env.get("HOME", "").strip()
    base = Path(home) if home else Path.home()
    return base / ".local" / "state" / "wasend-supervisor" / STATE_FILE_NAME, "~/.local/state"


_PATH_KEYS = frozenset({"api_key_file", "state_path"})


def _key_file_path(value: Any, base: Path | None) -> Any:
    if not isinstance(value, str | Path) or str(value).strip() in ("", MEMORY_STATE):
        return value  # pydantic (or _resolve_key) reports it; :memory: is no path
    path = Path(value).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _fill(
    layer: _Layer,
    data: Mapping[str, Any],
    origin_of: Callable[[str], _Origin],
    load: _Load,
    *,
    base: Path | None = None,
) -> None:
    """Put a TOML document or a CLI mapping (dotted keys or tables) into a layer."""

    def put(key: str, value: Any) -> None:
        origin = origin_of(key)
        if value is None:  # the CLI passes None for a flag that was not given
            return
        if key == "api_key":
            load.remember(value)
            where = "on the command line" if origin.kind == "cli" else "in a config file"
            load.key_problem(
                f"api_key: cannot be given {where}; use {API_KEY_ENV}, a credential file "
                f"named {API_KEY_FILE_NAME}, or api_key_file ({origin.long()})"
            )
        elif key not in setting_keys():
            load.problems.append(f"{key}: {_unknown(key)} ({origin.long()})")
        elif key in _PATH_KEYS:
            layer.put(key, _key_file_path(value, base), origin)
        else:
            layer.put(key, value, origin)

    for raw_key, value in data.items():
        key = str(raw_key)
        table = _TABLES.get(key)
        if table is None:
            put(key, value)
        elif isinstance(value, Mapping):
            for sub, sub_value in value.items():
                put(f"{key}.{sub}", sub_value)
        elif value is not None:
            subs = ", ".join(table.model_fields)
            load.problems.append(f"{key}: must be a table of {subs} ({origin_of(key).long()})")


def _env_layer(load: _Load) -> _Layer:
    layer = _Layer("environment")
    for key in setting_keys():
        if key == "api_key":
            continue  # see _resolve_key
        for name in env_var_names(key):
            if name in load.env:
                value = load.env[name]
                if key in _PATH_KEYS:
                    value = _key_file_path(value, None)
                layer.put(key, value, _Origin("env", name))
                break
    return layer


_TOML_POSITION = re.compile(
    r"^(?P<msg>.*?) \((?P<where>at line \d+, column \d+|at end of document)\)$"
)


def _config_layer(path: Path, origin: _Origin, load: _Load) -> _Layer | None:
    """The file's values, or None (and a problem) when it cannot be read or parsed."""
    suffix = f" ({origin.long()})" if origin.kind == "env" else ""
    try:
        text = read_regular_file(path, CONFIG_FILE_MAX_BYTES, "a configuration file")[0].decode(
            "utf-8")
    except FileNotFoundError:
        load.problems.append(f"config file {path}: not found{suffix}")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        load.problems.append(f"config file {path}: cannot read: {_read_failure(exc)}{suffix}")
        return None
    # Imported here: a check configured by its environment alone never loads it.
    import tomllib  # noqa: PLC0415

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.match(str(exc))
        detail = (
            f"invalid TOML {found['where']}: {found['msg']}" if found else f"invalid TOML: {exc}"
        )
        load.problems.append(f"config file {path}: {detail}")
        return None
    layer = _Layer("config file")
    source = _Origin("config", str(path))
    _fill(layer, document, lambda _key: source, load, base=path.parent)
    return layer


def _key_from_file(layer: _Layer, load: _Load) -> ApiKeySource | None:
    path = layer.values["api_key_file"]
    origin = layer.origins["api_key_file"]
    if not isinstance(path, Path):
        load.key_reported = True  # pydantic reports the bad api_key_file value
        if path == "":
            load.problems.append(f"api_key_file: must not be empty ({origin.long()})")
        return None
    source = ApiKeySource("file", str(path))
    try:
        key = source._fetch()
    except (OSError, UnicodeDecodeError) as exc:
        load.key_problem(
            f"api_key_file: cannot read {path}: {_read_failure(exc)} ({origin.long()})"
        )
        return None
    load.remember(key)
    layer.put("api_key", key, source._origin())
    return source


def _secret_dirs(env: Mapping[str, str], given: Sequence[Path] | None) -> list[Path]:
    if given is not None:
        return list(given)
    dirs = [Path(env[CREDENTIALS_ENV])] if env.get(CREDENTIALS_ENV) else []
    return [*dirs, CONTAINER_SECRETS_DIR]


def _resolve_key(
    cli: _Layer,
    environment: _Layer,
    secrets: _Layer,
    config: _Layer,
    secrets_dirs: Sequence[Path],
    load: _Load,
) -> ApiKeySource | None:
    """Find the key in the highest-priority source that offers one (a key or a key file)."""
    for name in (API_KEY_ENV, ENV_PREFIX + "API_KEY"):
        load.remember(load.env.get(name))
    misplaced = ENV_PREFIX + "API_KEY"
    if misplaced in load.env:
        load.key_problem(
            f"api_key: {misplaced} is not read, the key's variable is {API_KEY_ENV} "
            f"(from environment variable {misplaced})"
        )

    if "api_key_file" in cli.values:
        return _key_from_file(cli, load)

    direct = load.env.get(API_KEY_ENV)
    if direct is not None and "api_key_file" in environment.values:
        load.key_problem(
            f"api_key: both {API_KEY_ENV} and {ENV_PREFIX}API_KEY_FILE are set; set only one "
            "(from environment)"
        )
        return None
    if direct is not None:
        source = ApiKeySource("env", API_KEY_ENV, SecretStr(direct.strip()))
        environment.put("api_key", SecretStr(direct), source._origin())
        return source
    if "api_key_file" in environment.values:
        return _key_from_file(environment, load)

    credentials = load.env.get(CREDENTIALS_ENV)
    for directory in secrets_dirs:
        path = directory / API_KEY_FILE_NAME
        kind: _KeyKind = (
            "credential" if credentials and directory == Path(credentials) else "secret"
        )
        source = ApiKeySource(kind, str(path))
        try:
            if not path.exists():
                continue
            key = source._fetch()
        except (OSError, UnicodeDecodeError) as exc:
            load.key_problem(f"api_key: cannot read {source.describe()}: {_read_failure(exc)}")
            return None
        load.remember(key)
        secrets.put("api_key", key, source._origin())
        return source

    if "api_key_file" in config.values:
        return _key_from_file(config, load)
    return None


# --- turning pydantic's errors into problem lines --------------------------------------------

_MESSAGES: dict[str, str] = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "path_type": "must be a path",
    "literal_error": "must be one of {expected}",
    "extra_forbidden": "unknown key",
    "model_type": "must be a table",
    "dict_type": "must be a table",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
}


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _message(error: Mapping[str, Any]) -> str:
    template = _MESSAGES.get(error["type"])
    if template is None:
        return str(error["msg"])  # our own PydanticCustomError text, or pydantic's wording
    ctx = {k: _number(v) for k, v in (error.get("ctx") or {}).items()}
    try:
        return template.format(**ctx)
    except KeyError:
        return str(error["msg"])


# A bare run of 16 or more letters, digits, "_" and "-", with letters and digits both:
# what an API key or a token looks like. Such a value is never echoed, even where it was
# not given as a key (``config --base-url "$KEY"``, a key pasted into the wrong flag).
_TOKEN_LIKE = re.compile(r"(?=[^0-9]*[0-9])(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9_-]{16,}")


def _excerpt(value: Any, known_keys: Sequence[SecretStr]) -> str:
    """A rejected value as a problem line shows it: at most ``_EXCERPT_MAX`` characters,
    and never a secret: a known key, or anything that looks like one, is not shown."""
    if isinstance(value, SecretStr):
        return _MASK
    text = value if isinstance(value, str) else repr(value)
    if any(key.get_secret_value() in text for key in known_keys):
        return _MASK
    if isinstance(value, str) and _TOKEN_LIKE.fullmatch(text.strip()):
        return f"a value of {len(text)} characters, not shown"
    if isinstance(value, str) and (
        not text or not text.isprintable() or any(ch in text for ch in " ,;()'\"")
    ):
        text = repr(text)  # quoted where bare text would blur into the message
    if len(text) > _EXCERPT_MAX:
        text = text[: _EXCERPT_MAX - 3] + "..."
    return text


def _url_excerpt(value: str, known_keys: Sequence[SecretStr]) -> str:
    """A rejected ``base_url`` as a problem line shows it: its scheme and host (and port)
    only, when it has them, and otherwise not at all: a path, a query or a user name
    can hold anything, and a value that is no URL may be a key given in the wrong place
    (with no key configured, there is none to compare it to)."""
    text = value.strip()
    parts = urlsplit(text)
    where = parts.netloc.rpartition("@")[2]  # never a user name or password
    if "://" not in text or not parts.scheme or not where or not where.isprintable():
        return f"a value that is not a URL ({len(text)} characters)"
    shown = f"{parts.scheme}://{where}"
    if any(key.get_secret_value() in shown for key in known_keys):
        return _MASK
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _origin_of(origins: Mapping[str, _Origin], key: str) -> _Origin:
    return origins.get(key, _DEFAULT)


def _problems(
    exc: ValidationError, origins: Mapping[str, _Origin], known_keys: Sequence[SecretStr]
) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        names = [part for part in error["loc"] if isinstance(part, str)]
        if error["type"] == "status_overlap":
            for status, first, second in ctx["overlaps"]:
                a, b = f"statuses.{first}", f"statuses.{second}"
                lines.append(
                    f"statuses: {status} is in both {a} ({_origin_of(origins, a).long()}) "
                    f"and {b} ({_origin_of(origins, b).long()})"
                )
            continue
        if "field" in ctx:
            names.append(str(ctx["field"]))
        key = ".".join(names) or "settings"
        origin = _origin_of(origins, key)
        detail: list[str] = []
        given = ctx["value"] if "value" in ctx else error.get("input")
        if key == "base_url" and isinstance(given, str):
            detail.append(f"got {_url_excerpt(given, known_keys)}")
        elif key != "api_key" and not isinstance(given, Mapping) and error["type"] != "missing":
            detail.append(f"got {_excerpt(given, known_keys)}")
        where = origin.long()
        if "other" in ctx:
            other = str(ctx["other"])
            other_origin = _origin_of(origins, other)
            where += f"; {other} " + (
                "is the default" if other_origin.kind == "default" else other_origin.long()
            )
        detail.append(where)
        lines.append(f"{key}: {_message(error)} ({', '.join(detail)})")
    return lines


# --- loading -------------------------------------------------------------------------------


def load_settings(
    *,
    cli: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    require_api_key: bool = True,
    secrets_dirs: Sequence[Path] | None = None,
) -> Settings:
    """Read every source, validate, and return the settings, or raise ConfigError.

    ``cli``: overrides from the command line, by key: flat names for top-level keys
    (``"poll_interval"``), dotted names for nested ones (``"backoff.initial"``); a value of
    None means "not given". ``config_path``: the ``--config`` file (else
    ``WASEND_SUPERVISOR_CONFIG``; else no file). ``env``: the environment (default
    ``os.environ``). ``secrets_dirs``: where to look for a ``wasend_api_key`` file (default
    ``$CREDENTIALS_DIRECTORY`` then ``/run/secrets``). ``require_api_key``: whether a missing
    key is a problem.
    """
    load = _Load(env=os.environ if env is None else env)
    cli_layer = _Layer("command line")
    _fill(cli_layer, cli or {}, lambda key: _Origin("cli", cli_flag(key)), load)
    env_layer = _env_layer(load)
    secrets_layer = _Layer("secret files")

    config_file: tuple[Path, _Origin] | None = None
    if config_path is not None:
        config_file = (Path(config_path).expanduser(), _Origin("cli", "--config"))
    elif load.env.get(CONFIG_ENV):
        config_file = (Path(load.env[CONFIG_ENV]).expanduser(), _Origin("env", CONFIG_ENV))
    read = None if config_file is None else _config_layer(*config_file, load)
    config_failed = config_file is not None and read is None
    config_layer = read or _Layer("config file")

    key_source = _resolve_key(
        cli_layer,
        env_layer,
        secrets_layer,
        config_layer,
        _secret_dirs(load.env, secrets_dirs),
        load,
    )
    if key_source is None and require_api_key and not load.key_reported and not config_failed:
        where = " or ".join(str(d) for d in _secret_dirs(load.env, secrets_dirs))
        load.problems.append(
            f"api_key: no API key found; set {API_KEY_ENV}, set api_key_file, "
            f"or provide a file named {API_KEY_FILE_NAME} in {where} (default)"
        )

    defaults_layer = _Layer("defaults")
    if not any("state_path" in layer.values for layer in (cli_layer, env_layer, config_layer)):
        try:
            path, why = default_state_path(load.env)
        except RuntimeError:  # no HOME and no user database entry
            load.problems.append(
                "state_path: no default location (none of STATE_DIRECTORY, XDG_STATE_HOME "
                "and HOME is set); set state_path (default)"
            )
        else:
            defaults_layer.put("state_path", path, _Origin("default", why))
    # highest priority first
    layers = (cli_layer, env_layer, secrets_layer, config_layer, defaults_layer)
    origins: dict[str, _Origin] = {}
    for layer in reversed(layers):
        origins.update(layer.origins)

    settings: Settings | None = None
    token = _LAYERS.set(layers)
    try:
        settings = Settings()
    except ValidationError as exc:
        load.problems.extend(_problems(exc, origins, load.known_keys))
    finally:
        _LAYERS.reset(token)

    if load.problems or settings is None:
        raise ConfigError(load.problems)
    settings._origins = origins
    settings._api_key_source = key_source
    settings._config_file = config_file
    return settings


# --- showing -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


def render_settings(settings: Settings) -> str:
    """The effective configuration as TOML, each value's source as a trailing comment.

    The API key is shown as ``"********"``, never its value.
    """
    head = ["# wasend-supervisor: effective configuration (source of each value at its right)"]
    if settings._config_file is None:
        head.append("# config file: none")
    else:
        path, origin = settings._config_file
        head.append(f"# config file: {path} ({origin.long()})")

    sections: dict[str, list[tuple[str, str]]] = {"": []}
    for key in setting_keys():
        table, _, name = key.rpartition(".")
        value: Any = settings
        for part in key.split("."):
            value = getattr(value, part)
        if key == "api_key" and value is not None:
            source = settings.api_key_source()
            comment = settings.source_of(key) if source is None else source._origin().short()
            line = (f'{name} = "{_MASK}"', comment)
        elif value is None:
            line = (f"# {name} = (not set)", settings.source_of(key))
        else:
            line = (f"{name} = {_toml_value(value)}", settings.source_of(key))
        sections.setdefault(table, []).append(line)

    out = [*head]
    for table, lines in sections.items():
        out.append("")
        if table:
            out.append(f"[{table}]")
        width = max(len(text) for text, _ in lines)
        out.extend(f"{text.ljust(width)}  # {comment}" for text, comment in lines)
    return "\n".join(out) + "\n"
