"""A restart storm: every session fails at once under a server rate limit.

The simulator accepts at most ``server_limit`` requests in any one-second window (a
sliding window) and answers the rest 429 with ``Retry-After: 1``; our ``rate_limit`` is
set below it. From the request log: 429s after the storm (all self-inflicted: nothing
else is sending), how fast the sessions were restarted, and how much of our budget that
used.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from bench.common import BenchError, side_by_side, wait_first_poll, wait_until
from bench.procs import NAIVE, OURS, TOOLS
from bench.report import Figure, Result, Target


@dataclass(frozen=True)
class Size:
    runs: int = 2
    sessions: int = 1000
    server_limit: int = 60  # requests per sliding one-second window
    rate_limit: float = 50.0  # ours, below the server's
    poll_interval: float = 1.0
    start_delay: float = 1.0
    timeout: float = 150.0  # for every session to be running again


FULL = Size()
QUICK = Size(runs=1, sessions=200, timeout=60.0)


def run(size: Size = FULL) -> Result:
    result = Result("restart_storm", f"{size.sessions:,} sessions fail at once under a "
                    f"{size.server_limit}/s server limit", settings=asdict(size))
    names = ("n429", "early", "rate", "requests_rate", "busiest", "span", "per_session",
             "restored")
    found: dict[str, dict[str, list[float]]] = {k: {n: [] for n in names} for k in TOOLS}
    for index in range(size.runs):
        for kind, values in _one_run(size, index).items():
            for name in names:
                found[kind][name].append(values[name])
    ours, naive = found[OURS], found[NAIVE]
    budget_use = [r / size.rate_limit for r in ours["requests_rate"]]
    result.figures += [
        Figure("restart_storm.self_inflicted_429", "self-inflicted 429s", "responses", "run",
               ours["n429"], naive["n429"], Target.max_at_most(0, "0"), digits=0),
        Figure("restart_storm.early", "requests sent while a Retry-After was in force",
               "requests", "run", ours["early"], naive["early"], digits=0),
        Figure("restart_storm.restored", "sessions running again at the end", "share", "run",
               ours["restored"], naive["restored"], Target.min_at_least(1.0, "all"), digits=2),
        Figure("restart_storm.restart_rate", "accepted restarts per second", "restarts/s",
               "run", ours["rate"], naive["rate"], digits=1),
        Figure("restart_storm.budget_use",
               f"requests per second / our rate_limit ({size.rate_limit:g}/s)", "share", "run",
               budget_use, None, Target.min_at_least(0.9, ">= 0.90 (as fast as it allows)"),
               digits=2),
        Figure("restart_storm.busiest_second", "most requests sent in any one second",
               "requests", "run", ours["busiest"], naive["busiest"], digits=0),
        Figure("restart_storm.time_to_restart_all", "storm to the last accepted restart", "s",
               "run", ours["span"], naive["span"], digits=1),
        Figure("restart_storm.restarts_per_session", "restart requests per session",
               "requests", "run", ours["per_session"], naive["per_session"], digits=2),
    ]
    result.notes.append(
        f"Server limit {size.server_limit} requests per sliding 1 s window (Retry-After: 1); "
        f"our rate_limit {size.rate_limit:g}/s; P = {size.poll_interval:g} s; a restart "
        f"takes {size.start_delay:g} s. Budget use: every request (lists included) from the "
        "first accepted restart to the last, per second, over rate_limit.")
    return result


def _one_run(size: Size, index: int) -> dict[str, dict[str, float]]:
    scenario = {
        "seed": index,
        "session_count": size.sessions,
        "start_delay": size.start_delay,
        "rate_limit": {"requests": size.server_limit, "window": 1.0, "retry_after": 1},
    }
    settings = {"rate_limit": size.rate_limit}
    with side_by_side("restart_storm", scenario, poll_interval=size.poll_interval,
                      settings=settings, run=index) as sides:
        wait_first_poll(sides)
        time.sleep(size.poll_interval)
        storm = time.monotonic()
        for side in sides.values():
            sim = side.server.simulator
            for session_id in sim.session_ids():
                sim.set_status(session_id, "FAILED")
        tools = {k: s.tool for k, s in sides.items()}

        def restored() -> bool:
            return all(
                all(status == "WORKING" for status in s.server.simulator.statuses().values())
                for s in sides.values()
            )

        try:
            wait_until(restored, size.timeout, "every session running again", step=0.5,
                       tools=tools)
        except BenchError:
            if not all(t.alive() for t in tools.values()):
                raise  # a tool died; otherwise report how far each got
        out: dict[str, dict[str, float]] = {}
        for kind, side in sides.items():
            sim = side.server.simulator
            records = [r for r in sim.requests() if r.monotonic >= storm]
            accepted = [r.monotonic for r in records if r.kind == "restart"
                        and r.status is not None and r.status < 300]
            restarts = [r for r in records if r.kind == "restart"]
            statuses = sim.statuses()
            last = max(accepted) if accepted else storm
            span = last - storm
            first = min(accepted) if accepted else storm
            sent = [r for r in records if first <= r.monotonic <= last]
            out[kind] = {
                "n429": sum(1 for r in records if r.status == 429),
                "early": sum(1 for r in records if r.early),
                "rate": (len(accepted) - 1) / (last - first) if last > first else 0.0,
                "requests_rate": (len(sent) - 1) / (last - first) if last > first else 0.0,
                "busiest": _busiest_second([r.monotonic for r in records]),
                "span": span,
                "per_session": len(restarts) / size.sessions,
                "restored": sum(1 for s in statuses.values() if s == "WORKING") / len(statuses),
            }
        return out


def _busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any window of one second (the server's sliding window)."""
    times = sorted(arrivals)
    most = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most
