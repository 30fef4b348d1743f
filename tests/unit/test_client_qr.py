"""``WasendClient.qr`` against respx routes, as the other calls are tested
(tests/unit/test_client_respx.py): its two paths, its errors mapped in the one place,
its answer read strictly, and its payload a secret from the moment it arrives."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
import structlog
from pydantic import SecretStr

from supervisor import logs
from supervisor.api.client import QR_PAYLOADS_KEPT, WasendClient
from supervisor.api.errors import (
    ApiError,
    ApiTimeout,
    ApiUnreachable,
    AuthFailed,
    Conflict,
    RateLimited,
    ServerError,
    SessionGone,
    UnexpectedResponse,
)
from supervisor.api.ratelimit import RateGate
from supervisor.domain.models import QrCode
from supervisor.domain.secrets import Secrets
from tests.conftest import reset_logging
from tests.fakes import FakeClock

KEY = "sk-TEST-SECRET-KEY-123"
BASE = "https://api.wasend.test"
PAYLOAD = "2@Xq1sVr9Yh0p2Lm,dGhpc2lzYW5vaXNla2V5,aWRlbnRpdHlrZXk=,YWR2c2VjcmV0"
SDK_PATH = "/sessions/s1/auth/qr"
PAGE_PATH = "/sessions/s1/qr"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def make_client(**kwargs: Any) -> WasendClient:
    kwargs.setdefault("clock", FakeClock())
    return WasendClient(BASE, SecretStr(KEY), timeout=7.5, **kwargs)


def answer(payload: object = PAYLOAD) -> httpx.Response:
    return httpx.Response(200, json={"data": payload})


def not_found() -> httpx.Response:
    return httpx.Response(404, json={"statusCode": 404, "message": "Not Found"})


# --- the paths -----------------------------------------------------------------------


async def test_qr_asks_the_sdk_path_with_the_key_and_gives_the_payload(
    api: respx.MockRouter,
) -> None:
    route = api.get(SDK_PATH).mock(return_value=answer())
    async with make_client() as client:
        code = await client.qr("s1")
    assert code.reveal() == PAYLOAD
    assert code.session_id == "s1"
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "application/json"


async def test_a_404_on_the_sdk_path_falls_back_to_the_page_path_then_asks_only_it(
    api: respx.MockRouter,
) -> None:
    sdk = api.get(SDK_PATH).mock(return_value=not_found())
    page = api.get(PAGE_PATH).mock(return_value=answer())
    async with make_client() as client:
        first = await client.qr("s1")
        second = await client.qr("s1")
    assert first.reveal() == second.reveal() == PAYLOAD
    assert (sdk.call_count, page.call_count) == (1, 2)  # steady state: one request


async def test_once_the_sdk_path_answered_the_page_path_is_never_asked(
    api: respx.MockRouter,
) -> None:
    sdk = api.get(SDK_PATH).mock(side_effect=[answer(), not_found()])
    page = api.get(PAGE_PATH).mock(return_value=answer())
    async with make_client() as client:
        await client.qr("s1")
        with pytest.raises(SessionGone) as caught:  # the session is gone: no second path
            await client.qr("s1")
    assert (sdk.call_count, page.call_count) == (2, 0)
    assert caught.value.call == "qr"


async def test_a_404_on_both_paths_is_session_gone_and_both_are_tried_again_next_time(
    api: respx.MockRouter,
) -> None:
    sdk = api.get(SDK_PATH).mock(return_value=not_found())
    page = api.get(PAGE_PATH).mock(return_value=not_found())
    async with make_client() as client:
        for _ in range(2):
            with pytest.raises(SessionGone) as caught:
                await client.qr("s1")
            assert caught.value.__context__ is None  # the first 404 is not chained
    assert (sdk.call_count, page.call_count) == (2, 2)
    assert caught.value.http_status == 404


async def test_a_422_is_a_conflict_and_its_path_is_remembered(api: respx.MockRouter) -> None:
    refusal = {"statusCode": 422, "message": "Can get QR code only in SCAN_QR_CODE status"}
    sdk = api.get(SDK_PATH).mock(return_value=not_found())
    page = api.get(PAGE_PATH).mock(side_effect=[httpx.Response(422, json=refusal), answer()])
    async with make_client() as client:
        with pytest.raises(Conflict) as caught:
            await client.qr("s1")
        await client.qr("s1")
    assert caught.value.http_status == 422
    assert (sdk.call_count, page.call_count) == (1, 2)


async def test_each_client_learns_the_path_itself(api: respx.MockRouter) -> None:
    sdk = api.get(SDK_PATH).mock(return_value=not_found())
    api.get(PAGE_PATH).mock(return_value=answer())
    async with make_client() as one, make_client() as other:
        await one.qr("s1")
        await other.qr("s1")
    assert sdk.call_count == 2


async def test_the_session_id_is_quoted_in_the_path(api: respx.MockRouter) -> None:
    route = api.get("/sessions/a%2Fb%20c/auth/qr").mock(return_value=answer())
    async with make_client() as client:
        await client.qr("a/b c")
    assert route.call_count == 1


# --- errors: mapped as the other calls' -----------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, AuthFailed), (403, AuthFailed), (409, Conflict), (422, Conflict),
     (500, ServerError), (503, ServerError), (400, UnexpectedResponse)],
)
async def test_status_codes_map_to_the_exception_tree(
    api: respx.MockRouter, status: int, expected: type[ApiError]
) -> None:
    api.get(SDK_PATH).mock(return_value=httpx.Response(status, json={"message": "nope"}))
    async with make_client() as client:
        with pytest.raises(ApiError) as caught:
            await client.qr("s1")
    assert type(caught.value) is expected
    assert (caught.value.call, caught.value.http_status) == ("qr", status)


async def test_a_429_carries_its_retry_after_and_pauses_the_gate(api: respx.MockRouter) -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=600.0)
    api.get(SDK_PATH).mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))
    async with make_client(gate=gate, clock=clock) as client:
        with pytest.raises(RateLimited) as caught:
            await client.qr("s1")
    assert caught.value.retry_after == 7.0
    assert gate.paused_for() == pytest.approx(7.0)


async def test_after_a_429_the_next_qr_request_waits_at_the_gate(api: respx.MockRouter) -> None:
    clock = FakeClock()
    gate = RateGate(clock, rate_limit=None, max_retry_after=600.0)
    api.get(SDK_PATH).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "3"}), answer()])
    async with make_client(gate=gate, clock=clock) as client:
        with pytest.raises(RateLimited):
            await client.qr("s1")
        await client.qr("s1")
    assert clock.sleeps == [3.0]


@pytest.mark.parametrize(
    ("failure", "expected"),
    [(httpx.ConnectError("refused"), ApiUnreachable), (httpx.ReadTimeout("slow"), ApiTimeout)],
)
async def test_transport_failures_map_to_the_exception_tree(
    api: respx.MockRouter, failure: Exception, expected: type[ApiError]
) -> None:
    api.get(SDK_PATH).mock(side_effect=failure)
    async with make_client() as client:
        with pytest.raises(expected) as caught:
            await client.qr("s1")
    assert caught.value.call == "qr"
    assert caught.value.__context__ is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": None},
        {"data": ""},
        {"data": "   "},
        {"data": 5},
        {"data": [PAYLOAD]},
        {"data": {"qr": PAYLOAD}},
        [PAYLOAD],
        PAYLOAD,
    ],
)
async def test_a_missing_empty_or_non_string_payload_is_malformed_and_shows_no_body(
    api: respx.MockRouter, body: object
) -> None:
    api.get(SDK_PATH).mock(return_value=httpx.Response(200, json=body))
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.qr("s1")
    error = caught.value
    assert (error.call, error.http_status) == ("qr", 200)
    assert PAYLOAD not in str(error)
    assert PAYLOAD not in repr(error)
    assert error.excerpt == ""


@pytest.mark.parametrize("body", [b"", b"not json", b'{"data": "2@abc', b"<html>QR</html>"])
async def test_a_body_that_is_not_json_is_malformed(api: respx.MockRouter, body: bytes) -> None:
    api.get(SDK_PATH).mock(return_value=httpx.Response(200, content=body))
    async with make_client() as client:
        with pytest.raises(UnexpectedResponse) as caught:
            await client.qr("s1")
    assert caught.value.excerpt == ""


# --- the payload is a secret --------------------------------------------------------


async def test_the_payload_joins_the_process_secrets(api: respx.MockRouter) -> None:
    secrets = Secrets()
    api.get(SDK_PATH).mock(return_value=answer())
    async with make_client(secrets=secrets) as client:
        await client.qr("s1")
    assert PAYLOAD in secrets
    assert secrets.redact(f"scan {PAYLOAD} now") == "scan [REDACTED] now"


async def test_only_the_last_few_payloads_of_a_session_stay_secrets(
    api: respx.MockRouter,
) -> None:
    secrets = Secrets()
    rotated = [f"2@rotation-{n:02d},a2V5,aWQ=" for n in range(QR_PAYLOADS_KEPT + 2)]
    api.get(SDK_PATH).mock(side_effect=[answer(p) for p in rotated])
    async with make_client(secrets=secrets) as client:
        for _ in rotated:
            await client.qr("s1")
    assert [p in secrets for p in rotated] == [False, False, True, True, True]
    assert KEY in secrets  # the key is never dropped
    assert len(secrets) == 1 + QR_PAYLOADS_KEPT


async def test_the_payload_is_in_no_event_and_redacted_from_any_log_line(
    api: respx.MockRouter,
) -> None:
    secrets = Secrets()
    api.get(SDK_PATH).mock(return_value=answer())
    with structlog.testing.capture_logs() as events:
        async with make_client(secrets=secrets) as client:
            code = await client.qr("s1")
    assert [e["event"] for e in events] == ["api.request"]
    assert events[0]["call"] == "qr"
    assert PAYLOAD not in repr(events)

    out = io.StringIO()
    logs.configure("json", "debug", out, secrets=secrets)
    try:
        structlog.get_logger("test").warning("careless", payload=code.reveal(), code=code)
    finally:
        reset_logging()
    line = json.loads(out.getvalue())
    assert PAYLOAD not in out.getvalue()
    assert line["payload"] == "[REDACTED]"


def test_a_qr_code_shows_its_payload_in_no_repr_str_format_or_pickle() -> None:
    code = QrCode("s1", PAYLOAD)
    for shown in (repr(code), str(code), f"{code}", f"{code!r}", repr([code]), repr({1: code})):
        assert PAYLOAD not in shown
        assert "s1" in shown
    with pytest.raises(TypeError):
        pickle.dumps(code)
    with pytest.raises(AttributeError):
        code.session_id = "s2"
    assert not hasattr(code, "__dict__")


def test_qr_codes_are_equal_by_session_and_payload() -> None:
    assert QrCode("s1", PAYLOAD) == QrCode("s1", PAYLOAD)
    assert QrCode("s1", PAYLOAD) != QrCode("s1", PAYLOAD + "x")
    assert QrCode("s1", PAYLOAD) != QrCode("s2", PAYLOAD)
    assert len({QrCode("s1", PAYLOAD), QrCode("s1", PAYLOAD)}) == 1
