"""Real receivers for the alerts, all on 127.0.0.1 and started by the tests: an HTTP
receiver (Apprise's json:// and ntfy://, Alertmanager's webhook), an SMTP server
(aiosmtpd) and Debian's prometheus-alertmanager.

A missing alertmanager binary skips its tests on a developer's machine and fails them under
CI (.ci/run installs the package), as the deployment tests do with their tools.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.alerts.receivers import HttpReceiver, free_port
from tests.deploy.conftest import missing
from tests.waiting import wait_for

ALERTMANAGER = "prometheus-alertmanager"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    running = HttpReceiver().start()
    yield running
    running.stop()


class _Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    mailbox: _Mailbox


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield SmtpServer(controller.port, mailbox)
    controller.stop()


@dataclass
class Alertmanager:
    url: str
    webhook: HttpReceiver

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            answer = http.get(f"{self.url}/api/v2/alerts", params=params)
            answer.raise_for_status()
            return list(answer.json())

    def notifications(self) -> list[dict[str, Any]]:
        """What it sent its webhook receiver: one entry per alert per notification."""
        return [alert for request in self.webhook.requests
                for alert in request.json()["alerts"]]


CONFIG = """\
route:
  receiver: hook
  group_by: ["alertname", "session_id"]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://{webhook}/alertmanager
        send_resolved: true
"""


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: HttpReceiver) -> Iterator[Alertmanager]:
    """Debian's prometheus-alertmanager on a free loopback port, alone (no cluster), its
    notifications going to ``receiver``."""
    binary = shutil.which(ALERTMANAGER) or (
        f"/usr/bin/{ALERTMANAGER}" if Path(f"/usr/bin/{ALERTMANAGER}").exists() else None)
    if binary is None:
        missing(ALERTMANAGER, "apt-get install prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(webhook=receiver.url))
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"alertmanager exited {process.returncode}: "
                                 f"{(tmp_path / 'alertmanager.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=1.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=30.0, describe="alertmanager ready")
        yield Alertmanager(url, receiver)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
