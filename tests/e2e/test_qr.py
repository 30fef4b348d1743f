"""The status page's QR code end to end: the real client, gate and ``QrFeed`` against the
simulator over HTTP on 127.0.0.1, the SVG read back by chromium and zbar."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor import logs
from supervisor.domain.secrets import Secrets
from supervisor.runtime.qr import gated_qr
from supervisor.runtime.wiring import build
from supervisor.simulator import Simulator, SimulatorServer, parse_scenario
from supervisor.web.qr import QrFeed
from tests.conftest import reset_logging
from tests.e2e.conftest import API_KEY, settings_for
from tests.fakes import FakeClock, MaxRandom, ShiftableClock
from tests.qrcodes import decode_svg

pytestmark = pytest.mark.e2e


@pytest.fixture
def server() -> Iterator[SimulatorServer]:
    scenario = parse_scenario({"session_count": 2, "qr_rotate": 20,
                               "sessions": [{"id": "shop", "status": "SCAN_QR_CODE"}]})
    sim = Simulator(scenario, api_key=API_KEY, clock=ShiftableClock())
    with SimulatorServer(sim) as running:
        yield running


async def test_the_feed_shows_the_simulators_code_follows_its_rotation_and_ends_when_healthy(
    server: SimulatorServer, tmp_path: Path
) -> None:
    sim = server.simulator
    sim_clock = sim.clock
    assert isinstance(sim_clock, ShiftableClock)
    secrets, out = Secrets(), io.StringIO()
    logs.configure("json", "debug", out, secrets=secrets)
    runtime = build(settings_for(server), rng=MaxRandom(), secrets=secrets)
    clock = FakeClock()
    feed = QrFeed(gated_qr(lambda: runtime), clock, refresh=20.0)
    seen: list[str] = []
    try:
        svg = await feed.svg("shop")
        assert svg is not None
        first = sim.qr_payload("shop")
        assert first is not None
        seen.append(first)
        assert decode_svg(svg, tmp_path) == [first]
        assert await feed.svg("shop") == svg  # within refresh: no request

        sim_clock.advance(20.0)  # WhatsApp's next code
        clock.advance(20.0)
        svg = await feed.svg("shop")
        second = sim.qr_payload("shop")
        assert second is not None and second != first
        seen.append(second)
        assert svg is not None and decode_svg(svg, tmp_path) == [second]

        sim.set_status("shop", "WORKING")  # scanned: no code any more
        feed.forget("shop")
        assert await feed.svg("shop") is None
        assert await feed.svg("sess-0001") is None
    finally:
        await runtime.aclose()
        reset_logging()
    asked = [(r.path, r.status) for r in sim.requests() if r.kind == "qr"]
    assert asked == [("/sessions/shop/auth/qr", 200)] * 2 + [
        ("/sessions/shop/auth/qr", 422), ("/sessions/sess-0001/auth/qr", 422)]
    text = out.getvalue()
    assert '"qr.fetched"' in text
    for payload in seen:
        assert payload not in text
        assert payload.split(",")[1] not in text
