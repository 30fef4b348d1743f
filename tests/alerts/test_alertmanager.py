"""The Alertmanager channel against Debian's prometheus-alertmanager on 127.0.0.1: an alert
read back through ``GET /api/v2/alerts`` active, kept firing by ``refresh``, then resolved
(gone from the active alerts, and Alertmanager's own "resolved" notification sent)."""

from __future__ import annotations

from datetime import datetime

import pytest

from supervisor.alerts.channels import AlertmanagerChannel, DeliveryFailed
from supervisor.alerts.sender import Sender
from supervisor.alerts.text import render
from supervisor.clock import SystemClock
from supervisor.domain.episodes import Change, Episode, Kind, Transition
from tests.alerts.conftest import Alertmanager
from tests.alerts.receivers import free_port
from tests.fakes import MemoryOutbox
from tests.waiting import until


def iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def episode(subject: str, at: float, name: str = "") -> Episode:
    return Episode(Kind.NEEDS_PERSON, subject, at, name or f"Shop {subject}", "SCAN_QR_CODE")


async def test_an_alert_is_active_kept_firing_then_resolved(alertmanager: Alertmanager) -> None:
    clock = SystemClock()
    now = clock.now()
    channel = AlertmanagerChannel("alertmanager", alertmanager.url, ends_ahead=300.0,
                                  clock=clock, host="shop-box")
    opened = Transition(Change.OPENED, episode("sess-1", now - 30, "Shop 1"), now - 30)
    await channel.send(render(Kind.NEEDS_PERSON, Change.OPENED, [opened], host="shop-box"))

    (alert,) = alertmanager.alerts()
    assert alert["status"]["state"] == "active"
    assert alert["labels"] == {"alertname": "WasendSessionNeedsPerson", "severity": "critical",
                               "kind": "needs_person", "session_id": "sess-1",
                               "session_name": "Shop 1"}
    assert iso(alert["startsAt"]) == pytest.approx(now - 30, abs=0.01)
    assert iso(alert["endsAt"]) == pytest.approx(now + 300, abs=5)
    assert alert["annotations"]["host"] == "shop-box"
    assert "WhatsApp > Linked devices" in alert["annotations"]["description"]
    await until(lambda: [a for a in alertmanager.notifications() if a["status"] == "firing"])

    later = clock.now() + 120.0  # a refresh moves endsAt on, the same alert (one fingerprint)
    await channel.refresh([opened.episode], later)
    (again,) = alertmanager.alerts()
    assert again["fingerprint"] == alert["fingerprint"]
    assert iso(again["endsAt"]) == pytest.approx(later + 300, abs=5)

    closed = Transition(Change.RESOLVED, opened.episode, clock.now())
    await channel.send(render(Kind.NEEDS_PERSON, Change.RESOLVED, [closed], host="shop-box"))
    assert alertmanager.alerts() == []
    await until(lambda: [a for a in alertmanager.notifications() if a["status"] == "resolved"],
                timeout=20.0)
    (done,) = [a for a in alertmanager.notifications() if a["status"] == "resolved"]
    assert done["labels"]["session_id"] == "sess-1"
    await channel.aclose()


async def test_a_group_is_one_post_of_one_alert_per_session(alertmanager: Alertmanager) -> None:
    clock = SystemClock()
    now = clock.now()
    storm = [Transition(Change.OPENED, episode(f"s{i}", now), now) for i in range(200)]
    outbox = MemoryOutbox()
    channel = AlertmanagerChannel("alertmanager", alertmanager.url, clock=clock)
    outbox.enqueue(["alertmanager"], storm, clock.now())
    report = await Sender(outbox, [channel], clock, group_window=0.0, max_age=3600.0,
                          queue_max=1000, host="h").run_once(
        clock.now())
    assert report.sent == 1
    alerts = alertmanager.alerts()
    assert sorted(a["labels"]["session_id"] for a in alerts) == sorted(f"s{i}" for i in range(200))
    await channel.aclose()


async def test_a_key_wide_alert_has_no_session_labels(alertmanager: Alertmanager) -> None:
    clock = SystemClock()
    refused = Transition(Change.OPENED, Episode(Kind.AUTH_FAILED, "", clock.now()), clock.now())
    channel = AlertmanagerChannel("alertmanager", alertmanager.url, clock=clock)
    await channel.send(render(Kind.AUTH_FAILED, Change.OPENED, [refused], host="h"))
    (alert,) = alertmanager.alerts()
    assert alert["labels"] == {"alertname": "WasendApiKeyRefused", "severity": "critical",
                               "kind": "auth_failed"}
    await channel.aclose()


async def test_an_alertmanager_that_is_down_is_a_failure_without_its_credentials() -> None:
    channel = AlertmanagerChannel("alertmanager", f"http://ops:s3cr3t-pw@127.0.0.1:{free_port()}")
    opened = Transition(Change.OPENED, episode("a", 1.0), 1.0)
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(render(Kind.NEEDS_PERSON, Change.OPENED, [opened], host="h"))
    assert str(caught.value) == "alertmanager: Alertmanager unreachable (ConnectError)"
    assert "s3cr3t" not in repr(channel)
    await channel.aclose()


async def test_an_answer_that_is_not_a_success_is_a_failure(alertmanager: Alertmanager) -> None:
    channel = AlertmanagerChannel("alertmanager", alertmanager.url + "/no/such/prefix")
    opened = Transition(Change.OPENED, episode("a", 1.0), 1.0)
    with pytest.raises(DeliveryFailed, match=r"^alertmanager: Alertmanager answered HTTP 404$"):
        await channel.send(render(Kind.NEEDS_PERSON, Change.OPENED, [opened], host="h"))
    await channel.aclose()
