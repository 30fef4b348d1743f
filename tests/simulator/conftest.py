"""Fixtures for the simulator's tests: a manual clock, and one live server shared by
the HTTP tests (reset before each of them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from supervisor.simulator import ManualClock, Scenario, Simulator, SimulatorServer
from supervisor.simulator.faults import Faults
from tests.fakes import ShiftableClock

API_KEY = "test-key-0123456789"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_sim(clock: ManualClock) -> Callable[..., Simulator]:
    """Build a Simulator on the manual clock: ``make_sim(sessions=3, start_delay=2, ...)``
    where keyword arguments other than ``sessions`` and ``scenario`` are fault settings."""

    def make(sessions: int = 3, scenario: Scenario | None = None, **faults: object) -> Simulator:
        sim = Simulator(scenario, sessions=sessions, api_key=API_KEY, clock=clock)
        if faults:
            sim.replace_faults(**faults)
        return sim

    return make


LIVE_SCENARIO = Scenario(session_count=5, faults=Faults(start_delay=0.5, seed=7))


@pytest.fixture(scope="session")
def live_clock() -> ShiftableClock:
    return ShiftableClock()


@pytest.fixture(scope="session")
def live_server(live_clock: ShiftableClock) -> Iterator[SimulatorServer]:
    sim = Simulator(LIVE_SCENARIO, api_key=API_KEY, clock=live_clock)
    with SimulatorServer(sim) as server:
        yield server


@pytest.fixture
def server(live_server: SimulatorServer) -> SimulatorServer:
    """The shared live server, back to its scenario's start."""
    live_server.simulator.reset()
    assert live_server.wait_listening(True)
    return live_server


@pytest.fixture(scope="session")
def _live_clients(live_server: SimulatorServer) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    # Made once: building an httpx.Client (its TLS context) costs tens of milliseconds.
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    base = live_server.base_url
    with (
        httpx.Client(base_url=base, headers=headers, timeout=5.0) as keyed,
        httpx.Client(base_url=base, timeout=5.0) as anonymous,
    ):
        yield keyed, anonymous


@pytest.fixture
def client(
    server: SimulatorServer, _live_clients: tuple[httpx.Client, httpx.Client]
) -> httpx.Client:
    """A client of the live server that sends the API key."""
    return _live_clients[0]


@pytest.fixture
def anon(server: SimulatorServer, _live_clients: tuple[httpx.Client, httpx.Client]) -> httpx.Client:
    """A client of the live server that sends no Authorization header."""
    return _live_clients[1]
