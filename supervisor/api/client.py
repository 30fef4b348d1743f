"""The HTTP client for the WASend session API.

``WasendClient`` knows HTTP and the API's shapes and nothing of backoff or supervision
state. Every request:

* first awaits the rate gate (``RateGate.acquire``), then tells it how the call went
  (``rate_limited`` on a 429 with the parsed ``Retry-After``, ``succeeded`` on any other
  answer; a transport failure is no answer and tells it nothing);
* carries ``Authorization: Bearer <key>``, ``Accept: application/json``,
  ``Accept-Encoding: gzip, deflate`` and ``User-Agent: wasend-supervisor/<version>``
  (followed by ``(replica NAME)`` among replicas); redirects are never followed, so
  the key never leaves for another host;
* has ``request_timeout`` seconds from the moment it leaves the gate to its last byte,
  however slowly the answer drips in (``asyncio.timeout`` around the whole call);
* reads at most ``max_body_bytes`` of the decoded body, streaming, decoding gzip and
  deflate itself in bounded steps, and stops past that;
* goes through a proxy only for an https:// base URL (``HTTPS_PROXY``, ``ALL_PROXY``,
  ``NO_PROXY``); a plain http:// one is always asked directly (``_proxy_mounts``).

Two functions translate the outside world into ``supervisor.api.errors``:
``map_response`` (HTTP status codes) and ``map_transport_error`` (httpx exceptions and
the call's own deadline; the message names the URL tried, without credentials).
Bodies that cannot be read become ``UnexpectedResponse`` with a short, single-line
``excerpt``. Every message and excerpt is cleaned by the process's ``Secrets``
(``supervisor.domain.secrets``), handed to the client, which adds its key (and every key
set later) to them. No message, excerpt, log event or traceback local of this module
holds the API key.

What an answer means:

* ``list_sessions``: ``{"sessions": [...]}``, a bare ``[...]`` or ``{"data": [...]}``;
  each item nested (``{"session": {...}, "downstream": {"status": ...}}``) or flat
  (``{"uniqueSessionId", "status", ...}``). An unreadable item or a duplicate id is not
  fatal: it is described in ``SessionList.problems`` and the rest is used.
* ``get_session``, ``restart``, ``stop``: a Session object (flat or nested). ``status``
  is required. An empty 2xx body to ``restart`` or ``stop`` means "accepted, status
  unknown" and gives ``SessionInfo(session_id, None, "")``: an empty ``status`` is
  never a real status.
* ``qr``: ``{"data": "<QR payload>"}``; a missing, empty or non-string ``data`` is an
  ``UnexpectedResponse`` without an excerpt (the body may hold a payload in a shape not
  read). The SDK's path ``/sessions/{id}/auth/qr`` is asked first, the provider page's
  ``/sessions/{id}/qr`` on a 404; the first that answers (a 2xx, or 409/422: the path
  knows the session) is the only one asked from then on. Every payload joins
  ``Secrets`` (the last ``QR_PAYLOADS_KEPT`` of each session), so no log line shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import re
import ssl
import zlib
from collections import deque
from collections.abc import AsyncGenerator, Callable
from datetime import UTC
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Self, TypeVar, cast
from urllib.parse import quote

import httpx
import msgspec
import structlog

from supervisor import __version__
from supervisor.api.errors import (
    ApiError,
    ApiTimeout,
    ApiUnreachable,
    AuthFailed,
    Conflict,
    RateLimited,
    ServerError,
    SessionGone,
    UnexpectedResponse,
)
from supervisor.clock import Clock, SystemClock
from supervisor.domain import events as ev
from supervisor.domain.api_key import key_problem
from supervisor.domain.models import QrCode, SessionInfo, SessionList
from supervisor.domain.secrets import EXCERPT_LIMIT, EXCERPT_WINDOW, Secrets

if TYPE_CHECKING:
    from pydantic import SecretStr

    from supervisor.api.ratelimit import RateGate

__all__ = [
    "EXCERPT_LIMIT",
    "MAX_RETRY_AFTER",
    "QR_PAYLOADS_KEPT",
    "Observer",
    "WasendClient",
    "map_response",
    "map_transport_error",
    "parse_retry_after",
    "safe_url",
]

log = structlog.get_logger("supervisor.client")

Observer = Callable[[str, int | None, float], None]
"""Called after every request with (call, HTTP status or None, duration in seconds)."""

MAX_RETRY_AFTER: Final = 10 * 365.25 * 86400.0
"""A ``Retry-After`` further away than this (ten years) is absurd and ignored."""

QR_PAYLOADS_KEPT: Final = 3
"""The QR payloads of a session kept in ``Secrets``: a code is good for about 60 s and a
new one comes about every 20 s, so about three can be scanned at once; older ones are
worthless and dropped, so that the secrets to match stay few."""

_QR_PATHS: Final = ("auth/qr", "qr")  # the SDK's, then the provider page's

_ERROR_BODY_LIMIT: Final = 8192  # bytes read of a non-2xx body: enough for an excerpt

# What was read of a response: a bytearray filled as the chunks arrive, so that a large
# list answer is held once (a list of chunks joined at the end holds it twice).
Body = bytes | bytearray
_PROBLEM_EXCERPT_LIMIT: Final = 100
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


# --- Retry-After ---------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` value (RFC 9110, section 10.2.3).

    ``value`` is delay-seconds (a decimal such as ``1.5`` is tolerated) or an HTTP-date
    (IMF-fixdate, RFC 850 or asctime); ``now`` is wall-clock epoch seconds. A date in
    the past gives 0.0. Missing, empty, negative, malformed, non-finite values and
    values more than ``MAX_RETRY_AFTER`` away give None. The value is not capped here:
    the rate gate caps it.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text[0].isdigit() or text[0] in "+-.":
        if not _DELAY_SECONDS.fullmatch(text):
            return None  # negative, signed, "1e3", "0x10", "1_000", "1.": not delay-seconds
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
            if when.tzinfo is None:  # asctime has no zone; HTTP-dates are always GMT
                when = when.replace(tzinfo=UTC)
            seconds = max(0.0, when.timestamp() - now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds) or seconds > MAX_RETRY_AFTER:
        return None
    return seconds


# --- The one place that maps answers and failures to errors -------------------------


def map_response(
    call: str,
    response: httpx.Response,
    *,
    now: float,
    body: Body = b"",
    secrets: Secrets | None = None,
) -> ApiError | None:
    """The error a response stands for, or None for any 2xx.

    ``body`` is what was read of the response (it may be a prefix); it only feeds the
    excerpt, cleaned of ``secrets``. ``now`` is wall-clock epoch seconds, for an
    HTTP-date Retry-After.
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    excerpt = (Secrets() if secrets is None else secrets).excerpt(body)
    detail = f": {excerpt}" if excerpt else ""
    if status in (401, 403):
        return AuthFailed(
            f"{call}: HTTP {status}: the API key was refused{detail}",
            call=call,
            http_status=status,
        )
    if status == 404:
        return SessionGone(f"{call}: HTTP 404: no such session{detail}", call=call, http_status=404)
    if status in (409, 422):
        return Conflict(f"{call}: HTTP {status}: conflict{detail}", call=call, http_status=status)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        said = "no usable Retry-After" if retry_after is None else f"retry after {retry_after:g}s"
        return RateLimited(
            f"{call}: HTTP 429: rate limited ({said})",
            call=call,
            http_status=429,
            retry_after=retry_after,
        )
    if 500 <= status < 600:
        return ServerError(
            f"{call}: HTTP {status}: server error{detail}", call=call, http_status=status
        )
    reason = "redirect not followed" if 300 <= status < 400 else "unexpected status"
    return UnexpectedResponse(
        f"{call}: HTTP {status}: {reason}", call=call, http_status=status, excerpt=excerpt
    )


def safe_url(url: httpx.URL | str, secrets: Secrets | None = None) -> str:
    """``scheme://host:port/path`` of a URL, for messages: no user name or password, no
    query or fragment (either could hold a credential), cleaned of ``secrets``."""
    url = httpx.URL(url)
    path = url.raw_path.decode("ascii").partition("?")[0]
    text = f"{url.scheme}://{url.netloc.decode('ascii')}{path}"
    return (Secrets() if secrets is None else secrets).excerpt(text)


def map_transport_error(
    call: str,
    exc: httpx.RequestError | TimeoutError,
    *,
    secrets: Secrets | None = None,
    url: httpx.URL | str | None = None,
    timeout: float | None = None,
) -> ApiError:
    """The error a failure with no usable answer stands for: an httpx exception, or the
    ``TimeoutError`` of the call's overall deadline (``timeout`` seconds).

    The message names the URL tried (``safe_url``: no credentials, no query), the httpx
    exception and an excerpt of its text, cleaned of ``secrets``; raise the result
    ``from None`` or outside the ``except`` block, since ``exc`` holds the request.
    """
    if secrets is None:
        secrets = Secrets()
    if url is None and isinstance(exc, httpx.RequestError):
        with contextlib.suppress(RuntimeError):  # an exception made without its request
            url = exc.request.url
    where = "" if url is None else f" at {safe_url(url, secrets)}"
    if isinstance(exc, TimeoutError):
        within = "" if timeout is None else f" within request_timeout ({timeout:g}s)"
        return ApiTimeout(f"{call}: timed out{where}: no complete answer{within}", call=call)
    what = type(exc).__name__
    said = secrets.excerpt(str(exc), limit=120)
    detail = f"{what}: {said}" if said else what
    if isinstance(exc, httpx.TimeoutException):
        return ApiTimeout(f"{call}: timed out{where} ({detail})", call=call)
    if isinstance(exc, httpx.DecodingError):  # the body's content-encoding was broken
        return UnexpectedResponse(
            f"{call}: body could not be decoded{where} ({detail})", call=call
        )
    return ApiUnreachable(f"{call}: API unreachable{where} ({detail})", call=call)


# --- Reading the API's shapes --------------------------------------------------------
#
# One definition of what an answer looks like: the structs below, which name only the
# fields read. msgspec decodes a body into them straight from the bytes: for the list of
# a large account (about 7.6 MB for 10,000 sessions in the nested shape) that skips every
# other field without building it, about 10 times less CPU than ``json.loads`` and no
# transient tree of dicts (docs/benchmarks.md). JSON that only the standard library
# reads (a byte order mark, UTF-16, a lone surrogate, NaN) is read by ``json.loads`` and
# converted into the same structs (``msgspec.convert``): the rules that follow
# (``_fields``, ``_session_list``, ``_session``) see one form whichever read the body.
# Every field is typed to take any JSON value, so neither way refuses a document: the
# rules do, and say why. Decoded JSON holds no reference cycles, so the structs are not
# tracked by the cyclic garbage collector (``gc=False``): cheaper to make, nothing to walk.


class _Unreadable(Exception):
    """A 2xx body that does not have the expected shape; the message says why."""


_Scalar = str | int | float | bool | None
_NotObject = list[Any] | _Scalar  # any JSON value but an object
_T = TypeVar("_T")


class _Gows(msgspec.Struct, gc=False):
    connected: Any = None


class _Engine(msgspec.Struct, gc=False):
    """The engine's own view of a session (``{"gows": {"found", "connected"}, "grpc"}``)."""

    gows: _Gows | _NotObject = None


class _Details(msgspec.Struct, gc=False):
    """A session's fields, as a flat item has them, or a nested one under ``session``."""

    uniqueSessionId: Any = None
    status: Any = None
    sessionName: Any = None
    name: Any = None
    engine: _Engine | _NotObject = None


class _Downstream(msgspec.Struct, gc=False):
    status: Any = None
    engine: _Engine | _NotObject = None


class _Item(_Details, gc=False):
    """A session item: flat, or nested (``{"session": {...}, "downstream": {...}}``)."""

    session: _Details | _NotObject | msgspec.UnsetType = None  # UNSET: see _Answer
    downstream: _Downstream | _NotObject = None


class _Answer(_Item, gc=False):
    """The answer about one session: a Session object, or one under ``data`` (when it
    has neither ``status`` nor ``session``: UNSET tells a field absent from one null)."""

    status: Any = msgspec.UNSET
    session: _Details | _NotObject | msgspec.UnsetType = msgspec.UNSET
    data: _Item | _NotObject = None


class _Listing(msgspec.Struct, Generic[_T], gc=False):
    """A list answer as an object: the items are under ``sessions``, else ``data``."""

    sessions: list[_T] | dict[str, Any] | _Scalar = None
    data: list[_T] | dict[str, Any] | _Scalar = None


_Entry = _Item | _NotObject  # an item of a list: a session item, or a problem
_LIST: Final = msgspec.json.Decoder(_Listing[_Entry] | list[_Entry] | _Scalar)
_PLAIN_LIST: Final = _Listing[Any] | list[Any] | _Scalar  # the items as plain values
_ANSWER: Final = msgspec.json.Decoder(_Answer | _NotObject)
_NO_TREE: Final = object()  # msgspec read the body: there is no plain tree of it yet


def _decode(body: Body, decoder: msgspec.json.Decoder[_T]) -> tuple[_T, object]:
    """The body in the structs ``decoder`` makes, and its plain tree when the standard
    library had to read it (else ``_NO_TREE``). Raises _Unreadable."""
    if _blank(body):
        raise _Unreadable("empty body")
    try:
        return decoder.decode(body), _NO_TREE
    except (msgspec.DecodeError, RecursionError):  # ValidationError included
        pass
    readable = True
    try:
        tree: object = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, too deep
        readable, tree = False, None
    if not readable:  # raised here, not in the except: JSONDecodeError holds the body
        raise _Unreadable("body is not JSON")
    return msgspec.convert(tree, decoder.type), tree


def _items(document: object) -> list[Any] | None:
    """The items of a list answer: ``{"sessions": [...]}``, else ``{"data": [...]}``,
    or a bare ``[...]``; None for any other document."""
    if isinstance(document, _Listing):
        document = document.sessions if document.sessions is not None else document.data
    return document if isinstance(document, list) else None


def _connected(engine: object) -> bool | None:
    """The engine's own view of the session, ``engine.gows.connected``; None when the
    answer does not say (no engine, another engine's shape, not a boolean)."""
    gows = engine.gows if isinstance(engine, _Engine) else None
    connected = gows.connected if isinstance(gows, _Gows) else None
    return connected if isinstance(connected, bool) else None


def _fields(item: _Item) -> tuple[object, object, str | None, bool | None]:
    """(uniqueSessionId, status, name, engine connected) of a nested or a flat session
    item; None for a name that is no non-empty string, and for an engine not reported."""
    session = item.session
    engine: object = None
    if isinstance(session, _Details):
        downstream = item.downstream
        status = downstream.status if isinstance(downstream, _Downstream) else None
        if status is None:
            status = session.status
        if isinstance(downstream, _Downstream):
            engine = downstream.engine
        source: _Details = session
    else:
        source = item
        status = item.status
    if engine is None:
        engine = source.engine
    name = source.sessionName
    if not isinstance(name, str) or not name:
        name = source.name
    return (source.uniqueSessionId, status, name if isinstance(name, str) and name else None,
            _connected(engine))


def _session_list(body: Body, secrets: Secrets) -> SessionList:
    """Every session of a list answer, and a problem line for each item that cannot be
    used (not an object, no string id or status, a duplicate id). Raises _Unreadable."""
    document, tree = _decode(body, _LIST)
    items = _items(document)
    if items is None:
        raise _Unreadable(
            'expected {"sessions": [...]}, {"data": [...]} or a JSON array of sessions'
        )
    sessions: list[SessionInfo] = []
    refused: list[tuple[int, str]] = []
    seen: set[str] = set()
    for item in items:  # an item's index: len(sessions) + len(refused)
        if not isinstance(item, _Item):
            refused.append((len(sessions) + len(refused), "not an object"))
            continue
        session_id, status, name, connected = _fields(item)
        if not isinstance(session_id, str) or not session_id:
            reason = "no string uniqueSessionId"
        elif not isinstance(status, str) or not status:
            reason = "no string status"
        elif session_id in seen:
            reason = "duplicate uniqueSessionId, the first one is kept"
        else:
            seen.add(session_id)
            sessions.append(SessionInfo(session_id, name, status, connected))
            continue
        refused.append((len(sessions) + len(refused), reason))
    if not refused:
        return SessionList(tuple(sessions))
    # A problem shows the item as it came, every field of it: the structs kept only
    # the fields read, so the items are read again, as plain values.
    if tree is _NO_TREE:
        tree = msgspec.json.decode(body)
    plain = _items(msgspec.convert(tree, _PLAIN_LIST))
    assert plain is not None  # the same document, read the same way
    problems = tuple(
        f"item {index}: {reason}: {_item_excerpt(plain[index], secrets)}"
        for index, reason in refused
    )
    return SessionList(tuple(sessions), problems)


class _QrAnswer(msgspec.Struct, gc=False):
    data: Any = None


_QR: Final = msgspec.json.Decoder(_QrAnswer | _NotObject)


def _qr_payload(body: Body) -> str:
    """The payload of a QR answer (``{"data": "<payload>"}``). Raises _Unreadable, saying
    why without showing any of the body."""
    answer, _ = _decode(body, _QR)
    if not isinstance(answer, _QrAnswer):
        raise _Unreadable('expected {"data": "<QR payload>"}')
    data = answer.data
    if data is None:
        raise _Unreadable("no QR payload (data missing or null)")
    if not isinstance(data, str):
        raise _Unreadable(f"the QR payload (data) is a {type(data).__name__}, not a string")
    if not data.strip():
        raise _Unreadable("the QR payload (data) is empty")
    return data


def _item_excerpt(item: object, secrets: Secrets) -> str:
    try:
        text = json.dumps(item, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = type(item).__name__
    return secrets.excerpt(text[:EXCERPT_WINDOW], limit=_PROBLEM_EXCERPT_LIMIT)


def _session(body: Body, requested_id: str) -> SessionInfo:
    """The session an answer is about, which must be ``requested_id`` when it says.
    Raises _Unreadable."""
    answer, _ = _decode(body, _ANSWER)
    item: object = answer
    if (
        isinstance(answer, _Answer)
        and answer.status is msgspec.UNSET
        and answer.session is msgspec.UNSET
        and isinstance(answer.data, _Item)
    ):
        item = answer.data
    if not isinstance(item, _Item):
        raise _Unreadable("expected a Session object")
    session_id, status, name, connected = _fields(item)
    if not isinstance(status, str) or not status:
        raise _Unreadable("no string status in the session")
    if session_id is None or session_id == "":
        session_id = requested_id
    elif not isinstance(session_id, str):
        raise _Unreadable("uniqueSessionId is not a string")
    elif session_id != requested_id:
        raise _Unreadable("the answer is about another session")
    return SessionInfo(session_id, name, status, connected)


# --- The client ----------------------------------------------------------------------


USER_AGENT: Final = f"wasend-supervisor/{__version__}"


def user_agent(replica: str = "") -> str:
    """The User-Agent of every request: with replicas, it names this one (a name of
    letters, digits, '.', '_' and '-', as ``ha.replica`` allows)."""
    return f"{USER_AGENT} (replica {replica})" if replica else USER_AGENT


def _tls_context(url: httpx.URL) -> ssl.SSLContext:
    """What httpx is to verify TLS with: for https://, httpx's default store (certifi's),
    or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, as httpx would read them.

    A plain http:// base URL (settings allow it only for a loopback host) never uses TLS,
    as redirects are not followed; loading the certificate store for it would cost about
    50 ms of every start (a sixth of ``check``'s time). It gets a context without any
    trusted certificate instead, which still verifies, and so refuses, any TLS peer.
    """
    if url.scheme == "https":
        return httpx.create_ssl_context(trust_env=True)
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies hostnames and certificates


def _proxy_mounts(
    url: httpx.URL, verify: ssl.SSLContext
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """The proxies of the environment, for https:// URLs only.

    ``HTTPS_PROXY`` (else ``ALL_PROXY``) carries https:// requests, minus the hosts in
    ``NO_PROXY``, read as httpx reads them: through a proxy the request is tunnelled
    (CONNECT), so the key stays inside TLS to the API. ``HTTP_PROXY`` is never used: a
    plain http:// base URL (loopback only) is always asked directly, so the key is never
    sent in clear text to a proxy. The client is built with ``trust_env=False``, which
    keeps httpx from reading any other proxy variable.
    """
    if url.scheme != "https":
        return {}
    # httpx's own reading of *_PROXY and NO_PROXY (urllib's getproxies, NO_PROXY as curl).
    from httpx._utils import get_environment_proxies  # noqa: PLC0415

    found = get_environment_proxies()
    proxy = found.get("https://") or found.get("all://")
    if not proxy:
        return {}
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {
        "https://": httpx.AsyncHTTPTransport(proxy=proxy, verify=verify)
    }
    for pattern, target in found.items():
        scheme, _, rest = pattern.partition("://")
        if target is None and scheme in ("all", "https") and rest:  # a NO_PROXY host
            mounts[f"https://{rest}"] = None
    return mounts


def _check_key(api_key: SecretStr) -> SecretStr:
    if key_problem(api_key.get_secret_value()) is not None:
        raise ValueError("the API key must be non-empty printable ASCII without spaces")
    return api_key


def _target(base_url: str, timeout: float) -> httpx.URL:
    """The base URL, checked with the request timeout that goes with it."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("base_url must be an absolute http(s) URL")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds")
    return url


def _session_path(session_id: str, action: str = "") -> str:
    if not session_id:
        raise ValueError("session_id must not be empty")
    quoted = quote(session_id, safe="")
    if quoted in (".", ".."):  # a dot segment would be resolved away by URL rules
        quoted = quoted.replace(".", "%2E")
    return f"/sessions/{quoted}/{action}" if action else f"/sessions/{quoted}"


class WasendClient:
    """An async client for the WASend session endpoints. Use ``async with`` or ``aclose``."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float,
        gate: RateGate | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_body_bytes: int = 32 * 1024 * 1024,
        observer: Observer | None = None,
        secrets: Secrets | None = None,
        replica: str = "",
    ) -> None:
        url = _target(base_url, timeout)
        self._user_agent = user_agent(replica)
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self._secrets = Secrets() if secrets is None else secrets  # the process's: its key
        self._secrets.add(api_key.get_secret_value())  # and every key set after it too
        self._api_key = _check_key(api_key)
        self._gate = gate
        self._clock: Clock = clock or SystemClock()
        self._max_body_bytes = max_body_bytes
        self._observer = observer
        self._timeout = timeout
        self._transport = transport
        self._http = self._new_http(url, timeout)
        self._qr_path: str | None = None  # the QR path that answered: asked alone from then on
        self._qr_payloads: dict[str, deque[str]] = {}  # by session: those added to secrets

    def _new_http(self, url: httpx.URL, timeout: float) -> httpx.AsyncClient:
        """The httpx client for a base URL: its TLS context and proxies depend on the
        scheme (see ``_tls_context`` and ``_proxy_mounts``)."""
        verify = _tls_context(url)
        return httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            transport=self._transport,
            verify=verify,
            trust_env=False,  # no HTTP_PROXY, no SSL_CERT_FILE behind our back: see above
            mounts=None if self._transport is not None else _proxy_mounts(url, verify),
            headers={
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
                "User-Agent": self._user_agent,
            },
        )

    def __repr__(self) -> str:
        return f"<WasendClient {self._http.base_url}>"

    def set_api_key(self, api_key: SecretStr) -> None:
        """Use another API key from the next request on: the key file re-read after a 401
        (``cycle.Supervisor``), the one thing that changes under a running client. A reload
        builds a new client instead (``wiring.rebuild``), so the base URL and the timeout
        are fixed for a client's life."""
        self._secrets.add(api_key.get_secret_value())
        self._api_key = _check_key(api_key)

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        """Whether ``aclose`` has been called (no request can be sent any more)."""
        return self._http.is_closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the calls ---

    async def list_sessions(self) -> SessionList:
        """``GET /sessions``: every session on the account, and items that could not be read."""
        status, body = await self._call("list", "GET", "/sessions")
        try:
            return _session_list(body, self._secrets)
        except _Unreadable as exc:
            reason = str(exc)
        raise self._unexpected("list", status, reason, body)  # unchained, outside the except

    async def get_session(self, session_id: str, *, spare: bool = False) -> SessionInfo:
        """``GET /sessions/{id}``. ``spare``: it waits at the rate gate for every other
        request (``RateGate.acquire``): a read a webhook asked for."""
        return await self._session_call("get", "GET", _session_path(session_id), session_id,
                                        spare=spare)

    async def restart(self, session_id: str) -> SessionInfo:
        """``POST /sessions/{id}/restart``. An empty answer gives status "" (status unknown)."""
        path = _session_path(session_id, "restart")
        return await self._session_call("restart", "POST", path, session_id, empty_ok=True)

    async def stop(self, session_id: str) -> SessionInfo:
        """``POST /sessions/{id}/stop``. An empty answer gives status "" (status unknown)."""
        path = _session_path(session_id, "stop")
        return await self._session_call("stop", "POST", path, session_id, empty_ok=True)

    async def qr(self, session_id: str) -> QrCode:
        """``GET /sessions/{id}/auth/qr``, else ``GET /sessions/{id}/qr`` on a 404: the
        session's QR code. The first path that answers (a 2xx, 409 or 422) is the only one
        asked from then on; until one does, a 404 from both is ``SessionGone``. A session
        with no QR code to scan answers 422 (``Conflict``), as the engine does."""
        paths = (self._qr_path,) if self._qr_path is not None else _QR_PATHS
        for path in paths:
            try:
                # A person's read: any replica may make it (through the shared gate).
                status, body = await self._call("qr", "GET", _session_path(session_id, path),
                                                fenced=False)
            except SessionGone:
                if path == paths[-1]:
                    raise
                continue
            except Conflict:
                self._qr_path = path
                raise
            self._qr_path = path
            break
        try:
            payload = _qr_payload(body)
        except _Unreadable as exc:
            reason = str(exc)
        else:
            self._keep_secret(session_id, payload)
            return QrCode(session_id, payload)
        # No excerpt: the body may hold a payload in a shape that was not read.
        raise UnexpectedResponse(f"qr: HTTP {status}: {reason}", call="qr", http_status=status)

    def _keep_secret(self, session_id: str, payload: str) -> None:
        """Add a QR payload to the process's secrets, and drop the session's older ones
        beyond ``QR_PAYLOADS_KEPT`` (only those this client added)."""
        kept = self._qr_payloads.setdefault(session_id, deque())
        if payload in kept or payload in self._secrets:
            return
        self._secrets.add(payload)
        kept.append(payload)
        while len(kept) > QR_PAYLOADS_KEPT:
            self._secrets.discard(kept.popleft())

    # --- the machinery ---

    async def _session_call(
        self, call: str, method: str, path: str, session_id: str, *, empty_ok: bool = False,
        spare: bool = False,
    ) -> SessionInfo:
        status, body = await self._call(call, method, path, spare=spare)
        if empty_ok and _blank(body):
            return SessionInfo(session_id, None, "")
        try:
            return _session(body, session_id)
        except _Unreadable as exc:
            reason = str(exc)
        raise self._unexpected(call, status, reason, body)  # unchained, outside the except

    def _unexpected(self, call: str, status: int, reason: str, body: Body) -> UnexpectedResponse:
        return UnexpectedResponse(
            f"{call}: HTTP {status}: {reason}",
            call=call,
            http_status=status,
            excerpt=self._secrets.excerpt(body),
        )

    async def _call(self, call: str, method: str, path: str, *, spare: bool = False,
                    fenced: bool = True) -> tuple[int, Body]:
        """Send one request through the gate; the status and body of a 2xx, or raise.

        Waiting at the gate is not part of the call: a ``Retry-After`` may rightly hold it
        longer. From there on the call has ``request_timeout`` seconds for its whole life
        (connect, send, every read of a body however slowly it drips); httpx's own timeout
        is only per read.
        """
        if self._gate is not None:
            await self._gate.acquire(spare=spare, fenced=fenced)
        request = self._http.build_request(
            method, path, headers={"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        )
        timeout = self._timeout
        started = self._clock.monotonic()
        response: httpx.Response | None = None
        body: Body = b""
        too_big = False
        failure: httpx.RequestError | TimeoutError | None = None
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.send(request, stream=True)
                limit = self._max_body_bytes if response.is_success else _ERROR_BODY_LIMIT
                try:
                    body, too_big = await _read_capped(response, limit, self._secrets)
                finally:
                    await response.aclose()
        except (httpx.RequestError, TimeoutError) as exc:
            if response is None or response.is_success:
                failure = exc
            # else: the status is the answer; a broken error body only loses the excerpt
        duration = self._clock.monotonic() - started

        # Mapped outside the except block, so no httpx exception (which holds the
        # request and its headers) is chained to what we raise.
        http_status = None if response is None else response.status_code
        error: ApiError | None
        if failure is not None:
            error = map_transport_error(
                call, failure, secrets=self._secrets, url=request.url, timeout=timeout
            )
            error.http_status = http_status
        else:
            assert response is not None
            error = map_response(
                call, response, now=self._clock.now(), body=body, secrets=self._secrets
            )
            if error is None and too_big:
                error = self._unexpected(
                    call, response.status_code, f"body over {self._max_body_bytes} bytes", body
                )
        failure = None  # the httpx exception holds the request: not a local of a traceback
        if self._gate is not None and http_status is not None:  # an answer came
            if isinstance(error, RateLimited):
                await self._gate.rate_limited(error.retry_after, call=call)
            else:
                self._gate.succeeded()
        self._record(call, method, request, http_status, duration, error)
        if error is not None:
            raise error
        assert http_status is not None
        return http_status, body

    def _record(
        self,
        call: str,
        method: str,
        request: httpx.Request,
        http_status: int | None,
        duration: float,
        error: ApiError | None,
    ) -> None:
        log.debug(
            ev.API_REQUEST,
            call=call,
            method=method,
            path=request.url.raw_path.decode("ascii"),
            http_status=http_status,
            duration_ms=round(duration * 1000.0, 3),
            error=None if error is None else error.kind,
        )
        if self._observer is not None:
            try:
                self._observer(call, http_status, duration)
            except Exception as exc:  # a metrics hook must not break a call
                log.warning(ev.API_OBSERVER_FAILED, call=call, error=type(exc).__name__)


def _raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    # The body as it came (transfer coding removed, content coding kept): decoding it is
    # ours, so that a compressed body is capped as it inflates (see _Inflater).
    # aiter_raw is an async generator, typed as an iterator; closing it is tidier.
    return cast("AsyncGenerator[bytes, None]", response.aiter_raw())


async def _in_memory(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    yield response.content


def _blank(body: Body) -> bool:
    """Empty or only whitespace; unlike ``strip()``, copies nothing of a large body."""
    return not body or body.isspace()


ACCEPT_ENCODING: Final = "gzip, deflate"
"""The content codings asked for, and the only ones read (by ``_Inflater``)."""

_INFLATE_STEP: Final = 64 * 1024  # decoded bytes made at most per step


class _Inflater:
    """A gzip or deflate body, decoded in steps of at most ``_INFLATE_STEP`` bytes into
    a buffer that never grows past the cap: a small body that inflates to gigabytes
    costs the cap and one step of memory, not the gigabytes (zlib would otherwise
    inflate a whole network chunk, about 64 KiB, into up to about 64 MB at once)."""

    def __init__(self, coding: str) -> None:
        self._deflate = coding == "deflate"
        # gzip: the gzip wrapper; deflate: the zlib wrapper, or raw deflate (below).
        wbits = zlib.MAX_WBITS if self._deflate else zlib.MAX_WBITS | 16
        self._zlib = zlib.decompressobj(wbits)
        self._started = False

    def feed(self, data: bytes, body: bytearray, limit: int) -> bool:
        """Decode ``data`` into ``body``; True once the decoded body would pass ``limit``
        (``body`` then holds exactly ``limit`` bytes). Raises httpx.DecodingError."""
        try:
            return self._feed(data, body, limit)
        except zlib.error as exc:
            problem = str(exc)
        raise httpx.DecodingError(problem)  # outside the except: nothing chained

    def _feed(self, data: bytes, body: bytearray, limit: int) -> bool:
        if self._deflate and not self._started and data:
            self._started = True
            # "deflate" is meant to be zlib-wrapped (RFC 9110), but raw deflate is common:
            # a first chunk the zlib wrapper refuses at once is read as raw deflate, as
            # httpx does.
            start = len(body)
            try:
                return self._inflate(data, body, limit)
            except zlib.error:
                if len(body) != start:
                    raise
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._inflate(data, body, limit)

    def _inflate(self, data: bytes, body: bytearray, limit: int) -> bool:
        pending = data
        while True:
            room = limit - len(body)
            want = min(_INFLATE_STEP, room + 1)
            out = self._zlib.decompress(pending, want)
            if len(out) > room:
                body += out[:room]
                return True
            body += out
            if len(out) < want:  # every byte of input used, and nothing more to give
                return False
            pending = self._zlib.unconsumed_tail


def _inflater_for(response: httpx.Response, secrets: Secrets) -> _Inflater | None:
    """How to decode the body: None for none; raises httpx.DecodingError for a content
    coding we did not ask for (more than one, or another than gzip and deflate)."""
    header = response.headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater(codings[0])
    shown = secrets.excerpt(header, limit=40)
    raise httpx.DecodingError(f"content-encoding {shown!r} is not supported")


async def _read_capped(
    response: httpx.Response, limit: int, secrets: Secrets
) -> tuple[Body, bool]:
    """At most ``limit`` bytes of the decoded body, and whether there was more.

    The cap holds on the decoded size as it is decoded. Raises httpx errors (a broken
    or unsupported content coding is ``httpx.DecodingError``)."""
    if response.is_stream_consumed:
        # An answer made in memory (a transport in this process, as tests use): httpx
        # has read and decoded it already, so there is nothing left to decode or to spare.
        inflater, chunk_source = None, _in_memory
    else:
        inflater, chunk_source = _inflater_for(response, secrets), _raw_chunks
    declared = response.headers.get("content-length", "")
    if (
        inflater is None
        and declared.isascii()
        and declared.isdigit()
        and len(declared) < 20
        and int(declared) > limit
    ):
        async with contextlib.aclosing(chunk_source(response)) as chunks:
            async for chunk in chunks:  # only the first chunk, for the excerpt
                return chunk[:EXCERPT_WINDOW], True
        return b"", True
    body = bytearray()
    async with contextlib.aclosing(chunk_source(response)) as chunks:
        async for chunk in chunks:
            if inflater is not None:
                if inflater.feed(chunk, body, limit):
                    return body, True
                continue
            room = limit - len(body)
            if len(chunk) > room:
                body += chunk[:room]
                return body, True
            body += chunk
    return body, False
