"""``supervisor.web.qr``: the QR code drawn as SVG (read back by a real decoder), and
``QrFeed`` on a fake clock: fetched only when asked, refreshed after ``refresh``, one
fetch for callers at the same time, forgotten on demand, failures raised and logged,
and never the payload in an event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from supervisor.api.errors import ApiError, Conflict, RateLimited, ServerError, SessionGone
from supervisor.domain.models import QrCode
from supervisor.web.qr import QrFeed, render_svg
from tests.fakes import FakeClock
from tests.qrcodes import decode_svg
from tests.waiting import until

PAYLOAD = "2@tDNwbT2c1ZqWkl3s9a8Rk0FDzYyY3M6O,c2ltdWxhdGVkLW5vaXNlLWtleQ==,aWRlbnRpdHk=,YWR2"


class Api:
    """A fetch that counts its calls and answers a new payload each time (a rotation),
    or what the test puts in ``answers``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answers: list[QrCode | ApiError] = []
        self.gate: asyncio.Event | None = None  # when set: each fetch waits for it

    async def __call__(self, session_id: str) -> QrCode:
        self.calls.append(session_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, ApiError):
                raise answer
            return answer
        return QrCode(session_id, f"{PAYLOAD},{session_id},{len(self.calls)}")


def feed(api: Api, clock: FakeClock, **kwargs: float) -> QrFeed:
    return QrFeed(api, clock, **kwargs)


# --- render_svg -----------------------------------------------------------------------


def test_render_svg_decodes_to_exactly_the_payload(tmp_path: Path) -> None:
    svg = render_svg(PAYLOAD)
    assert decode_svg(svg, tmp_path) == [PAYLOAD]


def test_render_svg_is_a_bare_drawing_without_the_payload_in_its_text() -> None:
    svg = render_svg(PAYLOAD)
    text = svg.decode("utf-8")
    assert text.startswith("<svg ") and text.rstrip().endswith("</svg>")
    assert 'xmlns="http://www.w3.org/2000/svg"' in text
    assert PAYLOAD not in text
    assert PAYLOAD.split(",")[1] not in text
    for outside in ("<script", "href", "http://", "https://", "<style", "<?xml"):
        assert outside not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert 'fill="#fff"' in text  # a white ground behind the modules


# --- QrFeed ------------------------------------------------------------------------------


async def test_nothing_is_fetched_until_asked_then_the_copy_serves_until_refresh() -> None:
    api, clock = Api(), FakeClock()
    qr = feed(api, clock, refresh=20.0)
    assert api.calls == []
    first = await qr.svg("s1")
    clock.advance(19.9)
    again = await qr.svg("s1")
    assert api.calls == ["s1"]
    assert first is not None and again == first
    assert first.startswith(b"<svg ")


async def test_after_refresh_seconds_the_next_ask_fetches_the_rotated_code(
    tmp_path: Path,
) -> None:
    api, clock = Api(), FakeClock()
    qr = feed(api, clock, refresh=20.0)
    first = await qr.svg("s1")
    clock.advance(20.0)
    second = await qr.svg("s1")
    assert api.calls == ["s1", "s1"]
    assert first != second
    assert second is not None
    assert decode_svg(second, tmp_path) == [f"{PAYLOAD},s1,2"]


async def test_callers_at_the_same_time_share_one_fetch() -> None:
    api, clock = Api(), FakeClock()
    api.gate = asyncio.Event()
    qr = feed(api, clock)
    waiting = [asyncio.ensure_future(qr.svg("s1")) for _ in range(5)]
    await until(lambda: api.calls == ["s1"])
    await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)
    api.gate.set()
    answers = await asyncio.gather(*waiting)
    assert api.calls == ["s1"]
    assert len(set(answers)) == 1 and answers[0] is not None


async def test_a_caller_that_goes_away_does_not_cancel_the_others_fetch() -> None:
    api, clock = Api(), FakeClock()
    api.gate = asyncio.Event()
    qr = feed(api, clock)
    leaving = asyncio.ensure_future(qr.svg("s1"))
    staying = asyncio.ensure_future(qr.svg("s1"))
    await until(lambda: api.calls == ["s1"])
    leaving.cancel()
    api.gate.set()
    assert await staying is not None
    assert leaving.cancelled()
    assert await qr.svg("s1") is not None
    assert api.calls == ["s1"]


async def test_other_sessions_are_fetched_each_for_itself() -> None:
    api, clock = Api(), FakeClock()
    qr = feed(api, clock)
    one, two = await asyncio.gather(qr.svg("s1"), qr.svg("s2"))
    assert sorted(api.calls) == ["s1", "s2"]
    assert one != two


async def test_forget_drops_the_copy_and_the_next_ask_fetches_again() -> None:
    api, clock = Api(), FakeClock()
    qr = feed(api, clock)
    await qr.svg("s1")
    await qr.svg("s2")
    qr.forget("s1")
    qr.forget("never-asked")  # nothing to drop: fine
    assert len(qr) == 1
    await qr.svg("s1")
    await qr.svg("s2")
    assert api.calls == ["s1", "s2", "s1"]


async def test_a_fetch_in_flight_when_forgotten_is_not_kept() -> None:
    api, clock = Api(), FakeClock()
    api.gate = asyncio.Event()
    qr = feed(api, clock)
    asking = asyncio.ensure_future(qr.svg("s1"))
    await until(lambda: api.calls == ["s1"])
    qr.forget("s1")
    api.gate.set()
    assert await asking is not None  # the caller who asked gets it
    assert len(qr) == 0
    await qr.svg("s1")
    assert api.calls == ["s1", "s1"]


async def test_the_cache_holds_only_fresh_copies_of_sessions_asked_about() -> None:
    api, clock = Api(), FakeClock()
    qr = feed(api, clock, refresh=20.0)
    for sid in ("s1", "s2", "s3"):
        await qr.svg(sid)
    assert len(qr) == 3
    clock.advance(25.0)
    await qr.svg("s4")
    assert len(qr) == 1


async def test_a_session_without_a_code_gives_none_held_like_a_code() -> None:
    api, clock = Api(), FakeClock()
    api.answers = [Conflict("qr: HTTP 422: conflict", call="qr", http_status=422)]
    qr = feed(api, clock, refresh=20.0)
    with structlog.testing.capture_logs() as events:
        assert await qr.svg("s1") is None
        assert await qr.svg("s1") is None
    assert api.calls == ["s1"]
    assert events == [{"event": "qr.fetched", "log_level": "info", "session_id": "s1",
                       "available": False}]


@pytest.mark.parametrize(
    "error",
    [ServerError("qr: HTTP 503: server error", call="qr", http_status=503),
     SessionGone("qr: HTTP 404: no such session", call="qr", http_status=404),
     RateLimited("qr: paused", call="qr", http_status=None, retry_after=30.0)],
)
async def test_a_failed_fetch_raises_the_error_logs_it_and_is_answered_again_for_retry(
    error: ApiError,
) -> None:
    api, clock = Api(), FakeClock()
    api.answers = [error]
    qr = feed(api, clock, refresh=20.0, retry=5.0)
    with structlog.testing.capture_logs() as events:
        with pytest.raises(type(error)) as caught:
            await qr.svg("s1")
        clock.advance(4.9)
        with pytest.raises(type(error)):
            await qr.svg("s1")
    assert caught.value is error
    assert caught.value.__traceback__ is not None
    assert api.calls == ["s1"]
    assert events == [{"event": "qr.failed", "log_level": "warning", "session_id": "s1",
                       "error": error.kind, "http_status": error.http_status}]
    clock.advance(0.1)
    assert await qr.svg("s1") is not None  # retry seconds on: fetched again, and it works
    assert api.calls == ["s1", "s1"]


async def test_a_failure_that_is_no_api_answer_is_raised_logged_and_not_held() -> None:
    clock = FakeClock()
    calls: list[str] = []

    async def broken(session_id: str) -> QrCode:
        calls.append(session_id)
        raise OSError("the state file is gone")

    qr = QrFeed(broken, clock)
    with structlog.testing.capture_logs() as events:
        for _ in range(2):
            with pytest.raises(OSError, match="state file"):
                await qr.svg("s1")
    assert calls == ["s1", "s1"]
    assert [e["event"] for e in events] == ["qr.failed", "qr.failed"]
    assert events[0]["error"] == "OSError"


async def test_the_events_name_the_session_and_never_the_payload() -> None:
    api, clock = Api(), FakeClock()
    qr = feed(api, clock)
    with structlog.testing.capture_logs() as events:
        await qr.svg("s1")
    assert events == [{"event": "qr.fetched", "log_level": "info", "session_id": "s1",
                       "available": True}]
    assert PAYLOAD[:20] not in repr(events)
    assert PAYLOAD[:20] not in repr(qr)


@pytest.mark.parametrize(("refresh", "retry"), [(0.0, 5.0), (float("inf"), 5.0), (20.0, -1.0),
                                                (float("nan"), 5.0)])
def test_nonsense_times_are_refused(refresh: float, retry: float) -> None:
    with pytest.raises(ValueError, match=r"^(refresh|retry) must be"):
        QrFeed(Api(), FakeClock(), refresh=refresh, retry=retry)
