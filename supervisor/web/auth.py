"""Who may see the status page: the names and tokens of ``http_auth_file``
(``Credentials``), failed logins slowed and limited per peer (``LoginLimiter``), and the
logins' server side: session ids and their CSRF tokens (``Sessions``).

The QR code the page shows *is* the WhatsApp account: whoever scans it takes the number
over. So a token is a secret like the API key. Its file is read as the key's is (a
regular file of bounded size, never blocking; ``http.auth_file_permissions`` when others
than the supervisor can read it); a token is never in a log line, a repr, an exception
or a problem line (those name the file and the line number, never what the line holds);
and each one is added to the process's ``Secrets``.

The file holds one login per line, ``name:token`` or ``name:scrypt$N$R$P$SALT$HASH``
(the hash of a token, made by ``wasend-supervisor hash-token``); blank lines and ``#``
comment lines are ignored. Names are letters, digits and ``. _ @ -``; a token has
``TOKEN_MIN_LENGTH`` characters at least, no space and no control character.

Verifying a token:

* ``check(name, token)`` (the login form) costs the same whether the name exists or not:
  when the file holds a hashed token, every check runs exactly one scrypt (on a stand-in
  hash when the name is unknown or its token is plain); plain tokens are compared by
  their keyed digests with ``hmac.compare_digest``.
* ``bearer(token)`` (a script's ``Authorization: Bearer``) finds a plain token by its
  keyed digest (HMAC-SHA256 with a key drawn at random once per process) in one lookup.
  A hashed one costs a scrypt per hashed line, once: a token that verified is remembered
  by its keyed digest (never itself) in a small bounded cache, so the next request of
  that script runs none. A refused bearer token has cost a scrypt per hashed line: count
  it as a failed login of its peer (``LoginLimiter``) as the form does.

A scrypt takes 40 to 100 ms (``SCRYPT_N``, ``SCRYPT_R``, ``SCRYPT_P``: 16 MiB):
call ``check`` and ``bearer`` off the event loop (``asyncio.to_thread``); hashlib lets
go of the GIL during a scrypt, and ``Credentials`` is safe to share between threads.

Pure Python and hashlib: no web framework here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import stat
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_bytes, token_urlsafe
from typing import Final, NamedTuple

import structlog

from supervisor.clock import Clock
from supervisor.config.files import read_failure, read_regular_file, readable_by_others
from supervisor.config.key import CREDENTIALS_ENV
from supervisor.domain import events as ev
from supervisor.domain.secrets import Secrets

__all__ = [
    "AUTH_FILE_MAX_BYTES",
    "BEARER_CACHE_MAX",
    "LOGIN_DELAY_FIRST",
    "LOGIN_DELAY_MAX",
    "LOGIN_LOCKOUT",
    "LOGIN_LOCKOUT_FAILURES",
    "LOGIN_LOCKOUT_WINDOW",
    "LOGIN_PEERS_MAX",
    "NAME",
    "REASON_BAD_CREDENTIALS",
    "REASON_LOCKED_OUT",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "SESSIONS_MAX",
    "SESSION_IDLE",
    "SESSION_TTL",
    "TOKEN_MAX_LENGTH",
    "TOKEN_MIN_LENGTH",
    "Credentials",
    "Login",
    "LoginLimiter",
    "Sessions",
    "bearer_token",
    "csrf_ok",
    "hash_token",
    "load_credentials",
    "peer_key",
    "token_problem",
]

log = structlog.get_logger("supervisor.web")

# --- the file -----------------------------------------------------------------------------

AUTH_FILE_MAX_BYTES: Final = 64 * 1024
"""An auth file longer than this is refused, not read on."""

NAME: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
"""A login name: what ``http.login`` and the actions' events say did it."""

TOKEN_MIN_LENGTH: Final = 16
"""Shorter tokens are refused (in the file, by ``hash-token``, and at a login): a token
is to be drawn at random, e.g. ``openssl rand -base64 24``."""

TOKEN_MAX_LENGTH: Final = 512
"""Longer tokens are refused too: nothing long is hashed for a stranger."""

# --- scrypt: what hash_token uses, and the bounds of what a file's hashes may use ----------

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
"""hash_token's cost: 16 MiB of memory and, measured on a shared 2-core machine, 37 ms a
verification (median of 20; 46 ms at worst, up to 95 ms under load). A hash in the file
may cost more (up to ``_SCRYPT_MEMORY_MAX``), never less."""

_SALT_BYTES = 16
_HASH_BYTES = 32
_SCRYPT_MEMORY_MIN = 128 * SCRYPT_N * SCRYPT_R  # 16 MiB: no weaker hash is accepted
_SCRYPT_MEMORY_MAX = 128 * 1024 * 1024  # nor a costlier one: one login must stay cheap
_SCRYPT_P_MAX = 16
_SCHEME = "scrypt"

BEARER_CACHE_MAX: Final = 64
"""Bearer tokens of hashed lines remembered (by their keyed digest) once verified."""

# --- the logins' limits ---------------------------------------------------------------------

LOGIN_DELAY_FIRST: Final = 0.5
LOGIN_DELAY_MAX: Final = 8.0
"""After failed logins from a peer, its next answer waits 0.5 s, doubling with each
failure (1, 2, 4 s...) up to 8 s."""

LOGIN_LOCKOUT_FAILURES: Final = 10
LOGIN_LOCKOUT_WINDOW: Final = 600.0
LOGIN_LOCKOUT: Final = 600.0
"""10 failures from a peer within 10 minutes lock it out for 10 minutes."""

LOGIN_PEERS_MAX: Final = 10_000
"""Peers remembered, the least recently failed forgotten first."""

REASON_BAD_CREDENTIALS: Final = "bad_credentials"
REASON_LOCKED_OUT: Final = "locked_out"
"""``http.login_failed``'s ``reason``: a wrong name or token; a peer locked out."""

SESSION_TTL: Final = 12 * 3600.0
SESSION_IDLE: Final = 3600.0
"""A login lasts 12 hours at most, and ends after an hour without a request."""

SESSIONS_MAX: Final = 1000
"""Logins kept at once, the oldest ended first."""


_KEY: list[bytes] = []  # the process's key, once drawn
_KEY_LOCK = threading.Lock()


def _process_key() -> bytes:
    """The key of this process's keyed digests: drawn once, at first use (under a lock:
    every digest of the process must use the same one), never shown."""
    if not _KEY:
        with _KEY_LOCK:
            if not _KEY:
                _KEY.append(token_bytes(32))
    return _KEY[0]


def _keyed(value: bytes) -> bytes:
    return hmac.new(_process_key(), value, hashlib.sha256).digest()


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a token (never showing it), or None: the one rule for the
    file, ``hash-token`` and a login."""
    if not token:
        return "an empty token"
    if len(token) < TOKEN_MIN_LENGTH:
        return f"a token shorter than {TOKEN_MIN_LENGTH} characters"
    if len(token) > TOKEN_MAX_LENGTH:
        return f"a token longer than {TOKEN_MAX_LENGTH} characters"
    if not token.isprintable() or any(ch.isspace() for ch in token):
        return "a token with a space or a control character in it"
    return None


class _Hash(NamedTuple):
    """A token's scrypt hash, as a line of the file holds it."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __repr__(self) -> str:
        return f"<scrypt hash n={self.n} r={self.r} p={self.p}>"


def _derive(token: bytes, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    """scrypt: every hash made or verified here goes through this one call."""
    maxmem = 128 * r * (n + p + 2) + 64 * 1024
    return hashlib.scrypt(token, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def _verify(token: bytes, hashed: _Hash) -> bool:
    derived = _derive(token, hashed.n, hashed.r, hashed.p, hashed.salt, len(hashed.digest))
    return hmac.compare_digest(derived, hashed.digest)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_token(token: str) -> str:
    """``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (base64 without padding) for a line of the
    auth file, with a fresh random salt. ValueError (one line, never the token) for a
    token that cannot be one (``token_problem``)."""
    problem = token_problem(token)
    if problem is not None:
        raise ValueError(problem)
    salt = token_bytes(_SALT_BYTES)
    digest = _derive(_encoded(token), SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, _HASH_BYTES)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


_HASH_FORM = f"{_SCHEME}$N$R$P$SALT$HASH"


def _parse_hash(text: str) -> _Hash:
    """A ``scrypt$...`` value, or ValueError saying what is wrong with it (never what it
    holds)."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME or not all(
        part.isascii() and part.isdigit() and len(part) <= 8 for part in parts[1:4]
    ):
        raise ValueError(f"a hash that is not {_HASH_FORM}")
    n, r, p = (int(part) for part in parts[1:4])
    try:
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except (binascii.Error, ValueError):
        raise ValueError(f"a hash whose salt or hash is not base64 ({_HASH_FORM})") from None
    if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        raise ValueError("a hash with a salt of under 8 bytes or a hash of under 16 (or over 64)")
    memory = 128 * n * r
    if (n < 2 or n & (n - 1) or not 1 <= p <= _SCRYPT_P_MAX
            or not _SCRYPT_MEMORY_MIN <= memory <= _SCRYPT_MEMORY_MAX):
        raise ValueError(
            f"a hash whose cost is not accepted (n a power of 2, 128 x n x r from "
            f"{_SCRYPT_MEMORY_MIN >> 20} to {_SCRYPT_MEMORY_MAX >> 20} MiB, p from 1 to "
            f"{_SCRYPT_P_MAX}; hash-token makes n={SCRYPT_N}, r={SCRYPT_R}, p={SCRYPT_P})")
    return _Hash(n, r, p, salt, digest)


class _Line(NamedTuple):
    """One login of the file: its plain token's keyed digest, or its token's hash."""

    plain: bytes | None
    hashed: _Hash | None
    stamp: bytes  # a keyed digest of what the line holds: changes when its token does

    def __repr__(self) -> str:
        return "<plain token>" if self.hashed is None else "<hashed token>"


def _parse_line(text: str) -> tuple[str, _Line, str]:
    """``name:token`` or ``name:scrypt$...``: the name, the line, and what it holds after
    the name (for the process's Secrets); or ValueError with what is wrong, never what
    the line holds."""
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon:
        raise ValueError("is not name:token")
    if not NAME.fullmatch(name):
        raise ValueError("has a name that is not 1 to 64 letters, digits, '.', '_', '@' or '-'")
    value = value.strip()
    if value.startswith(f"{_SCHEME}$"):
        try:
            hashed = _parse_hash(value)
        except ValueError as exc:
            raise ValueError(f"has {exc}") from None
        return name, _Line(None, hashed, _keyed(_encoded(value))), value
    problem = token_problem(value)
    if problem is not None:
        raise ValueError(f"has {problem}")
    digest = _keyed(_encoded(value))
    return name, _Line(digest, None, digest), value


class Credentials:
    """The logins of an auth file: ``check`` a name and token, find the name of a
    ``bearer`` token. Holds no token, only keyed digests and hashes; its repr shows how
    many names it holds."""

    __slots__ = ("_by_digest", "_cache", "_hashed", "_lines", "_lock", "_nobody", "_secrets",
                 "_stand_in", "exposure")

    def __init__(self, lines: Mapping[str, _Line], secrets: Secrets | None = None) -> None:
        self._lines = dict(lines)
        self._secrets = secrets  # a hashed line's token joins it once it is verified
        self._by_digest = {line.plain: name for name, line in lines.items() if line.plain}
        self._hashed = [(name, line.hashed) for name, line in lines.items() if line.hashed]
        self._nobody = token_bytes(32)  # a digest no token has
        # What a check of an unknown name (or of a plain token, when some are hashed) is
        # verified against: a hash of the file's first hashed line's cost that nothing
        # matches, so that every check costs one scrypt, whoever it names.
        first = self._hashed[0][1] if self._hashed else None
        self._stand_in = None if first is None else first._replace(
            salt=token_bytes(len(first.salt)),
            digest=token_bytes(len(first.digest)))
        self._cache: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()
        self.exposure: tuple[int, str] | None = None
        """``(mode, who)`` when others could read the file at load (``load_credentials``)."""

    @classmethod
    def parse(cls, text: str, source: str, *, secrets: Secrets | None = None) -> Credentials:
        """The logins in ``text`` (an auth file's content; ``source`` names it), or
        ValueError: one line naming ``source`` and the first bad line's number, never a
        token. What each line holds after its name (a token, a hash) is added to
        ``secrets``, when given, and so is a hashed line's token once it is verified."""
        lines: dict[str, _Line] = {}
        where: dict[str, int] = {}
        values: list[str] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                name, parsed, value = _parse_line(line)
            except ValueError as exc:
                raise ValueError(f"{source} line {number} {exc}") from None
            if name in lines:
                raise ValueError(
                    f"{source} line {number} repeats the name {name} of line {where[name]}")
            lines[name], where[name] = parsed, number
            values.append(value)
        if not lines:
            raise ValueError(f"{source} holds no name:token line")
        if secrets is not None:
            for value in values:
                secrets.add(value)
        return cls(lines, secrets)

    def check(self, name: str, token: str) -> bool:
        """Whether ``token`` is ``name``'s. Costs the same whether ``name`` exists or not:
        one scrypt when the file holds a hashed token, none when every token is plain."""
        if token_problem(token) is not None:
            return False  # said of the token alone, before any name is looked at
        line = self._lines.get(name)
        encoded = _encoded(token)
        plain = line.plain if line is not None and line.plain is not None else self._nobody
        matched = hmac.compare_digest(_keyed(encoded), plain)
        if self._stand_in is not None:
            hashed = line.hashed if line is not None and line.hashed is not None else None
            verified = _verify(encoded, self._stand_in if hashed is None else hashed)
            if verified and hashed is not None:
                self._verified(token)
                matched = True
        return matched

    def bearer(self, token: str) -> str | None:
        """The name whose token ``token`` is, or None. A plain token is one lookup; a
        hashed one is verified once (a scrypt per hashed line), then remembered."""
        if token_problem(token) is not None:
            return None
        encoded = _encoded(token)
        digest = _keyed(encoded)
        name = self._by_digest.get(digest)
        if name is not None:
            return name
        with self._lock:
            name = self._cache.get(digest)
            if name is not None:
                self._cache.move_to_end(digest)
                return name
        for candidate, hashed in self._hashed:
            if _verify(encoded, hashed):
                self._verified(token)
                with self._lock:
                    self._cache[digest] = candidate
                    while len(self._cache) > BEARER_CACHE_MAX:
                        self._cache.popitem(last=False)
                return candidate
        return None

    def _verified(self, token: str) -> None:
        """A hashed line's token, known now: never to be printed from now on."""
        if self._secrets is not None:
            with self._lock:
                self._secrets.add(token)

    def stamp(self, name: str) -> bytes | None:
        """A digest of ``name``'s line (keyed, never showing its token), the same in
        every ``Credentials`` of this process while the line holds the same token; None
        for an unknown name. ``Sessions.retain`` ends the logins of changed lines."""
        line = self._lines.get(name)
        return None if line is None else line.stamp

    def __contains__(self, name: object) -> bool:
        return name in self._lines

    def __len__(self) -> int:
        return len(self._lines)

    def __repr__(self) -> str:
        return f"<Credentials: {len(self._lines)} names>"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case,
    RFC 9110), or None for no header, another scheme or no token."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def load_credentials(
    path: Path, *, secrets: Secrets | None = None, env: Mapping[str, str] | None = None
) -> Credentials:
    """The logins of the auth file at ``path``, read as the key file is (a regular file
    of at most ``AUTH_FILE_MAX_BYTES``, never blocking); each plain token added to
    ``secrets``. ValueError, one line naming the file (and the line), never a token: the
    caller puts the setting's name and source in front. When others than the supervisor
    can read the file, one ``http.auth_file_permissions`` warning (not for a systemd
    credential, a file in ``$CREDENTIALS_DIRECTORY``: only the service can open those)."""
    try:
        data, info = read_regular_file(path, AUTH_FILE_MAX_BYTES, "an auth file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {read_failure(exc)}") from None
    credentials = Credentials.parse(text, str(path), secrets=secrets)
    directory = (os.environ if env is None else env).get(CREDENTIALS_ENV)
    who = None if directory and path.parent == Path(directory) else readable_by_others(info)
    if who is not None:
        mode = stat.S_IMODE(info.st_mode)
        credentials.exposure = (mode, who)
        log.warning(ev.HTTP_AUTH_FILE_PERMISSIONS, path=str(path), mode=f"{mode:04o}",
                    readable_by=who, hint=f"chmod 600 {path}")
    return credentials


# --- failed logins ----------------------------------------------------------------------------


def peer_key(peer: str) -> str:
    """Who a login limit counts: the address, or its /64 for IPv6 (one host commonly
    holds a whole /64). Anything that is not an address is counted as given."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Failures:
    times: list[float] = field(default_factory=list)  # monotonic, within the window
    blocked_until: float | None = None


class LoginLimiter:
    """Failed logins, slowed and limited per peer (``peer_key``): after ``k`` failures
    within ``LOGIN_LOCKOUT_WINDOW`` the next answer waits ``LOGIN_DELAY_FIRST`` x 2^(k-1)
    seconds (at most ``LOGIN_DELAY_MAX``); the ``LOGIN_LOCKOUT_FAILURES``-th locks the
    peer out for ``LOGIN_LOCKOUT`` seconds; a success forgets the peer. At most
    ``LOGIN_PEERS_MAX`` peers are remembered. Times are the clock's ``monotonic()``."""

    __slots__ = ("_clock", "_failures", "_first", "_lockout", "_max_delay", "_peers",
                 "_peers_max", "_window")

    def __init__(self, clock: Clock, *, first_delay: float = LOGIN_DELAY_FIRST,
                 max_delay: float = LOGIN_DELAY_MAX, failures: int = LOGIN_LOCKOUT_FAILURES,
                 window: float = LOGIN_LOCKOUT_WINDOW, lockout: float = LOGIN_LOCKOUT,
                 peers: int = LOGIN_PEERS_MAX) -> None:
        self._clock = clock
        self._first, self._max_delay = first_delay, max_delay
        self._failures, self._window, self._lockout = failures, window, lockout
        self._peers_max = peers
        self._peers: OrderedDict[str, _Failures] = OrderedDict()

    def _current(self, peer: str) -> _Failures | None:
        """The peer's failures still counted now, or None (forgotten if none are)."""
        key = peer_key(peer)
        entry = self._peers.get(key)
        if entry is None:
            return None
        now = self._clock.monotonic()
        if entry.blocked_until is not None and now >= entry.blocked_until:
            entry.blocked_until = None
        entry.times = [t for t in entry.times if now - t < self._window]
        if not entry.times and entry.blocked_until is None:
            del self._peers[key]
            return None
        return entry

    def delay(self, peer: str) -> float:
        """Seconds to wait before answering this peer's login (0 without failures)."""
        entry = self._current(peer)
        if entry is None or not entry.times:
            return 0.0
        doublings = min(len(entry.times) - 1, 64)  # no overflow, whatever the settings
        return min(self._first * 2.0**doublings, self._max_delay)

    def blocked(self, peer: str) -> float | None:
        """Seconds left of the peer's lockout, or None: it may try."""
        entry = self._current(peer)
        if entry is None or entry.blocked_until is None:
            return None
        return entry.blocked_until - self._clock.monotonic()

    def failed(self, peer: str) -> None:
        """A failed login from ``peer`` (a wrong name or token, a refused bearer token)."""
        key = peer_key(peer)
        entry = self._current(peer)
        if entry is None:
            entry = self._peers[key] = _Failures()
        self._peers.move_to_end(key)
        if entry.blocked_until is not None:
            return  # locked out already: the lockout is not lengthened
        now = self._clock.monotonic()
        entry.times.append(now)
        if len(entry.times) >= self._failures:
            entry.times.clear()
            entry.blocked_until = now + self._lockout
        while len(self._peers) > self._peers_max:
            self._peers.popitem(last=False)

    def succeeded(self, peer: str) -> None:
        """A login from ``peer`` succeeded: its failures are forgotten."""
        self._peers.pop(peer_key(peer), None)

    def __len__(self) -> int:
        return len(self._peers)

    def __repr__(self) -> str:
        return f"<LoginLimiter: {len(self._peers)} peers>"


# --- logins -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    """A person logged in: ``name``, the CSRF token their forms carry, and when the login
    ends unless used again (the clock's ``monotonic()``). The repr hides the token."""

    name: str
    csrf: str = field(repr=False)
    expires: float


@dataclass(slots=True)
class _Open:
    name: str
    csrf: str = field(repr=False)
    ends: float  # monotonic: ttl after the login
    seen: float  # monotonic: the last lookup
    stamp: bytes | None = field(repr=False)


def csrf_ok(login: Login | None, submitted: str | None) -> bool:
    """Whether ``submitted`` is ``login``'s CSRF token, compared in constant time."""
    if login is None or not submitted:
        return False
    return hmac.compare_digest(_encoded(login.csrf), _encoded(submitted))


class Sessions:
    """The logins of the page, in memory: a session id (the cookie's value) for each,
    drawn at random, and a CSRF token. A login ends ``ttl`` seconds after it began, after
    ``idle`` seconds without a lookup, on ``close``, or when it is the oldest of more than
    ``max_logins``. Session ids are kept by their keyed digest, never themselves."""

    __slots__ = ("_clock", "_idle", "_logins", "_max", "_ttl")

    def __init__(self, clock: Clock, *, ttl: float = SESSION_TTL, idle: float = SESSION_IDLE,
                 max_logins: int = SESSIONS_MAX) -> None:
        self._clock = clock
        self._ttl, self._idle, self._max = ttl, idle, max_logins
        self._logins: OrderedDict[bytes, _Open] = OrderedDict()  # oldest first

    @property
    def ttl(self) -> float:
        """The longest a login lasts (the cookie's Max-Age)."""
        return self._ttl

    def open(self, name: str, stamp: bytes | None = None) -> tuple[str, str]:
        """A new login of ``name``: ``(session id, csrf token)``. ``stamp``
        (``Credentials.stamp``) lets ``retain`` end it when ``name``'s token changes."""
        sid, csrf = token_urlsafe(32), token_urlsafe(32)
        now = self._clock.monotonic()
        if len(self._logins) >= self._max:
            self._drop_expired(now)
        self._logins[_keyed(_encoded(sid))] = _Open(name, csrf, now + self._ttl, now, stamp)
        while len(self._logins) > self._max:
            self._logins.popitem(last=False)
        return sid, csrf

    def _expires(self, entry: _Open) -> float:
        return min(entry.ends, entry.seen + self._idle)

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, e in self._logins.items() if now >= self._expires(e)]:
            del self._logins[key]

    def lookup(self, sid: str) -> Login | None:
        """The login of session id ``sid``, or None (unknown, ended or expired); a login
        found is used: its idle time starts again."""
        if not sid or len(sid) > 256:
            return None
        key = _keyed(_encoded(sid))
        entry = self._logins.get(key)
        if entry is None:
            return None
        now = self._clock.monotonic()
        if now >= self._expires(entry):
            del self._logins[key]
            return None
        entry.seen = now
        return Login(entry.name, entry.csrf, self._expires(entry))

    def close(self, sid: str) -> None:
        """End the login of ``sid`` (logout); nothing if there is none."""
        self._logins.pop(_keyed(_encoded(sid)), None)

    def retain(self, credentials: Credentials) -> int:
        """After the auth file is read again: end the logins whose name is gone from it,
        or whose token changed (a login opened with a ``stamp``). How many ended."""
        ended = [key for key, entry in self._logins.items()
                 if entry.name not in credentials
                 or (entry.stamp is not None and entry.stamp != credentials.stamp(entry.name))]
        for key in ended:
            del self._logins[key]
        return len(ended)

    def __len__(self) -> int:
        return len(self._logins)

    def __repr__(self) -> str:
        return f"<Sessions: {len(self._logins)} logins>"
