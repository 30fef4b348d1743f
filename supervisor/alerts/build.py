"""The alert channels, made from ``settings.alerts``, and what ``alerts test`` sends them.

One ``AppriseChannel`` per Apprise URL, in the order of ``AlertSettings.channel_urls()``
(``alerts.urls``, then ``alerts.urls_file``'s lines), named ``apprise-1``, ``apprise-2``...;
and one ``AlertmanagerChannel``, named ``alertmanager``, when ``alerts.alertmanager_url`` is
set. A channel's id is stable while the configuration is, and never holds a secret: the
outbox keeps rows by it. Each Apprise channel carries its URL's tags; ``routes`` hands the
sender ``alerts.routes`` by kind (a routed kind goes only to the URLs carrying one of its
tags, any other kind to every URL; Alertmanager gets every kind).

Apprise is imported by the channels, on their first send, never here.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

from supervisor.domain import events as ev
from supervisor.domain.episodes import Change, Episode, Kind, Transition

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable

    import httpx

    from supervisor.alerts.channels import Channel
    from supervisor.alerts.outbox import Outbox
    from supervisor.alerts.sender import Delivery, Sender
    from supervisor.alerts.text import Message
    from supervisor.clock import Clock
    from supervisor.config.model import AlertSettings
    from supervisor.domain.secrets import Secrets

__all__ = [
    "ALERTMANAGER_ID",
    "APPRISE_PREFIX",
    "TEST_SUBJECT",
    "aclose",
    "channel_ids",
    "channels",
    "describe",
    "probe_message",
    "routes",
    "send_test",
    "sender",
    "warn_urls_file_exposure",
]

APPRISE_PREFIX = "apprise-"
ALERTMANAGER_ID = "alertmanager"
TEST_SUBJECT = "wasend-supervisor-alerts-test"
"""The session id of the test message's one (resolved) episode: no session has it."""

log = structlog.get_logger("supervisor.alerts")


def channel_ids(alerts: AlertSettings) -> tuple[str, ...]:
    """Every channel's id, in order: ``apprise-1``... then ``alertmanager``."""
    ids = [f"{APPRISE_PREFIX}{n}" for n in range(1, len(alerts.channel_urls()) + 1)]
    if alerts.alertmanager_url is not None:
        ids.append(ALERTMANAGER_ID)
    return tuple(ids)


def routes(alerts: AlertSettings) -> dict[Kind, tuple[str, ...]]:
    """``alerts.routes`` by kind, as the sender takes them: a kind routed to tags goes only
    to the Apprise channels carrying one of them (``channels.routed``)."""
    return {Kind(kind): tags for kind, tags in alerts.routes}


def describe(alerts: AlertSettings) -> dict[str, str]:
    """Each channel's id with what a person recognises it by, and nothing secret:
    ``slack:// (alerts.urls item 1)``, ``Alertmanager at http://am:9093``."""
    names = {
        f"{APPRISE_PREFIX}{n}": f"{entry.scheme}:// ({entry.where})"
        for n, entry in enumerate(alerts.channel_urls(), 1)
    }
    if alerts.alertmanager_url is not None:
        parts = urlsplit(alerts.alertmanager_url.get_secret_value())
        names[ALERTMANAGER_ID] = (
            f"Alertmanager at {parts.scheme}://{parts.netloc.rpartition('@')[2]}")
    return names


def warn_urls_file_exposure(alerts: AlertSettings) -> None:
    """One ``alert.urls_file_permissions`` warning when others than the supervisor could
    read ``alerts.urls_file`` when it was read (at start, and on each reload)."""
    read = alerts.urls_file_read()
    if read is None or read.exposure is None:
        return
    mode, who = read.exposure
    log.warning(ev.ALERT_URLS_FILE_PERMISSIONS, path=str(read.path), mode=f"{mode:04o}",
                readable_by=who, hint=f"chmod 600 {read.path}")


def channels(
    alerts: AlertSettings, *, http: httpx.AsyncClient | None = None, clock: Clock | None = None
) -> list[Channel]:
    """The channels ``alerts`` configures, in ``channel_ids`` order (``http``: the client
    Alertmanager is posted with, else its own). Warns about a URLs file others can read."""
    # Imported here: the channels' module is what imports Apprise (on a first send).
    from supervisor.alerts.channels import AlertmanagerChannel, AppriseChannel  # noqa: PLC0415

    warn_urls_file_exposure(alerts)
    made: list[Channel] = [
        AppriseChannel(f"{APPRISE_PREFIX}{n}", entry.url, tags=entry.tags)
        for n, entry in enumerate(alerts.channel_urls(), 1)
    ]
    if alerts.alertmanager_url is not None:
        made.append(AlertmanagerChannel(
            ALERTMANAGER_ID, alerts.alertmanager_url.get_secret_value(), http=http,
            host=socket.gethostname(), clock=clock))
    return made


def sender(
    alerts: AlertSettings,
    outbox: Outbox,
    clock: Clock,
    *,
    secrets: Secrets,
    rng: random.Random | None = None,
    group_window: float | None = None,
    send_timeout: float | None = None,
    open_episodes: Callable[[], Sequence[Episode]] | None = None,
    observers: Iterable[Callable[[Delivery], None]] = (),
) -> Sender:
    """The sender of what the outbox holds, to the channels ``alerts`` configures, as
    ``run`` and ``check`` use it (``group_window``: ``alerts.group_window`` unless given;
    ``check`` sends what its one pass queued at once)."""
    from supervisor.alerts.sender import SEND_TIMEOUT, Sender  # noqa: PLC0415  (as above)

    return Sender(
        outbox,
        channels(alerts, clock=clock),
        clock,
        group_window=alerts.group_window if group_window is None else group_window,
        max_age=alerts.max_age,
        queue_max=alerts.queue_max,
        send_timeout=SEND_TIMEOUT if send_timeout is None else send_timeout,
        rng=rng,
        status_page_url=alerts.status_page_url,
        secrets=secrets,
        routes=routes(alerts),
        open_episodes=open_episodes,
        observers=observers,
    )


async def aclose(made: Sequence[Channel]) -> None:
    """Close what the channels opened (Alertmanager's HTTP client)."""
    for channel in made:
        close = getattr(channel, "aclose", None)
        if close is not None:
            await close()


def probe_message(host: str, now: float) -> Message:
    """What ``alerts test`` sends: a message that says it is a test, carrying one episode
    already resolved (of a session id no session has), so that Alertmanager records it
    resolved and pages nobody."""
    from supervisor.alerts.text import Message  # noqa: PLC0415  (as the channels, above)

    episode = Episode(
        kind=Kind.NEEDS_PERSON,
        subject=TEST_SUBJECT,
        opened_at=now,
        session_name="alerts test",
        status="TEST",
        detail="a test message from wasend-supervisor alerts test; nothing is wrong",
    )
    return Message(
        kind=Kind.NEEDS_PERSON,
        change=Change.RESOLVED,
        transitions=(Transition(Change.RESOLVED, episode, now),),
        title=f"wasend-supervisor on {host}: test alert",
        body=(f"This is a test message from wasend-supervisor on {host} "
              "(wasend-supervisor alerts test). Nothing is wrong; no action is needed."),
    )


async def send_test(
    targets: Sequence[Channel], message: Message, *, timeout: float  # noqa: ASYNC109  (per send)
) -> list[tuple[str, str | None]]:
    """Send ``message`` to every channel at once, each bounded by ``timeout`` seconds:
    (id, None) for each delivered, (id, why not) for each other, in the order given.
    Why not is safe to print: a ``DeliveryFailed``'s reason, a timeout, or an exception's
    type (never its text, which might quote a URL)."""
    from supervisor.alerts.channels import DeliveryFailed  # noqa: PLC0415  (as above)

    async def attempt(channel: Channel) -> str | None:
        try:
            async with asyncio.timeout(timeout):
                await channel.send(message)
        except DeliveryFailed as exc:  # its reason: the line names the channel already
            return str(getattr(exc, "reason", "") or exc) or "not delivered"
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except Exception as exc:  # reported, not raised: one line per channel
            return f"not delivered ({type(exc).__name__})"
        return None

    results = await asyncio.gather(*(attempt(channel) for channel in targets))
    return [(channel.id, result) for channel, result in zip(targets, results, strict=True)]
