"""systemd's notification protocol (``sd_notify``), from the daemon's side.

``Notifier`` sends datagrams to the socket named by ``NOTIFY_SOCKET``: a filesystem path
(``/run/systemd/notify``) or an abstract socket name (``@name``, sent as a leading NUL).
Without ``NOTIFY_SOCKET`` it does nothing at all: no socket, no error, no log line. A send
never blocks the event loop (the socket is non-blocking; a full queue drops the message)
and never raises: a failure is logged once (``systemd.notify_failed``).

``SystemdHooks`` is what ``run`` tells systemd, and when:

* ``STATUS=`` before the first poll and after each poll (``status_line`` in ``census``);
* ``READY=1`` once, when the first poll has completed, whether it succeeded or failed
  with an API error the daemon rides out (a poll that crashed with a bug is not ready),
  or, among replicas, when it stands by for another that leads;
* ``WATCHDOG=1`` every half of ``WATCHDOG_USEC``, from a task on the daemon's own event
  loop, so that a blocked loop stops pinging and systemd kills and restarts the service
  (only when ``WATCHDOG_PID`` is unset or is our pid);
* ``STOPPING=1`` when a signal starts the shutdown.

The environment is passed in (``os.environ`` by the CLI, a dict in tests).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

import structlog

from supervisor.domain import events as ev
from supervisor.ops.census import Census, status_line
from supervisor.runtime.cycle import PollResult

log = structlog.get_logger("supervisor.sdnotify")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str | None) -> str | None:
    """The address to send to: a path, or ``"\\0name"`` for ``@name``; None when unusable."""
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and relative paths are not supported


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between two ``WATCHDOG=1``: half of ``WATCHDOG_USEC``; None when it is off.

    Off when ``WATCHDOG_USEC`` is unset, not a positive whole number, or when
    ``WATCHDOG_PID`` names another process (the watchdog is meant for someone else).
    """
    usec = env.get(WATCHDOG_USEC, "").strip()
    if not usec.isdigit() or int(usec) <= 0:
        return None
    owner = env.get(WATCHDOG_PID, "").strip()
    if owner and owner != str(pid):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Sends ``KEY=value`` lines to systemd's notification socket, if there is one."""

    def __init__(self, address: str | None) -> None:
        self._given = address
        self._address = socket_address(address)
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        return cls(env.get(NOTIFY_SOCKET) or None)

    @property
    def enabled(self) -> bool:
        return self._given is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; True if it left. Never raises, never blocks."""
        if self._given is None:
            return False
        if self._address is None:
            self._failed("unsupported NOTIFY_SOCKET address")
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto("\n".join(lines).encode("utf-8"), self._address)
        except OSError as exc:
            self._failed(exc.strerror or type(exc).__name__)
            return False
        if self._failing:
            self._failing = False
            log.info(ev.SYSTEMD_NOTIFY_RESTORED)
        return True

    def _failed(self, problem: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning(ev.SYSTEMD_NOTIFY_FAILED, problem=problem, socket=self._given)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SystemdHooks:
    """The daemon's notifications to systemd, hooked to the daemon's events."""

    def __init__(self, notifier: Notifier, *, watchdog: float | None = None) -> None:
        self.notifier = notifier
        self.watchdog_interval = watchdog
        self.ready = False

    def starting(self) -> None:
        self.notifier.send("STATUS=starting: waiting for the first poll")

    def poll_done(self, result: PollResult, census: Census, when: float) -> None:
        lines = [f"STATUS={status_line(census, result, when)}"]
        if not self.ready:
            self.ready = True
            lines.insert(0, "READY=1")
        self.notifier.send(*lines)

    def standing_by(self, leader: str) -> None:
        """Among replicas, another leads: this one is up and ready to take over, which
        is all ``READY=1`` can mean for it (it makes no poll)."""
        lines = [f"STATUS=standing by: replica {leader} leads"]
        if not self.ready:
            self.ready = True
            lines.insert(0, "READY=1")
        self.notifier.send(*lines)

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping")

    async def watchdog(self) -> None:
        """Ping systemd's watchdog from the event loop until cancelled."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval)
