"""Test doubles shared by the tests, the one home of each: the clocks (virtual time, and
the system clock shifted on demand), a random without jitter, an in-memory API."""

from __future__ import annotations

import random
import threading
import time

from pydantic import SecretStr

from supervisor.api.errors import ApiError, SessionGone
from supervisor.domain.models import SessionInfo, SessionList


class FakeClock:
    """Virtual time: ``sleep`` advances it instantly and records how long was asked."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.wall = start
        self.mono = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self.advance(seconds)


class ShiftableClock:
    """The system clock plus an offset that tests can move forward (no sleeping): for a
    server on threads of its own, whose time must also pass by itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def monotonic(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


class MaxRandom(random.Random):
    """``uniform(a, b)`` always returns ``b``: backoff without jitter, for exact sequences."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeApi:
    """An in-memory stand-in for ``WasendClient`` that records every call.

    ``statuses`` is what the list shows; ``errors`` maps a call name (``list``,
    ``restart``, ``stop``, ``get``) to an exception raised by the next such calls;
    ``after_restart`` is the status a restart leaves behind.
    """

    def __init__(self, statuses: dict[str, str] | None = None) -> None:
        self.statuses: dict[str, str] = dict(statuses or {})
        self.errors: dict[str, list[ApiError]] = {}
        self.after_restart = "STARTING"
        self.calls: list[tuple[str, str]] = []
        self.keys: list[str] = []
        self.hidden: set[str] = set()  # ids the list omits (GET still finds them)
        self.names: dict[str, str] = {}  # a session's name, if not name-<id>

    def fail(self, call: str, *errors: ApiError) -> None:
        self.errors.setdefault(call, []).extend(errors)

    def _maybe_raise(self, call: str) -> None:
        queue = self.errors.get(call)
        if queue:
            raise queue.pop(0)

    async def list_sessions(self) -> SessionList:

        self.calls.append(("list", ""))
        self._maybe_raise("list")
        return SessionList(tuple(
            SessionInfo(sid, self.names.get(sid, f"name-{sid}"), status)
            for sid, status in self.statuses.items() if sid not in self.hidden
        ))

    async def get_session(self, session_id: str) -> SessionInfo:
        from supervisor.domain.models import SessionInfo

        self.calls.append(("get", session_id))
        self._maybe_raise("get")
        if session_id not in self.statuses:
            raise SessionGone("not found", call="get", http_status=404)
        name = self.names.get(session_id, f"name-{session_id}")
        return SessionInfo(session_id, name, self.statuses[session_id])

    async def restart(self, session_id: str) -> SessionInfo:

        self.calls.append(("restart", session_id))
        self._maybe_raise("restart")
        self.statuses[session_id] = self.after_restart
        return SessionInfo(session_id, None, self.after_restart)

    async def stop(self, session_id: str) -> SessionInfo:

        self.calls.append(("stop", session_id))
        self._maybe_raise("stop")
        self.statuses[session_id] = "STOPPED"
        return SessionInfo(session_id, None, "STOPPED")

    def set_api_key(self, api_key: SecretStr) -> None:
        self.keys.append(api_key.get_secret_value())
