"""The status page's application, built from stand-ins of what the daemon hands it (a
store of records, an operator, a QR fetch) and the real auth parts, and asked through
``httpx.ASGITransport`` as the listener asks it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx
import pytest

from supervisor.domain.models import HistoryEntry, Phase, QrCode, Record
from supervisor.domain.policy import StatusClasses
from supervisor.runtime.operator import Refused
from supervisor.state.store import Hold
from supervisor.web.app import create_app
from supervisor.web.auth import Credentials, LoginLimiter, Sessions
from supervisor.web.board import Board
from supervisor.web.qr import QrFeed
from tests.e2e.conftest import simulator  # noqa: F401  (the fixture, for test_service)
from tests.fakes import FakeClock

_T = TypeVar("_T")
TOKEN = "tok-alice-0123456789abcdef"
PAYLOAD = "2@qr-payload-that-is-the-account,abcdef0123456789"
PEER = "192.0.2.7"


class Records:
    """The store the board reads: records, holds, history."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self.by_id = {r.session_id: r for r in records}
        self.held: dict[str, Hold] = {}
        self.entries: list[HistoryEntry] = []

    def get(self, session_id: str) -> Record | None:
        return self.by_id.get(session_id)

    def records(self) -> Iterable[Record]:
        return iter(list(self.by_id.values()))

    def holds(self) -> dict[str, Hold]:
        return dict(self.held)

    def updated_at(self, session_id: str) -> float | None:
        return 1_700_000_000.0 if session_id in self.by_id else None

    def read_history(self, *, session_ids: Sequence[str] = (), since: float | None = None,
                     limit: int | None = None) -> list[HistoryEntry]:
        rows = [e for e in self.entries if not session_ids or e.session_id in session_ids]
        return rows[-limit:] if limit else rows

    async def run(self, work: Callable[[], _T]) -> _T:
        return work()


class FakeOperator:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.refuse: str | None = None

    async def _do(self, what: str, session_id: str, by: str) -> None:
        if self.refuse is not None:
            raise Refused(self.refuse)
        self.calls.append((what, session_id, by))

    async def pause(self, session_id: str, by: str) -> None:
        await self._do("pause", session_id, by)

    async def resume(self, session_id: str, by: str) -> None:
        await self._do("resume", session_id, by)

    async def restart_now(self, session_id: str, by: str) -> None:
        await self._do("restart", session_id, by)


class Page:
    """The app and what it was built from."""

    def __init__(self, records: Records, clock: FakeClock) -> None:
        self.records = records
        self.clock = clock
        self.operator = FakeOperator()
        self.fetched: list[str] = []
        self.sessions = Sessions(clock)
        self.limiter = LoginLimiter(clock)
        self.credentials = Credentials.parse(f"alice:{TOKEN}\n", "test")
        self.board = Board(lambda: records, StatusClasses.of, clock)
        self.qr = QrFeed(self._fetch, clock)
        self.app = create_app(self.board, self.operator, self.qr, lambda: self.credentials,
                              self.sessions, self.limiter, clock)

    async def _fetch(self, session_id: str) -> QrCode:
        self.fetched.append(session_id)
        return QrCode(session_id, PAYLOAD)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(self.app, client=(PEER, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://page.test",
                                 follow_redirects=False, **kwargs)


def sessions(n_healthy: int = 3) -> list[Record]:
    found = [Record(f"s-{i:05d}", name=f"shop {i}", phase=Phase.HEALTHY, last_status="WORKING",
                    since=1_699_999_000.0) for i in range(n_healthy)]
    found.append(Record("scan-1", name="front desk", phase=Phase.NEEDS_PERSON,
                        last_status="SCAN_QR_CODE", since=1_699_999_900.0))
    found.append(Record("down-1", name="warehouse", phase=Phase.UNHEALTHY, last_status="STOPPED",
                        attempt=2, next_attempt_at=1_700_000_030.0))
    return found


@pytest.fixture
def page() -> Page:
    return Page(Records(sessions()), FakeClock())


@pytest.fixture
async def bearer(page: Page) -> AsyncIterator[httpx.AsyncClient]:
    async with page.client(headers={"authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
async def anonymous(page: Page) -> AsyncIterator[httpx.AsyncClient]:
    async with page.client() as client:
        yield client


async def log_in(client: httpx.AsyncClient) -> str:
    """Logs the client in through the form; the CSRF token of the login."""
    answer = await client.post("/login", data={"name": "alice", "token": TOKEN, "next": "/"})
    assert answer.status_code == 303, answer.text
    page = await client.get("/sessions/scan-1")
    marker = 'name="csrf" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start:page.text.index('"', start)]
