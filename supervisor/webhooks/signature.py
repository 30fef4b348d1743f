"""Whether to believe a webhook came from the provider, and came once.

With a key (``webhooks.hmac_key``), a request must carry ``X-Webhook-Hmac``: the hex HMAC
of its raw body under the key, with the algorithm ``X-Webhook-Hmac-Algorithm`` names
(``sha512``, as WAHA sends it, or ``sha256``; none said means ``sha512``), compared in
constant time. ``X-Webhook-Timestamp`` (ms since the epoch) must be within ``max_skew``
seconds of now, and an event's id (the body's ``id``, else ``X-Webhook-Request-Id``) is
accepted once within that window: a replay is refused, and so is a delivery WAHA
retries after an answer it did not get (harmless: the first was acted on).

Without a key, only when ``allow_unsigned`` says so on purpose, and then only from
loopback peers or the networks of ``allow_from``; the timestamp and the ids are checked
the same way when the headers are there.

``Refusal`` reasons are stable words for the log and the metrics: ``signature``,
``skew``, ``duplicate``, ``peer``. The key never leaves this module: not in a repr, a
message or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Final

from pydantic import SecretStr

from supervisor.clock import Clock

__all__ = ["ALGORITHMS", "MAX_REMEMBERED", "Checker", "Refusal"]

ALGORITHMS: Final = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
MAX_REMEMBERED: Final = 200_000  # event ids kept for the replay window, at most
SIGNATURE: Final = "signature"
SKEW: Final = "skew"
DUPLICATE: Final = "duplicate"
PEER: Final = "peer"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refusal(Exception):
    """Why a request is not believed: ``reason`` is one of the module's words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _peer_allowed(peer: str, networks: Sequence[_Network]) -> bool:
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or any(address in network for network in networks)


class Checker:
    """The checks above for one key (or none, when unsigned events are allowed)."""

    def __init__(
        self,
        key: SecretStr | None,
        clock: Clock,
        *,
        max_skew: float = 300.0,
        allow_from: Sequence[str] = (),
        remembered: int = MAX_REMEMBERED,
    ) -> None:
        self._key = None if key is None else key.get_secret_value().encode()
        self._clock = clock
        self.max_skew = max_skew
        self._networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allow_from)
        self._seen: OrderedDict[str, float] = OrderedDict()  # id: until when it is kept
        self._remembered = remembered

    def __repr__(self) -> str:
        return f"Checker(signed={self._key is not None}, max_skew={self.max_skew:g})"

    @property
    def signed(self) -> bool:
        return self._key is not None

    def check(self, headers: Mapping[str, str], body: bytes, peer: str) -> None:
        """Raises ``Refusal`` unless the request is to be believed (the event's id is
        looked at once the body is read: ``duplicate``, ``remember``). ``headers``:
        lower-case names."""
        if self._key is None:
            if not _peer_allowed(peer, self._networks):
                raise Refusal(PEER)
        else:
            algorithm = ALGORITHMS.get(
                headers.get("x-webhook-hmac-algorithm", "sha512").strip().lower())
            given = headers.get("x-webhook-hmac", "").strip().lower()
            if algorithm is None or not given:
                raise Refusal(SIGNATURE)
            wanted = hmac.new(self._key, body, algorithm).hexdigest()
            if not hmac.compare_digest(wanted.encode(), given.encode("ascii", "replace")):
                raise Refusal(SIGNATURE)
        stamp = headers.get("x-webhook-timestamp")
        if stamp is not None or self._key is not None:
            try:
                sent = int(stamp or "") / 1000
            except ValueError:
                raise Refusal(SKEW) from None
            if abs(self._clock.now() - sent) > self.max_skew:
                raise Refusal(SKEW)

    def duplicate(self, event_id: str | None) -> bool:
        """Whether ``event_id`` was accepted already within the window."""
        if event_id is None:
            return False
        now = self._clock.now()
        seen = self._seen
        while seen:  # forget what is past its window (oldest first)
            oldest, until = next(iter(seen.items()))
            if until > now and len(seen) < self._remembered:
                break
            del seen[oldest]
        return event_id in seen

    def remember(self, event_id: str | None) -> None:
        """``event_id`` was accepted: a replay of it within the window is a duplicate
        (kept for twice ``max_skew``: a timestamp may be that far either side of now)."""
        if event_id is not None:
            self._seen[event_id] = self._clock.now() + 2 * self.max_skew
