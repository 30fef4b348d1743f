"""The command line of the alerts: ``alerts test``, ``alerts list``, ``check --no-alerts``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor import cli
from supervisor.alerts import build
from supervisor.config.model import AlertSettings
from supervisor.domain.episodes import Episode, Kind
from tests.conftest import reset_logging
from tests.unit.test_alerts_build import Recording

TOKEN = "xoxb7Qm2Lr9Tt4Kp1Zs8Wd3"
SLACK = f"slack://{TOKEN}/C0123"
HOOK = f"json://hooks.example.com/a?token={TOKEN}"
URLS_ENV = "WASEND_SUPERVISOR_ALERTS__URLS"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, no_state_env: None) -> Iterator[None]:
    for name in (URLS_ENV, "WASEND_SUPERVISOR_ALERTS__URLS_FILE",
                 "WASEND_SUPERVISOR_ALERTS__ALERTMANAGER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WASEND_SUPERVISOR_LOG_LEVEL", "warning")
    yield
    reset_logging()  # alerts test configures the logs


def use_channels(monkeypatch: pytest.MonkeyPatch, *outcomes: str) -> list[Recording]:
    made = [Recording(f"apprise-{n}", outcome) for n, outcome in enumerate(outcomes, 1)]

    def channels(alerts: AlertSettings, *, http: Any = None) -> list[Recording]:
        assert [c.id for c in made] == list(build.channel_ids(alerts))
        return made

    monkeypatch.setattr(build, "channels", channels)
    return made


# --- parsing -------------------------------------------------------------------------------


def test_check_takes_no_alerts() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["check", "--no-alerts"]).no_alerts is True
    assert parser.parse_args(["check"]).no_alerts is False


def test_alerts_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["alerts"]) == cli.EX_USAGE
    assert "alerts: error: the following arguments are required: COMMAND" in (
        capsys.readouterr().err)
    assert cli.main(["alerts", "send"]) == cli.EX_USAGE


def test_alerts_help_names_both_commands_and_the_exits(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["alerts", "--help"])
    out = capsys.readouterr().out
    assert "test" in out and "list" in out
    with pytest.raises(SystemExit):
        cli.main(["alerts", "test", "--help"])
    out = capsys.readouterr().out
    assert "3   no alerts configured" in out and "0   every channel took the test message" in out


# --- alerts test ---------------------------------------------------------------------------


def test_alerts_test_without_alerts_is_one_line_and_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["alerts", "test"]) == cli.EX_NO_ALERTS == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "wasend-supervisor: no alerts configured (set alerts.urls, alerts.urls_file or "
        "alerts.alertmanager_url)"]


def test_alerts_test_with_a_bad_setting_is_a_configuration_error(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URLS_ENV, f"slack//{TOKEN}")
    assert cli.main(["alerts", "test"]) == cli.EX_CONFIG
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "wasend-supervisor: configuration error: alerts.urls: item 1 is not an Apprise URL "
        f"(scheme://...) (from environment variable {URLS_ENV})"]


def test_alerts_test_needs_no_key_and_exits_0_when_every_channel_took_it(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URLS_ENV, f"{SLACK} {HOOK}")
    made = use_channels(monkeypatch, "ok", "ok")
    assert cli.main(["alerts", "test"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "apprise-1 (slack:// (alerts.urls item 1)): delivered",
        "apprise-2 (json:// (alerts.urls item 2)): delivered",
    ]
    assert [len(c.sent) for c in made] == [1, 1]


def test_alerts_test_exits_1_when_a_channel_did_not_take_it_and_shows_no_secret(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URLS_ENV, f"{SLACK} {HOOK}")
    made = use_channels(monkeypatch, "ok", "fail")

    async def leaky(message: object) -> None:
        from supervisor.alerts.channels import DeliveryFailed

        raise DeliveryFailed("apprise-2", f"refused by {HOOK}")  # one that forgot the rule

    made[1].send = leaky  # type: ignore[method-assign]
    assert cli.main(["alerts", "test"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "apprise-1 (slack:// (alerts.urls item 1)): delivered",
        "apprise-2 (json:// (alerts.urls item 2)): failed: refused by [REDACTED]",
    ]
    assert TOKEN not in captured.out + captured.err


# --- alerts list ---------------------------------------------------------------------------


class EpisodeStore:
    """The store's ``open_episodes`` (helper "episodes" adds it to the SQLite store)."""

    location = "/var/lib/wasend-supervisor/state.db"

    def __init__(self, episodes: list[Episode]) -> None:
        self.episodes, self.closed = episodes, False

    def open_episodes(self) -> list[Episode]:
        return self.episodes

    def close(self) -> None:
        self.closed = True


def with_store(monkeypatch: pytest.MonkeyPatch, store: EpisodeStore) -> None:
    def opened(args: Any, *, unknown: int | None = None) -> tuple[Any, EpisodeStore]:
        return None, store

    monkeypatch.setattr(cli, "_open_state", opened)


EPISODES = [
    Episode(Kind.API_UNREACHABLE, "", 1_700_000_100.0, detail="polls failing for 2m30s"),
    Episode(Kind.NEEDS_PERSON, "sales", 1_700_000_000.0, session_name="Sales desk",
            status="SCAN_QR_CODE", detail="waiting for its QR code to be scanned"),
]


def test_alerts_list_shows_the_open_episodes_oldest_first(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    store = EpisodeStore(EPISODES)
    with_store(monkeypatch, store)
    assert cli.main(["alerts", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KIND", "SESSION", "NAME", "STATUS", "OPENED", "FOR", "DETAIL"]
    assert lines[1].startswith("needs_person     sales    Sales desk  SCAN_QR_CODE  "
                               "2023-11-14T22:13:20Z  ")
    assert lines[2].startswith("api_unreachable  -        -           -             "
                               "2023-11-14T22:15:00Z  ")
    assert lines[-1] == f"2 open episode(s) in {store.location}"
    assert store.closed


def test_alerts_list_json(capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    with_store(monkeypatch, EpisodeStore(EPISODES))
    assert cli.main(["alerts", "list", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state_path"] == EpisodeStore.location
    assert [e["kind"] for e in shown["episodes"]] == ["needs_person", "api_unreachable"]
    assert shown["episodes"][0] == {
        "kind": "needs_person", "session_id": "sales", "session_name": "Sales desk",
        "status": "SCAN_QR_CODE", "opened_at": "2023-11-14T22:13:20Z",
        "open_for_s": shown["episodes"][0]["open_for_s"],
        "detail": "waiting for its QR code to be scanned"}
    assert shown["episodes"][1]["session_id"] is None


def test_alerts_list_with_none_open(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with_store(monkeypatch, EpisodeStore([]))
    assert cli.main(["alerts", "list"]) == 0
    assert capsys.readouterr().out == f"0 open episode(s) in {EpisodeStore.location}\n"


def test_alerts_list_without_a_state_file_yet(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    assert cli.main(["alerts", "list", "--state-path", str(path)]) == 0
    assert capsys.readouterr().err == (
        f"wasend-supervisor: no state file at {path} yet (run or check creates it)\n")


@pytest.mark.parametrize("mode", ["run", "check"])
def test_run_and_check_hand_the_alert_urls_to_the_process_secrets(
        mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor import logs

    monkeypatch.setenv("WASEND_API_KEY", "sk-cli-test-key")
    monkeypatch.setenv(URLS_ENV, SLACK)
    seen: list[Any] = []

    def configure(*args: Any, secrets: Any = None, **kwargs: Any) -> None:
        seen.append(secrets)

    async def instead(*args: Any) -> int:
        return 0

    monkeypatch.setattr(logs, "configure", configure)
    monkeypatch.setattr(cli, "_run_async" if mode == "run" else "_check_async", instead)
    assert cli.main([mode]) == 0
    [secrets] = seen
    assert secrets.redact(f"x {SLACK} y {TOKEN}") == "x [REDACTED] y [REDACTED]"
