"""Alerts end to end as a user has them: real ``run`` and ``check`` processes against the
simulator over real HTTP, sending through Apprise's ``json://`` to a real HTTP receiver on
127.0.0.1, on one real state file.

What is asserted is what a person would see: the messages the receiver got (how many,
opened or resolved, which sessions), what the processes logged (their JSON logs at debug
level), what ``alerts list``, ``config`` and ``/metrics`` show, and that the receiver
URL's token is in none of it.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from supervisor.simulator import SimulatorServer
from supervisor.state.sqlite import SqliteStore
from tests.alerts.receivers import HttpReceiver, free_port
from tests.e2e.conftest import ROOT, SimFactory, cli
from tests.faults.conftest import start_run
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TOKEN = "hk7Qm2Lr9Tt4Kp1Zs8Wd3Xc5"  # the receiver URL's path token: a secret
GROUP_WINDOW = "0.3"  # seconds: alerts.group_window, short for the tests
QR = "SCAN_QR_CODE"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    running = HttpReceiver().start()
    yield running
    running.stop()


def hook(receiver: HttpReceiver) -> str:
    """The receiver's Apprise URL, with a token in its path."""
    return f"json://{receiver.url}/hooks/{TOKEN}"


def alerting(receiver: HttpReceiver, **more: str) -> dict[str, str]:
    """The settings that send alerts to ``receiver`` (``WASEND_SUPERVISOR_`` names)."""
    return {"ALERTS__URLS": hook(receiver), "ALERTS__GROUP_WINDOW": GROUP_WINDOW, **more}


def posts(receiver: HttpReceiver) -> list[dict[str, Any]]:
    """What the receiver got, as Apprise's json:// payloads."""
    return [request.json() for request in list(receiver.requests)]


def notices(receiver: HttpReceiver) -> list[str]:
    """Each post's notice type: ``failure`` an opening, ``success`` a resolution."""
    return [post["type"] for post in posts(receiver)]


def parse(text: str) -> list[dict[str, Any]]:
    """A JSON log's events, in order (a line cut by a SIGKILL is left out)."""
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            found.append(event)
    return found


def events(log: Path) -> list[dict[str, Any]]:
    return parse(log.read_text(encoding="utf-8", errors="replace"))


def named(found: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [e for e in found if e["event"] in names]


def polls(log: Path) -> int:
    return len(named(events(log), "poll.completed"))


def more_polls(log: Path, count: int = 3) -> None:
    """Wait until the process has completed ``count`` more polls."""
    start = polls(log)
    wait_for(lambda: polls(log) >= start + count, describe=lambda: log.read_text()[-3000:])


def logged(log: Path, name: str) -> bool:
    return bool(named(events(log), name))


def stop(process: subprocess.Popen[bytes], *, kill: bool = False) -> int:
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    return process.wait(timeout=15)


def cli_env(server: SimulatorServer, state: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``check``, ``alerts list`` or ``config`` on ``state``, logging
    JSON at debug level; ``settings`` are further ``WASEND_SUPERVISOR_<NAME>`` values."""
    return {"WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": server.api_key,
            "WASEND_SUPERVISOR_STATE_PATH": str(state),
            "WASEND_SUPERVISOR_REQUEST_TIMEOUT": "2",
            "WASEND_SUPERVISOR_LOG_FORMAT": "json", "WASEND_SUPERVISOR_LOG_LEVEL": "debug",
            **{f"WASEND_SUPERVISOR_{name}": value for name, value in settings.items()}}


def queued(state: Path) -> tuple[int, int]:
    """(open episodes, undelivered outbox rows) in the state file."""
    store = SqliteStore.open_readonly(state)
    try:
        return len(store.open_episodes()), store.pending_count()
    finally:
        store.close()


def test_one_qr_session_gives_one_opened_and_one_resolved_message_across_a_sigkill(
    simulator: SimFactory, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "shop-q", "session_name": "Shop Q"}],
                        "session_count": 0})
    state, first_log, second_log = tmp_path / "state.db", tmp_path / "1.log", tmp_path / "2.log"
    first = start_run(server, state, first_log, **alerting(receiver))
    try:
        more_polls(first_log, 2)
        server.simulator.set_status("shop-q", QR)
        wait_for(lambda: receiver.requests)
        more_polls(first_log, 5)  # more polls of the open episode: nothing new
    finally:
        stop(first, kill=True)  # no clean stop: another starts on the same file
    second = start_run(server, state, second_log, **alerting(receiver))
    try:
        more_polls(second_log, 5)  # the restarted daemon repeats nothing
        assert notices(receiver) == ["failure"]
        server.simulator.set_status("shop-q", "WORKING")
        wait_for(lambda: len(receiver.requests) >= 2)
        more_polls(second_log, 5)  # nor does it resolve it twice
    finally:
        assert stop(second) == 0
    assert notices(receiver) == ["failure", "success"]
    opened, resolved = posts(receiver)
    assert "needs a person" in opened["title"] and resolved["title"].startswith("Resolved: ")
    for post in (opened, resolved):
        assert "Session: Shop Q (id shop-q)" in post["message"]
    logs = events(first_log) + events(second_log)
    assert [(e["event"], e["session_id"]) for e in named(logs, "alert.opened", "alert.resolved")
            ] == [("alert.opened", "shop-q"), ("alert.resolved", "shop-q")]
    assert [e["change"] for e in named(logs, "alert.sent")] == ["opened", "resolved"]
    assert queued(state) == (0, 0)


def test_a_message_in_flight_at_sigterm_is_finished_and_not_sent_again_after_a_restart(
    simulator: SimFactory, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "shop-q", "status": QR}], "session_count": 0})
    state, first_log, second_log = tmp_path / "state.db", tmp_path / "1.log", tmp_path / "2.log"
    receiver.hold = threading.Event()  # the receiver takes the message, answers later
    first = start_run(server, state, first_log, SHUTDOWN_GRACE="10", **alerting(receiver))
    try:
        wait_for(lambda: receiver.requests)  # the send is in flight
        first.send_signal(signal.SIGTERM)
        wait_for(lambda: logged(first_log, "daemon.stopping"))
    finally:
        receiver.hold.set()  # the answer comes while the daemon stops
    assert first.wait(timeout=15) == 0
    assert [e["change"] for e in named(events(first_log), "alert.sent")] == ["opened"]
    assert queued(state) == (1, 0)  # the episode open, its message delivered
    second = start_run(server, state, second_log, **alerting(receiver))
    try:
        more_polls(second_log, 5)
    finally:
        assert stop(second) == 0
    assert notices(receiver) == ["failure"]  # once: the restart did not send it again


def test_500_sessions_needing_a_person_at_once_are_one_message_naming_each(
    simulator: SimFactory, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    server = simulator({"session_count": 500})
    state, log = tmp_path / "state.db", tmp_path / "run.log"
    ids = server.simulator.session_ids()
    run = start_run(server, state, log, **alerting(receiver, ALERTS__GROUP_WINDOW="2"))
    try:
        more_polls(log, 2)
        for session_id in ids:
            server.simulator.set_status(session_id, QR)
        wait_for(lambda: receiver.requests, timeout=30)
        more_polls(log, 3)
        wait_for(lambda: queued(state) == (500, 0))  # all opened, all sent
    finally:
        assert stop(run) == 0
    (storm,) = posts(receiver)
    assert storm["type"] == "failure"
    assert "500" in storm["title"]
    missing = [i for i in ids if f"({i})" not in storm["message"]]
    assert missing == []
    (sent,) = named(events(log), "alert.sent")
    assert sent["sessions"] == 500
    assert len(named(events(log), "alert.opened")) == 500


def test_a_receiver_that_is_down_gets_the_message_once_back_and_polls_keep_their_pace(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}, {"id": "q", "status": QR}],
                        "session_count": 0})
    baseline_log, log = tmp_path / "baseline.log", tmp_path / "run.log"
    baseline = start_run(server, tmp_path / "baseline.db", baseline_log)
    try:
        more_polls(baseline_log, 20)
    finally:
        assert stop(baseline) == 0
    down = HttpReceiver(free_port())  # nothing listens on its port yet
    run = start_run(server, tmp_path / "state.db", log, **alerting(down))
    try:
        wait_for(lambda: logged(log, "alert.failed"))
        more_polls(log, 20)  # the receiver still down
        down.start()  # back, on the same port
        wait_for(lambda: down.requests, timeout=30)  # the next retry: within its backoff
        more_polls(log, 3)
    finally:
        assert stop(run) == 0
        down.stop()
    assert notices(down) == ["failure"]
    found = events(log)
    failed = named(found, "alert.failed")
    (sent,) = named(found, "alert.sent")
    assert failed[0]["attempt"] == 1 and sent["attempt"] == len(failed) + 1
    assert all(TOKEN not in e["error"] for e in failed)
    # The poll cycles while the receiver was down, against those of a run without alerts:
    # the same pace (a loose bound; the alerts benchmark measures the ratio).
    first_failure, delivered = found.index(failed[0]), found.index(sent)
    while_down = [e["duration_ms"] for e in found[first_failure:delivered]
                  if e["event"] == "poll.completed"]
    without = [e["duration_ms"] for e in named(events(baseline_log), "poll.completed")]
    assert len(while_down) >= 20
    assert statistics.median(while_down) <= 2 * statistics.median(without) + 20


def test_check_ten_times_over_one_episode_sends_once_and_beside_a_daemon_sends_nothing(
    simulator: SimFactory, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "q", "status": QR}],
                        "session_count": 0})
    state = tmp_path / "state.db"
    env = cli_env(server, state, **alerting(receiver))
    for _ in range(10):
        done = cli("check", env=env)
        assert done.returncode == 2, done.stdout + done.stderr  # CRITICAL: q needs a person
    assert notices(receiver) == ["failure"]
    assert queued(state) == (1, 0)

    # Beside a running daemon (polling seldom, so that the check sees the news first),
    # the check opens the episode but leaves sending to the daemon.
    other, log = tmp_path / "other.db", tmp_path / "run.log"
    second = HttpReceiver().start()
    daemon = start_run(server, other, log, **alerting(second), POLL_INTERVAL="60")
    try:
        wait_for(lambda: second.requests)  # its first poll's episode (q), sent by it
        server.simulator.set_status("a", QR)
        done = cli("check", env=cli_env(server, other, **alerting(second)))
        assert done.returncode == 2, done.stdout + done.stderr
        assert [e["session_id"] for e in named(parse(done.stderr), "alert.opened")] == ["a"]
        assert not named(parse(done.stderr), "alert.sent")
        wait_for(lambda: len(second.requests) >= 2)  # the daemon's sender found the row
        assert polls(log) == 1  # no poll of the daemon's saw a's news: the check's did
    finally:
        assert stop(daemon) == 0
        second.stop()
    assert notices(second) == ["failure", "failure"]
    assert "(id a)" in posts(second)[1]["message"]
    assert [e["change"] for e in named(events(log), "alert.sent")] == ["opened", "opened"]
    assert notices(receiver) == ["failure"]


def test_check_no_alerts_sends_and_queues_nothing(
    simulator: SimFactory, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "q", "status": QR}], "session_count": 0})
    state = tmp_path / "state.db"
    done = cli("check", "--no-alerts", env=cli_env(server, state, **alerting(receiver)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert not named(parse(done.stderr), "alert.opened")
    assert queued(state) == (0, 0)
    assert receiver.requests == []


def test_alerts_list_metrics_and_config_show_the_open_episode_and_never_the_token(
    simulator: SimFactory, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "a"}, {"id": "shop-q", "session_name": "Shop Q"}],
                        "session_count": 0})
    state, log = tmp_path / "state.db", tmp_path / "run.log"
    port = free_port()
    settings = alerting(receiver, HTTP_LISTEN=f"127.0.0.1:{port}")
    run = start_run(server, state, log, **settings)
    try:
        more_polls(log, 2)
        server.simulator.set_status("shop-q", QR)
        wait_for(lambda: receiver.requests)
        more_polls(log, 2)
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            metrics = http.get(f"http://127.0.0.1:{port}/metrics").text
        listed = cli("alerts", "list", env=cli_env(server, state, **settings))
        as_json = cli("alerts", "list", "--json", env=cli_env(server, state, **settings))
        config = cli("config", env=cli_env(server, state, **settings))
    finally:
        assert stop(run) == 0
    assert ('wasend_supervisor_alerts_total{kind="needs_person",outcome="opened"} 1.0'
            in metrics.splitlines())
    assert ('wasend_supervisor_alerts_total{kind="needs_person",outcome="sent"} 1.0'
            in metrics.splitlines())
    assert 'wasend_supervisor_alert_episodes_open{kind="needs_person"} 1.0' in metrics
    assert listed.returncode == 0, listed.stderr
    assert "shop-q" in listed.stdout and "Shop Q" in listed.stdout
    assert "1 open episode(s) in" in listed.stdout
    (episode,) = json.loads(as_json.stdout)["episodes"]
    assert (episode["kind"], episode["session_id"], episode["status"]) == (
        "needs_person", "shop-q", QR)
    assert config.returncode == 0, config.stderr
    for output in (log.read_text(), metrics, listed.stdout + listed.stderr,
                   as_json.stdout + as_json.stderr, config.stdout + config.stderr):
        assert TOKEN not in output
    assert receiver.requests[0].path == f"/hooks/{TOKEN}"  # it was in the URL used



def test_a_urls_file_others_can_read_is_warned_about_on_reload_too(
    simulator: SimFactory, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    server = simulator({"session_count": 1})
    urls, log = tmp_path / "alert-urls", tmp_path / "run.log"
    urls.write_text(f"# the receiver\n{hook(receiver)}\n")
    urls.chmod(0o600)
    run = start_run(server, tmp_path / "state.db", log, ALERTS__URLS_FILE=str(urls))
    try:
        more_polls(log, 2)
        assert not logged(log, "alert.urls_file_permissions")  # mode 0600 at start
        urls.chmod(0o644)
        run.send_signal(signal.SIGHUP)
        wait_for(lambda: logged(log, "config.reloaded"))
        more_polls(log, 2)
        urls.chmod(0o600)
        urls.write_text(f"{hook(receiver)}\njson://127.0.0.1:9/other\n")  # a URL more
        run.send_signal(signal.SIGHUP)
        wait_for(lambda: len(named(events(log), "config.reloaded")) == 2)
    finally:
        assert stop(run) == 0
    found = events(log)
    mode_only, more_urls = named(found, "config.reloaded")
    assert mode_only["restart_required"] == []  # the same URLs: only who may read them
    assert more_urls["restart_required"] == ["alerts"]
    (warned,) = named(found, "alert.urls_file_permissions")
    assert (warned["path"], warned["mode"]) == (str(urls), "0644")
    assert TOKEN not in log.read_text()


# The command line as it runs where the 'alerts' extra is not installed.
_WITHOUT_APPRISE = """\
import sys
sys.modules["apprise"] = None  # import apprise: ImportError, as when it is not installed
from supervisor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def without_apprise(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-c", _WITHOUT_APPRISE, *args], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=30, check=False)


def test_apprise_urls_without_the_alerts_extra_are_one_line_at_start(
    simulator: SimFactory, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "q", "status": QR}], "session_count": 0})
    env = cli_env(server, tmp_path / "state.db", **alerting(receiver))
    line = ("wasend-supervisor: alerts.urls: Apprise URLs need the 'alerts' extra (pip install "
            "'wasend-supervisor[alerts]'), and Apprise is not installed (from environment "
            "variable WASEND_SUPERVISOR_ALERTS__URLS)\n")
    run = without_apprise("run", env=env)
    assert (run.returncode, run.stderr, run.stdout) == (69, line, "")
    test = without_apprise("alerts", "test", env=env)
    assert (test.returncode, test.stderr, test.stdout) == (69, line, "")
    check = without_apprise("check", env=env)
    assert (check.returncode, check.stderr) == (3, line)
    assert check.stdout == "UNKNOWN: " + line.removeprefix("wasend-supervisor: ")
    skipped = without_apprise("check", "--no-alerts", env=env)
    assert skipped.returncode == 2, skipped.stdout + skipped.stderr  # CRITICAL, as without
    assert receiver.requests == []
    for done in (run, test, check):
        assert TOKEN not in done.stdout + done.stderr


def test_without_alerts_metrics_show_none_of_them(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    server = simulator({"sessions": [{"id": "q", "status": QR}], "session_count": 0})
    state, log = tmp_path / "state.db", tmp_path / "run.log"
    port = free_port()
    run = start_run(server, state, log, HTTP_LISTEN=f"127.0.0.1:{port}")
    try:
        more_polls(log, 2)
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            metrics = http.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        assert stop(run) == 0
    assert "wasend_supervisor_sessions_needing_person 1.0" in metrics
    assert "alert" not in metrics
    assert not [e for e in events(log) if e["event"].startswith("alert.")]
    assert queued(state) == (0, 0)
