"""The alert a leading replica sends itself when it stops for want of its PostgreSQL
database (``supervision_stopped``): at once, to a real HTTP receiver, without the outbox
(which is in that database), and its resolution once the database answers again."""

from __future__ import annotations

from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.alert_wiring import Alerts
from supervisor.config.model import AlertSettings, Settings
from supervisor.domain import events as ev
from supervisor.domain.secrets import Secrets
from supervisor.state.store import MemoryStore
from tests.alerts.receivers import HttpReceiver
from tests.fakes import FakeClock

KEY = "k" * 40


def build(receiver: HttpReceiver) -> Alerts:
    settings = Settings(api_key=SecretStr(KEY), alerts=AlertSettings(
        urls=(SecretStr(f"json://{receiver.url}/hooks/alerts"),)))
    return Alerts.build(settings, MemoryStore(), FakeClock(), Secrets())


async def test_a_stopped_leader_is_alerted_at_once_and_resolved_when_the_database_answers(
        receiver: HttpReceiver) -> None:
    alerts = build(receiver)
    try:
        with capture_logs() as logs:
            await alerts.supervision_stopped(
                "web-2", "lost the connection to postgresql://db:5432/wasend: refused",
                1_764_590_400.0)
        (opened,) = [r.json() for r in receiver.requests]
        assert opened["title"] == ("Supervision stopped: replica 'web-2' cannot reach its "
                                   "database")
        assert "refused" in opened["message"] and opened["type"] == "failure"
        assert "Check the PostgreSQL server" in opened["message"]
        sent = [e for e in logs if e["event"] == ev.ALERT_SENT]
        assert [(e["kind"], e["change"], e["direct"]) for e in sent] == [
            ("supervision_stopped", "opened", True)]
        assert await alerts.store.run(alerts.store.pending_count) == 0  # no outbox row

        await alerts.supervision_resumed(1_764_590_460.0)
        await alerts.supervision_resumed(1_764_590_470.0)  # said once
        resolved = [r.json() for r in receiver.requests][1:]
        assert [r["title"] for r in resolved] == [
            "Resolved: replica 'web-2' reaches its database again"]
        assert resolved[0]["type"] == "success" and "after 60 s" in resolved[0]["message"]
    finally:
        await alerts.aclose()


async def test_a_receiver_that_is_down_is_told_in_the_log_and_nothing_waits(
        receiver: HttpReceiver) -> None:
    alerts = build(receiver)
    receiver.status = 500
    try:
        with capture_logs() as logs:
            await alerts.supervision_stopped("web-2", "timeout", 1_764_590_400.0)
        failed = [e for e in logs if e["event"] == ev.ALERT_FAILED]
        assert [(e["kind"], e["direct"]) for e in failed] == [("supervision_stopped", True)]
        assert receiver.url not in str(failed)
    finally:
        await alerts.aclose()
