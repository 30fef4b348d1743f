"""sd_notify: datagrams received by a real SOCK_DGRAM socket (a path in tmp_path and an
abstract name), the watchdog pinging from the event loop, and the daemon's hooks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.api.errors import ApiUnreachable
from supervisor.clock import SystemClock
from supervisor.domain.models import Phase, Record
from supervisor.domain.policy import Policy, StatusClasses
from supervisor.ops.census import Census
from supervisor.ops.sdnotify import Notifier, SystemdHooks, socket_address, watchdog_interval
from supervisor.runtime.cycle import PollResult, Supervisor
from supervisor.runtime.daemon import Daemon
from supervisor.state.store import MemoryStore
from tests.fakes import FakeApi, MaxRandom
from tests.waiting import until


class Receiver:
    """The systemd side: a datagram socket that collects what it is sent."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Everything queued now (without waiting), also kept in ``messages``."""
        got: list[str] = []
        while True:
            try:
                got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.messages.extend(got)
        return got

    def lines(self) -> list[str]:
        self.drain()
        return [line for message in self.messages for line in message.split("\n")]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Receiver]]:
    path = str(tmp_path_factory.mktemp("n") / "notify")  # short: sun_path holds 108 bytes
    receiver = Receiver(path)
    yield path, receiver
    receiver.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, Receiver]]:
    name = f"wasend-test-{uuid.uuid4().hex}"
    receiver = Receiver("\0" + name)
    yield "@" + name, receiver
    receiver.close()


# --- the notifier ------------------------------------------------------------------------


def test_sends_to_a_socket_path(path_socket: tuple[str, Receiver]) -> None:
    address, receiver = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier.send("READY=1", "STATUS=fine")
    assert receiver.drain() == ["READY=1\nSTATUS=fine"]
    notifier.close()


def test_sends_to_an_abstract_socket(abstract_socket: tuple[str, Receiver]) -> None:
    address, receiver = abstract_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier.send("READY=1")
    assert receiver.drain() == ["READY=1"]
    notifier.close()


def test_does_nothing_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("no socket may be created")

    monkeypatch.setattr(socket, "socket", no_socket)
    notifier = Notifier.from_env({})
    with capture_logs() as events:
        assert not notifier.enabled
        assert notifier.send("READY=1") is False
        notifier.close()
    assert events == []


def test_a_missing_socket_is_logged_once_and_never_raises(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "absent"))
    with capture_logs() as events:
        assert notifier.send("READY=1") is False
        assert notifier.send("STATUS=x") is False
    assert [e["event"] for e in events] == ["systemd.notify_failed"]
    notifier.close()


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == "\0abc"
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative/path") is None
    assert socket_address("") is None


def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid() -> None:
    pid = os.getpid()
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}, pid) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(pid)}, pid) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, pid) is None
    assert watchdog_interval({}, pid) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid) is None


# --- the watchdog ------------------------------------------------------------------------


async def test_watchdog_pings_while_the_loop_runs_and_stops_when_it_is_blocked(
    path_socket: tuple[str, Receiver],
) -> None:
    address, receiver = path_socket
    hooks = SystemdHooks(Notifier(address), watchdog=0.02)
    task = asyncio.create_task(hooks.watchdog())
    try:
        await until(lambda: receiver.lines().count("WATCHDOG=1") >= 3)
        receiver.drain()  # whatever was sent so far is queued now; take it
        time.sleep(0.3)  # block the event loop: 15 intervals without a turn of the loop
        assert receiver.drain() == []  # not one ping while it was blocked
        before = receiver.lines().count("WATCHDOG=1")
        await until(lambda: receiver.lines().count("WATCHDOG=1") > before)  # and they resume
    finally:
        task.cancel()
        hooks.notifier.close()


# --- the hooks, driven by a real daemon ----------------------------------------------------


def hooked_daemon(api: FakeApi, notifier: Notifier, *, watchdog: float | None = None,
                  ) -> tuple[Daemon, SystemdHooks]:
    sup = Supervisor(api, MemoryStore(), Policy(), SystemClock(), MaxRandom())
    daemon = Daemon(sup, poll_interval=0.05, shutdown_grace=1)
    hooks = SystemdHooks(notifier, watchdog=watchdog)

    def after_poll(result: PollResult) -> None:
        census = Census.take(sup.store.records(), sup.policy.classes)
        hooks.poll_done(result, census, sup.clock.now())

    daemon.listeners.append(after_poll)
    daemon.on_stopping.append(hooks.stopping)
    daemon.background.append(hooks.watchdog)
    return daemon, hooks


async def test_ready_once_after_the_first_poll_then_status_then_stopping(
    abstract_socket: tuple[str, Receiver],
) -> None:
    address, receiver = abstract_socket
    daemon, hooks = hooked_daemon(FakeApi({"a": "WORKING", "b": "WORKING"}), Notifier(address),
                              watchdog=0.02)
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.polls >= 3)
    daemon.handle_signal(signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0
    hooks.notifier.close()
    lines = receiver.lines()
    assert lines.count("READY=1") == 1
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    statuses = [line for line in lines if line.startswith("STATUS=2 sessions")]
    assert len(statuses) >= 3
    assert statuses[-1].startswith("STATUS=2 sessions: 2 healthy; last poll ")
    assert statuses[-1].endswith("Z ok")
    assert "WATCHDOG=1" in lines
    # nothing but the watchdog's last pings may follow STOPPING=1
    after = lines[lines.index("STOPPING=1") + 1:]
    assert set(after) <= {"STATUS=stopping", "WATCHDOG=1"}


async def test_ready_also_after_a_failed_first_poll(path_socket: tuple[str, Receiver]) -> None:
    address, receiver = path_socket
    api = FakeApi({"a": "WORKING"})
    api.fail("list", *[ApiUnreachable("down", call="list")] * 100)
    daemon, hooks = hooked_daemon(api, Notifier(address))
    task = asyncio.create_task(daemon.run())
    await until(lambda: "READY=1" in receiver.lines())
    daemon.request_stop()
    assert await asyncio.wait_for(task, 5) == 0
    hooks.notifier.close()
    lines = receiver.lines()
    assert lines[lines.index("READY=1") + 1].endswith("failed (unreachable)")


def test_status_line_counts_sessions_by_what_they_need() -> None:
    records = [
        Record("a"), Record("b"),
        Record("c", phase=Phase.VERIFYING, last_status="STARTING"),
        Record("d", phase=Phase.GAVE_UP, gave_up=True, last_status="FAILED"),
        Record("e", phase=Phase.NEEDS_PERSON, last_status="SCAN_QR_CODE"),
    ]
    census = Census.take(records, StatusClasses())
    hooks_lines: list[str] = []

    class Capture(Notifier):
        def send(self, *lines: str) -> bool:
            hooks_lines.extend(lines)
            return True

    hooks = SystemdHooks(Capture(None))
    hooks.poll_done(PollResult(ok=True), census, 1_700_000_000.0)  # 22:13:20 UTC
    assert hooks_lines == [
        "READY=1",
        "STATUS=5 sessions: 2 healthy, 1 recovering, 1 given up, 1 need a person; "
        "last poll 22:13:20Z ok",
    ]


def test_a_replica_standing_by_is_ready_once_and_says_who_leads() -> None:
    lines: list[str] = []

    class Capture(Notifier):
        def send(self, *sent: str) -> bool:
            lines.extend(sent)
            return True

    hooks = SystemdHooks(Capture(None))
    hooks.standing_by("web-1")
    hooks.standing_by("web-3")  # another took over: no second READY
    assert lines == ["READY=1", "STATUS=standing by: replica web-1 leads",
                     "STATUS=standing by: replica web-3 leads"]
    hooks.poll_done(PollResult(ok=True), Census.take([], StatusClasses()), 1_700_000_000.0)
    assert "READY=1" not in lines[3:]  # elected later: still ready once
