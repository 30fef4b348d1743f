"""Where alerts go: a channel sends one ``Message`` or raises ``DeliveryFailed``.

* ``AppriseChannel``: one Apprise URL (Slack, Telegram, e-mail, ntfy, a JSON webhook...).
  Apprise is imported on the first send, never before: a process without alerts never
  loads it.
* ``AlertmanagerChannel``: Prometheus Alertmanager's v2 API, ``POST /api/v2/alerts``, one
  alert per transition (labels ``alertname``, ``session_id``, ``session_name``,
  ``severity``), ``endsAt`` a little ahead while it fires (``refresh`` posts the open
  episodes again, as Alertmanager expects from a client) and at the resolution once over.

A channel's ``id`` is stable and printable; its URL holds tokens and is never shown: not
in ``DeliveryFailed``, not in a ``repr``, not in a log line. Apprise and the HTTP library
it uses log what they send (hosts, paths that hold tokens), so their loggers are cut off
from the process's log when Apprise is first loaded (``APPRISE_LOGGERS``); a failure is the
channel's ``alert.failed`` event, in words of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx
from pydantic import SecretStr

from supervisor.alerts.text import MAX_PARTS, TITLE_LIMIT, Message, advice, headline
from supervisor.clock import Clock, SystemClock
from supervisor.domain.episodes import Change, Episode, Kind, Transition

if TYPE_CHECKING:
    from apprise import Apprise

__all__ = ["ALERTNAMES", "APPRISE_LOGGERS", "MIN_BODY", "REFRESH_EVERY", "SEVERITIES",
           "AlertmanagerChannel", "AppriseChannel", "Channel", "DeliveryFailed", "body_limit",
           "parts_for", "routed"]

MIN_BODY: Final = 1_000
"""The least body a service is taken to hold, whatever its plugin says."""

REFRESH_EVERY: Final = 60.0
"""How often a firing alert is posted to Alertmanager again (``Sender``'s refresh)."""

APPRISE_LOGGERS: Final = ("apprise", "urllib3", "requests", "requests_oauthlib", "oauthlib")
"""Loggers that never reach the process's log: they name hosts and paths (tokens)."""

ALERTNAMES: Final = {
    Kind.NEEDS_PERSON: "WasendSessionNeedsPerson",
    Kind.GAVE_UP: "WasendSessionGaveUp",
    Kind.AUTH_FAILED: "WasendApiKeyRefused",
    Kind.API_UNREACHABLE: "WasendApiUnreachable",
    Kind.GONE: "WasendSessionGone",
    Kind.ZOMBIE: "WasendSessionZombie",
    Kind.SUPERVISION_STOPPED: "WasendSupervisionStopped",
}
SEVERITIES: Final = {
    Kind.NEEDS_PERSON: "critical",
    Kind.GAVE_UP: "critical",
    Kind.AUTH_FAILED: "critical",
    Kind.API_UNREACHABLE: "critical",
    Kind.GONE: "warning",
    Kind.ZOMBIE: "warning",
    Kind.SUPERVISION_STOPPED: "critical",
}


class DeliveryFailed(Exception):
    """A channel could not deliver a message. Its text names the channel by id and says
    why in words of ours: never a URL, a token or a library's own message."""

    def __init__(self, channel: str, reason: str = "not delivered") -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason


class Channel(Protocol):
    id: str  # stable, printable, no secret

    async def send(self, message: Message) -> None: ...  # raises DeliveryFailed


def routed(channel: Channel, kind: Kind, routes: Mapping[Kind, Collection[str]]) -> bool:
    """Whether ``channel`` takes messages of ``kind``, by Apprise's rule for tags: a kind
    with no route goes to every channel; a routed kind only to the Apprise channels that
    carry one of its tags. Alertmanager takes every kind (its own routing lives there)."""
    route = routes.get(kind)
    if route is None or not isinstance(channel, AppriseChannel):
        return True
    return bool(channel.tags & set(route))


def body_limit(channel: Channel) -> int | None:
    """The longest body ``channel`` takes in one message, or None when it has no limit of
    ours to keep (Alertmanager reads no body; an Apprise URL that chose its own
    ``overflow=`` handling gets the message whole)."""
    return channel.body_limit() if isinstance(channel, AppriseChannel) else None


def parts_for(channel: Channel, within: float) -> int:
    """How many messages one group may be cut into on ``channel``: up to ``MAX_PARTS``, as
    long as the service's own spacing between messages (Apprise waits 5.5 s between two
    ntfy posts, 1.2 s between Slack's) takes at most half of ``within`` (a send's timeout),
    so that the parts are never what makes a send time out. 1 for a channel that does not
    cut (``body_limit`` None)."""
    if not isinstance(channel, AppriseChannel) or channel.body_limit() is None:
        return 1
    spacing = channel.spacing()
    if spacing <= 0:
        return MAX_PARTS
    return max(1, min(MAX_PARTS, 1 + int(within / 2 // spacing)))


def _silence_apprise_logs() -> None:
    for name in APPRISE_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())


class AppriseChannel:
    """One Apprise URL, as a channel. ``tags`` are the URL's Apprise tags (``routed``).
    ``body_limit()`` is what its service takes in one message (the plugin's
    ``body_maxlen``, less the title where the service puts the title in the body), so that
    the sender cuts a storm's list into parts that each arrive whole (``render_parts``).
    A URL that says ``overflow=`` itself (``split``, ``truncate``, ``upstream``) gets the
    message whole and Apprise does as it says; otherwise Apprise truncates, as a last
    guard that never has anything to cut."""

    def __init__(self, id: str, url: SecretStr, tags: Collection[str] = ()) -> None:
        self.id = id
        self.tags: frozenset[str] = frozenset(tags)
        self._url = url
        self._apprise: Apprise | None = None
        self._limit: int | None = None

    def __repr__(self) -> str:
        return f"AppriseChannel({self.id!r})"

    def body_limit(self) -> int | None:
        """The longest body its service takes (see the class); loads Apprise."""
        self._load()
        return self._limit

    def spacing(self) -> float:
        """The seconds Apprise waits between two messages to its service (its throttle)."""
        return max(float(getattr(service, "request_rate_per_sec", 0) or 0)
                   for service in self._load())

    def _load(self) -> Apprise:
        if self._apprise is None:
            _silence_apprise_logs()
            import apprise  # noqa: PLC0415 (only a process with alerts loads it)

            notifier = apprise.Apprise()
            url = self._url.get_secret_value()
            if not notifier.add(url, tag=sorted(self.tags) or None):
                raise DeliveryFailed(self.id, "Apprise does not accept this URL "
                                     "(an unknown scheme, or a part missing)")
            if "overflow=" not in url.lower():
                # A storm's list is longer than a chat message may be (Telegram: 4,096
                # characters): the sender cuts it to this, in parts; Apprise truncating is
                # only the last guard, should a service count otherwise.
                for service in notifier:
                    service.overflow_mode = apprise.OverflowMode.TRUNCATE
                self._limit = max(MIN_BODY, min(
                    service.body_maxlen - (0 if service.title_maxlen > 0 else TITLE_LIMIT + 2)
                    for service in notifier))
            self._apprise = notifier
        return self._apprise

    async def send(self, message: Message) -> None:
        notifier = self._load()
        from apprise import NotifyFormat, NotifyType  # noqa: PLC0415 (loaded by _load)

        kind = NotifyType.FAILURE if message.change is Change.OPENED else NotifyType.SUCCESS
        try:
            result: Any = await notifier.async_notify(
                body=message.body, title=message.title, notify_type=kind,
                body_format=NotifyFormat.TEXT,
            )
        except Exception as error:  # Apprise's own text may hold the URL: not shown
            raise DeliveryFailed(self.id, f"Apprise raised {type(error).__name__}") from None
        if not result:
            status = getattr(getattr(result, "status", None), "name", "failure")
            raise DeliveryFailed(self.id, f"not delivered (Apprise: {str(status).lower()})")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class AlertmanagerChannel:
    """Prometheus Alertmanager's v2 API as a channel. ``base_url`` is where its API lives
    (``http://host:9093``, with a path prefix if it has one; credentials in it are used and
    never shown). ``ends_ahead``: how far ahead a firing alert's ``endsAt`` is set; a
    client is expected to post it again before then (``refresh``, every ``REFRESH_EVERY``
    seconds or so), or Alertmanager resolves it by itself. ``clock`` (wall time) sets
    ``endsAt`` from the time of sending."""

    def __init__(
        self,
        id: str,
        base_url: str,
        *,
        http: httpx.AsyncClient | None = None,
        ends_ahead: float = 5 * REFRESH_EVERY,
        timeout: float = 10.0,
        host: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.id = id
        self._endpoint = base_url.rstrip("/") + "/api/v2/alerts"
        self._http = http
        self._own_http = http is None
        self._ends_ahead = ends_ahead
        self._timeout = timeout
        self._host = host
        self._clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"AlertmanagerChannel({self.id!r})"

    def alert(self, transition: Transition, now: float) -> dict[str, Any]:
        """The v2 API's ``postableAlert`` for one transition at ``now``."""
        episode = transition.episode
        labels = {"alertname": ALERTNAMES[episode.kind], "severity": SEVERITIES[episode.kind],
                  "kind": episode.kind.value}
        if episode.subject:
            labels["session_id"] = episode.subject
            labels["session_name"] = episode.session_name or episode.subject
        annotations = {"summary": headline(Transition(Change.OPENED, episode,
                                                      episode.opened_at)),
                       "description": advice(episode.kind, Change.OPENED)}
        if self._host:
            annotations["host"] = self._host
        if episode.status:
            annotations["status"] = episode.status
        ends = transition.at if transition.change is Change.RESOLVED else (
            now + self._ends_ahead)
        return {"labels": labels, "annotations": annotations,
                "startsAt": _iso(episode.opened_at), "endsAt": _iso(ends)}

    async def send(self, message: Message) -> None:
        now = self._clock.now()
        await self._post([self.alert(t, now) for t in message.transitions])

    async def refresh(self, open: Sequence[Episode], now: float) -> None:
        """Post the open episodes again, firing until ``now + ends_ahead``."""
        if open:
            await self._post([self.alert(Transition(Change.OPENED, e, e.opened_at), now)
                              for e in open])

    async def _post(self, alerts: list[dict[str, Any]]) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False, timeout=self._timeout)
        try:
            response = await self._http.post(self._endpoint, json=alerts)
        except httpx.TimeoutException:
            raise DeliveryFailed(self.id, "Alertmanager did not answer in time") from None
        except httpx.HTTPError as error:
            raise DeliveryFailed(
                self.id, f"Alertmanager unreachable ({type(error).__name__})") from None
        if response.status_code >= 300:
            raise DeliveryFailed(self.id, f"Alertmanager answered HTTP {response.status_code}")

    async def aclose(self) -> None:
        """Close the HTTP client it made (not one it was given)."""
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
