"""What every benchmark does: start a simulator per tool, start the tools, wait on the
simulator's request log, stop everything.

The simulators run in this process (uvicorn in a thread each), so the bench can change
their sessions and faults directly and read their request logs, the source of truth for
every count and time; each log's ``monotonic`` is this process's ``time.monotonic()``.
Our supervisor and the naive loop each run in their own process against their own
simulator with the same scenario, side by side.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.procs import NAIVE, OURS, TOOLS, Tool
from supervisor.simulator import RequestRecord, SimulatorServer, parse_scenario

API_KEY = "bench-key-7c1f0e9a52d4"
RESULTS = Path(__file__).resolve().parent / "results"
T = TypeVar("T")


class BenchError(Exception):
    """A benchmark could not measure what it set out to (a tool died, a wait timed out)."""


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               step: float = 0.01, tools: dict[str, Tool] | None = None) -> None:
    """Wait for a condition, with a deadline; fail at once if a tool process died."""
    deadline = time.monotonic() + timeout
    while not condition():
        for kind, tool in (tools or {}).items():
            if not tool.alive():
                raise BenchError(f"{kind} exited ({tool.proc and tool.proc.returncode}) "
                                 f"while waiting for {what}; see {tool.log_path}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def sample_when(
    sides: dict[str, Side],
    ready: Callable[[Side], bool],
    sample: Callable[[Side], T],
    timeout: float,
    what: str,
) -> dict[str, T]:
    """For each side, ``sample(side)`` taken as soon as ``ready(side)`` holds."""
    tools = {kind: side.tool for kind, side in sides.items()}
    taken: dict[str, T] = {}

    def all_taken() -> bool:
        for kind, side in sides.items():
            if kind not in taken and ready(side):
                taken[kind] = sample(side)
        return len(taken) == len(sides)

    wait_until(all_taken, timeout, what, step=0.005, tools=tools)
    return taken


def start_simulator(scenario: dict[str, Any]) -> SimulatorServer:
    server = SimulatorServer(scenario=parse_scenario(scenario, "bench"), api_key=API_KEY)
    return server.start()


def requests(server: SimulatorServer, kind: str | None = None,
             after: int | None = None) -> list[RequestRecord]:
    records = server.simulator.requests(after=after)
    return records if kind is None else [r for r in records if r.kind == kind]


def list_count(server: SimulatorServer) -> int:
    return len(requests(server, "list"))


@dataclass
class Side:
    """One tool and its simulator."""

    kind: str
    server: SimulatorServer
    tool: Tool


@contextlib.contextmanager
def side_by_side(
    name: str,
    scenario: dict[str, Any],
    *,
    poll_interval: float,
    settings: dict[str, Any] | None = None,
    tools: tuple[str, ...] = TOOLS,
    run: int = 0,
) -> Iterator[dict[str, Side]]:
    """A simulator per tool (same scenario), each tool started against its own; all of
    it stopped on the way out. Yields ``{"ours": Side, "naive": Side}``."""
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sides: dict[str, Side] = {}
    try:
        for kind in tools:
            server = start_simulator(scenario)
            tool = Tool(kind, server.base_url, API_KEY, poll_interval=poll_interval,
                        settings=settings if kind == OURS else None,
                        log=logs / f"{name}-{run}-{kind}.log")
            sides[kind] = Side(kind, server, tool)
        for side in sides.values():
            side.tool.start()
        yield sides
    finally:
        for side in sides.values():
            side.tool.stop()
        for side in sides.values():
            side.server.stop()


def wait_first_poll(sides: dict[str, Side], timeout: float = 30.0) -> None:
    """Until every tool has listed the sessions once (it is up and polling)."""
    tools = {kind: side.tool for kind, side in sides.items()}
    wait_until(lambda: all(list_count(s.server) >= 1 for s in sides.values()), timeout,
               "the first poll", tools=tools)


__all__ = ["API_KEY", "NAIVE", "OURS", "RESULTS", "BenchError", "Side", "list_count",
           "requests", "sample_when", "side_by_side", "start_simulator", "wait_first_poll",
           "wait_until"]
