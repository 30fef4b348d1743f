"""Zombie sessions: how soon one is restarted, and what watching for them costs.

A zombie is a session whose status says ``WORKING`` while its engine says it is not
connected (``engine.gows.connected`` false); the simulator makes one through its admin
API. Our supervisor runs in its own process (``python -m supervisor run``, settings in its
environment) against a simulator over real HTTP on 127.0.0.1, side by side with the naive
loop, which believes the status and never restarts one.

* detection: sessions are made zombies one at a time, each at a random phase of the poll
  cycle; the time from the simulator making it one to its first ``stop`` request (the
  supervisor stops a zombie, then restarts it), against ``zombie_after`` + one poll
  interval.
* cost: with zombies waiting out ``zombie_after`` (set far away) and without, the
  requests of each poll cycle other than the list: the target is none.
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import asdict, dataclass

from bench.common import (
    BenchError,
    list_count,
    requests,
    side_by_side,
    wait_first_poll,
    wait_until,
)
from bench.procs import NAIVE, OURS
from bench.report import Figure, Result, Target
from supervisor.simulator import RequestRecord, SimulatorServer


@dataclass(frozen=True)
class Size:
    runs: int = 3
    zombies: int = 8  # per run, one at a time
    sessions: int = 50
    poll_interval: float = 1.0
    zombie_after: float = 3.0
    start_delay: float = 0.2
    cost_cycles: int = 20  # poll cycles counted for the cost figure, each way
    waiting: int = 10  # zombies waiting out zombie_after while the cost is counted


FULL = Size()
QUICK = Size(runs=1, zombies=4, cost_cycles=10)


def run(size: Size = FULL) -> Result:
    result = Result("zombies", "sessions WORKING by status, engine not connected: time to "
                    "their restart; requests per cycle while they are watched",
                    settings=asdict(size))
    detect: list[float] = []
    naive_restarted: list[float] = []
    extra_with: list[float] = []
    extra_without: list[float] = []
    for index in range(size.runs):
        rng = random.Random(1400 + index)
        got, naive = _detection(size, index, rng)
        detect += got
        naive_restarted.append(naive)
        with_zombies, without = _cost(size, index)
        extra_with.append(with_zombies)
        extra_without.append(without)
    limit = size.zombie_after + size.poll_interval
    result.figures += [
        Figure("zombies.restart_after", "zombie made to its stop request (then restart), "
               f"zombie_after {size.zombie_after:g} s, P = {size.poll_interval:g} s", "s",
               "zombie", detect, target=Target.max_at_most(
                   limit, f"<= zombie_after + P = {limit:g} s")),
        Figure("zombies.naive_restarted", "zombies the naive loop restarted (it believes "
               "the status)", "zombies", "run", naive_restarted, digits=0),
        Figure("zombies.extra_requests", f"requests per poll cycle beyond the list, "
               f"{size.waiting} zombies being watched", "requests", "cycle", extra_with,
               target=Target.max_at_most(0, "0"), digits=3),
        Figure("zombies.extra_requests_none", "requests per poll cycle beyond the list, no "
               "zombie", "requests", "cycle", extra_without, digits=3),
    ]
    result.notes.append(
        f"{size.sessions} sessions, P = {size.poll_interval:g} s, zombie_after "
        f"{size.zombie_after:g} s; {size.zombies} zombies per run, one at a time, each made "
        "at a random phase of the poll cycle through the simulator's admin API; the time "
        "is the simulator's, from making it to the stop request. Cost: "
        f"{size.cost_cycles} poll cycles with {size.waiting} zombies watched "
        "(zombie_after 1 h) and as many without, requests other than the list, per cycle.")
    return result


def _stop_of(server: SimulatorServer, victim: str) -> RequestRecord | None:
    return next((r for r in requests(server, "stop") if r.session == victim), None)


def _back(server: SimulatorServer, victim: str) -> bool:
    return (server.simulator.status(victim) == "WORKING"
            and not server.simulator.session(victim)["zombie"])


def _detection(size: Size, index: int, rng: random.Random) -> tuple[list[float], float]:
    scenario = {"seed": index, "session_count": size.sessions,
                "start_delay": size.start_delay}
    times: list[float] = []
    with side_by_side("zombies", scenario, poll_interval=size.poll_interval, run=index,
                      settings={"zombie_after": size.zombie_after}) as sides:
        wait_first_poll(sides)
        ours, tools = sides[OURS].server, {OURS: sides[OURS].tool}
        for victim in rng.sample(ours.simulator.session_ids(), size.zombies):
            time.sleep(rng.uniform(0, size.poll_interval))
            made = time.monotonic()
            for side in sides.values():
                side.server.simulator.set_zombie(victim, True)
            wait_until(functools.partial(lambda v: _stop_of(ours, v) is not None, victim),
                       size.zombie_after + 10 * size.poll_interval,
                       f"the stop of zombie {victim}", tools=tools)
            stop = _stop_of(ours, victim)
            assert stop is not None
            times.append(stop.monotonic - made)
            wait_until(functools.partial(_back, ours, victim), 30, f"zombie {victim} back",
                       tools=tools)
        naive = sum(1 for r in requests(sides[NAIVE].server)
                    if r.kind in ("stop", "restart", "start"))
    return times, float(naive)


def _per_cycle(size: Size, index: int, waiting: int) -> float:
    """Requests beyond the list per poll cycle, with ``waiting`` zombies watched."""
    scenario = {"seed": 100 + index, "session_count": size.sessions}
    with side_by_side("zombies-cost", scenario, poll_interval=size.poll_interval,
                      run=index, tools=(OURS,), settings={"zombie_after": 3600.0}) as sides:
        server = sides[OURS].server
        wait_first_poll(sides)
        for victim in server.simulator.session_ids()[:waiting]:
            server.simulator.set_zombie(victim, True)
        start = list_count(server)
        after = server.simulator.requests()[-1].seq
        wait_until(functools.partial(lambda n: list_count(server) >= n,
                                     start + size.cost_cycles),
                   size.cost_cycles * size.poll_interval * 3 + 10, "the cycles",
                   tools={OURS: sides[OURS].tool})
        counted = server.simulator.requests(after=after)
    cycles = sum(1 for r in counted if r.kind == "list")
    if cycles == 0:
        raise BenchError("no poll cycle was counted")
    return sum(1 for r in counted if r.kind != "list") / cycles


def _cost(size: Size, index: int) -> tuple[float, float]:
    return _per_cycle(size, index, size.waiting), _per_cycle(size, index, 0)
