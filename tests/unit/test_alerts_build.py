"""Tests of supervisor.alerts.build: the channels made from the settings, their ids and
routes, the URLs file's permission warning, and the test message sent to each."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import respx
from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.alerts import build
from supervisor.config.load import load_settings
from supervisor.config.model import AlertSettings, Settings
from supervisor.domain import events as ev
from supervisor.domain.episodes import Change, Kind

KEY = "sk_test_Zq8vN3pL7wR2xK9mT4yB6cD1"
TOKEN = "xoxb7Qm2Lr9Tt4Kp1Zs8Wd3"
SLACK = f"slack://{TOKEN}/C0123"
HOOK = f"json://hooks.example.com/a?token={TOKEN}"
MAIL = "mailtos://ops:Pa55-w0rd-long@mail.example.com"


def alerts_with(tmp_path: Path, *, file_mode: int = 0o600, **env: str) -> AlertSettings:
    path = tmp_path / "alert-urls"
    path.write_text(f"ops={MAIL}\n")
    path.chmod(file_mode)
    settings = load_settings(
        env={"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_ALERTS__URLS_FILE": str(path), **env},
        secrets_dirs=[])
    return settings.alerts


class Recording:
    """A channel that does what it is told: deliver, fail, hang or break."""

    def __init__(self, id: str, outcome: str = "ok") -> None:
        self.id, self.outcome = id, outcome
        self.sent: list[object] = []

    async def send(self, message: object) -> None:
        from supervisor.alerts.channels import DeliveryFailed

        self.sent.append(message)
        if self.outcome == "fail":
            raise DeliveryFailed(self.id, "HTTP 500 from the service")
        if self.outcome == "hang":
            await asyncio.Event().wait()
        if self.outcome == "break":
            raise RuntimeError(f"boom {SLACK}")


def test_one_channel_per_url_in_order_then_alertmanager(tmp_path: Path) -> None:
    from supervisor.alerts.channels import AlertmanagerChannel, AppriseChannel

    alerts = alerts_with(tmp_path, WASEND_SUPERVISOR_ALERTS__URLS=f"oncall={SLACK} {HOOK}",
                         WASEND_SUPERVISOR_ALERTS__ALERTMANAGER_URL="http://127.0.0.1:9093")
    made = build.channels(alerts)
    assert [c.id for c in made] == ["apprise-1", "apprise-2", "apprise-3", "alertmanager"]
    assert build.channel_ids(alerts) == tuple(c.id for c in made)
    assert [type(c) for c in made] == [AppriseChannel] * 3 + [AlertmanagerChannel]


def test_no_channels_without_alerts() -> None:
    alerts = Settings().alerts
    assert build.channels(alerts) == []
    assert build.channel_ids(alerts) == ()


def test_the_routes_by_kind_and_each_channel_with_its_urls_tags(tmp_path: Path) -> None:
    alerts = alerts_with(tmp_path, WASEND_SUPERVISOR_ALERTS__URLS=f"oncall={SLACK} {HOOK}",
                         WASEND_SUPERVISOR_ALERTS__ROUTES="needs_person=oncall gone=ops,oncall")
    assert build.routes(alerts) == {Kind.NEEDS_PERSON: ("oncall",), Kind.GONE: ("ops", "oncall")}
    assert all(isinstance(kind, Kind) for kind in build.routes(alerts))
    from supervisor.alerts.channels import AppriseChannel

    made = build.channels(alerts)
    assert [set(c.tags) for c in made if isinstance(c, AppriseChannel)] == [
        {"oncall"}, set(), {"ops"}]
    assert build.routes(Settings().alerts) == {}


def test_each_channel_is_described_without_a_secret(tmp_path: Path) -> None:
    alerts = alerts_with(
        tmp_path, WASEND_SUPERVISOR_ALERTS__URLS=SLACK,
        WASEND_SUPERVISOR_ALERTS__ALERTMANAGER_URL="https://am:Pa55-w0rd-long@am.example:9093")
    names = build.describe(alerts)
    assert names == {
        "apprise-1": "slack:// (alerts.urls item 1)",
        "apprise-2": f"mailtos:// ({tmp_path / 'alert-urls'} line 1)",
        "alertmanager": "Alertmanager at https://am.example:9093",
    }


def test_a_urls_file_others_can_read_is_warned_about_when_the_channels_are_built(
        tmp_path: Path) -> None:
    alerts = alerts_with(tmp_path, file_mode=0o644)
    with capture_logs() as logs:
        build.channels(alerts)
    path = tmp_path / "alert-urls"
    assert logs == [{"event": ev.ALERT_URLS_FILE_PERMISSIONS, "log_level": "warning",
                     "path": str(path), "mode": "0644", "readable_by": "other users",
                     "hint": f"chmod 600 {path}"}]
    with capture_logs() as quiet:
        build.channels(alerts_with(tmp_path))
    assert quiet == []


def test_the_test_message_says_it_is_one_and_holds_a_resolved_episode() -> None:
    message = build.probe_message("host-1", 1000.0)
    assert message.change == Change.RESOLVED
    [transition] = message.transitions
    assert transition.change == Change.RESOLVED and transition.at == 1000.0
    assert transition.episode.subject == build.TEST_SUBJECT
    assert "test" in message.title and "host-1" in message.title
    assert "Nothing is wrong" in message.body


def test_send_test_reports_each_channel_in_order_bounded_by_the_timeout() -> None:
    channels = [Recording("apprise-1"), Recording("apprise-2", "fail"),
                Recording("apprise-3", "hang"), Recording("alertmanager", "break")]
    message = build.probe_message("h", 1.0)
    results = asyncio.run(build.send_test(channels, message, timeout=0.05))
    assert results == [
        ("apprise-1", None),
        ("apprise-2", "HTTP 500 from the service"),
        ("apprise-3", "no answer within 0.05 s"),
        ("alertmanager", "not delivered (RuntimeError)"),  # never the exception's text
    ]
    assert all(c.sent == [message] for c in channels)


def test_the_alertmanager_channel_posts_to_its_url_through_the_client_given() -> None:
    alerts = AlertSettings(alertmanager_url=SecretStr("http://127.0.0.1:9093/"))

    async def go() -> tuple[str, int]:
        async with httpx.AsyncClient() as client, respx.mock(assert_all_called=True) as mock:
            route = mock.post("http://127.0.0.1:9093/api/v2/alerts").respond(200)
            [channel] = build.channels(alerts, http=client)
            await channel.send(build.probe_message("h", 1.0))
            return channel.id, route.call_count

    assert asyncio.run(go()) == ("alertmanager", 1)
