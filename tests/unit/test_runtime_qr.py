"""``runtime.qr.gated_qr``: the status page's QR fetch goes through the daemon's client,
so its rate gate (budget and Retry-After pause) and its key, as the cycle's calls do, and
answers at once, sending nothing, while the key is refused or the gate is paused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from pydantic import SecretStr

from supervisor.api.errors import AuthFailed, RateLimited, ServerError
from supervisor.config.model import Settings
from supervisor.domain.secrets import Secrets
from supervisor.runtime.qr import gated_qr
from supervisor.runtime.wiring import Runtime, build
from tests.fakes import FakeClock

KEY = "sk-gated-qr-test-key-0001"
PAYLOAD = "2@gated-qr-payload-0001,a2V5,aWQ="


class Api:
    """The API as a transport: every request is written down and answered by ``reply``."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.reply: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(
            200, json={"data": PAYLOAD})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.reply(request)


@pytest.fixture
async def made() -> AsyncIterator[tuple[Runtime, Api, FakeClock, Secrets]]:
    api, clock, secrets = Api(), FakeClock(), Secrets()
    settings = Settings(api_key=SecretStr(KEY), base_url="https://api.example",
                        state_path=":memory:", rate_limit=1)  # type: ignore[arg-type]
    runtime = build(settings, clock=clock, transport=httpx.MockTransport(api.handle),
                    secrets=secrets)
    yield runtime, api, clock, secrets
    await runtime.aclose()


async def test_the_fetch_asks_the_runtimes_client_and_its_payload_is_a_secret(
    made: tuple[Runtime, Api, FakeClock, Secrets],
) -> None:
    runtime, api, _, secrets = made
    code = await gated_qr(lambda: runtime)("s1")
    assert code.reveal() == PAYLOAD
    assert api.paths == ["/sessions/s1/auth/qr"]
    assert PAYLOAD in secrets


async def test_the_fetch_counts_in_the_gates_budget_like_the_cycles_calls(
    made: tuple[Runtime, Api, FakeClock, Secrets],
) -> None:
    runtime, api, clock, _ = made
    api.reply = lambda request: httpx.Response(200, json={"sessions": []}) if (
        request.url.path == "/sessions") else httpx.Response(200, json={"data": PAYLOAD})
    await runtime.supervisor.poll()
    await gated_qr(lambda: runtime)("s1")
    assert api.paths == ["/sessions", "/sessions/s1/auth/qr"]
    assert clock.sleeps and clock.sleeps[-1] == pytest.approx(1.0)  # rate_limit = 1 a second


async def test_while_the_gate_is_paused_nothing_is_sent(
    made: tuple[Runtime, Api, FakeClock, Secrets],
) -> None:
    runtime, api, clock, _ = made
    api.reply = lambda _: httpx.Response(429, headers={"Retry-After": "30"})
    fetch = gated_qr(lambda: runtime)
    with pytest.raises(RateLimited) as first:
        await fetch("s1")
    assert first.value.http_status == 429
    with pytest.raises(RateLimited) as second:
        await fetch("s1")
    assert second.value.http_status is None  # nothing was sent
    assert second.value.retry_after == pytest.approx(30.0)
    assert "nothing was sent" in str(second.value)
    assert api.paths == ["/sessions/s1/auth/qr"]
    clock.advance(30.0)
    api.reply = lambda _: httpx.Response(200, json={"data": PAYLOAD})
    assert (await fetch("s1")).reveal() == PAYLOAD


async def test_while_the_key_is_refused_nothing_is_sent(
    made: tuple[Runtime, Api, FakeClock, Secrets],
) -> None:
    runtime, api, clock, _ = made
    api.reply = lambda _: httpx.Response(401, json={"message": "Unauthorized"})
    assert not (await runtime.supervisor.poll()).ok  # the cycle learns the key is refused
    sent = len(api.paths)
    with pytest.raises(AuthFailed) as caught:
        await gated_qr(lambda: runtime)("s1")
    assert caught.value.http_status is None
    assert caught.value.call == "qr"
    assert len(api.paths) == sent
    clock.advance(runtime.settings.auth_retry_interval)
    api.reply = lambda _: httpx.Response(503)
    with pytest.raises(ServerError):  # the wait is over: asked again
        await gated_qr(lambda: runtime)("s1")


async def test_each_fetch_uses_the_runtime_in_use_then(
    made: tuple[Runtime, Api, FakeClock, Secrets],
) -> None:
    runtime, api, _, _ = made
    other_api = Api()
    other = build(runtime.settings, clock=FakeClock(),
                  transport=httpx.MockTransport(other_api.handle))
    try:
        current = [runtime]
        fetch = gated_qr(lambda: current[0])
        await fetch("s1")
        current[0] = other  # a reload swapped the runtime
        await fetch("s1")
    finally:
        await other.aclose()
    assert (len(api.paths), len(other_api.paths)) == (1, 1)
