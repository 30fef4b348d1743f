"""How soon a failed session is restarted, and with how many restart requests.

Sessions fail one by one at random times (each a session that has not failed before, so
never in backoff); each comes back ``start_delay`` seconds after a restart. From the
simulator's request log: the time from a failure to the first restart request for that
session, and the number of restart requests per outage.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass

from bench.common import BenchError, side_by_side, wait_first_poll
from bench.procs import NAIVE, OURS, TOOLS
from bench.report import Figure, Result, Target


@dataclass(frozen=True)
class Size:
    runs: int = 3
    failures: int = 80  # per run, each a session that has not failed before
    failure_rate: float = 4.0  # failures per second, at random times
    healthy: int = 20  # sessions that never fail
    poll_interval: float = 1.0
    start_delay: float = 2.0  # a restart takes this long to bring a session back
    rate_limit: float = 50.0  # our budget, raised so that it never delays a restart here


FULL = Size()
QUICK = Size(runs=1, failures=30)


def run(size: Size = FULL) -> Result:
    p = size.poll_interval
    result = Result("restart_latency", "failure to restart request; restarts per outage",
                    settings={**asdict(size), "poll_jitter": 0.1, "backoff": "defaults"})
    latency: dict[str, list[float]] = {k: [] for k in TOOLS}
    worst: dict[str, list[float]] = {k: [] for k in TOOLS}
    per_outage: dict[str, list[float]] = {k: [] for k in TOOLS}
    missed: dict[str, list[float]] = {k: [] for k in TOOLS}
    pooled: dict[str, list[float]] = {k: [] for k in TOOLS}
    for index in range(size.runs):
        found = _one_run(size, index)
        for kind in TOOLS:
            delays, counts, not_restarted = found[kind]
            pooled[kind] += delays
            latency[kind].append(statistics.median(delays) if delays else float("inf"))
            worst[kind].append(max(delays) if delays else float("inf"))
            per_outage[kind] += counts
            missed[kind].append(not_restarted)
    result.figures += [
        Figure("restart_latency.median", "failure to restart request (median of all)", "s",
               "failure", pooled[OURS], pooled[NAIVE],
               Target.median_at_most(p / 2 + 0.1, f"median <= {p / 2 + 0.1:.2f} s (P/2 + 0.1)")),
        Figure("restart_latency.run_median", "failure to restart request, median of a run",
               "s", "run", latency[OURS], latency[NAIVE]),
        Figure("restart_latency.worst", "failure to restart request, slowest of a run", "s",
               "run", worst[OURS], worst[NAIVE],
               Target.max_at_most(p + 0.2, f"<= {p + 0.2:.2f} s (P + 0.2), every run")),
        Figure("restarts_per_outage", "restart requests per outage", "requests", "outage",
               per_outage[OURS], per_outage[NAIVE], Target.all_equal(1, "exactly 1, every outage"),
               digits=0),
        Figure("outages_not_restarted", "outages never restarted", "outages", "run",
               missed[OURS], missed[NAIVE], Target.max_at_most(0, "0"), digits=0),
    ]
    result.notes.append(
        f"P = {p:g} s with the default poll_jitter of 0.1 s; {size.failures} failures per run "
        f"at random times, one in each {1 / size.failure_rate:g} s slot, {size.runs} run(s). "
        f"rate_limit is {size.rate_limit:g}/s so that our own budget (measured by "
        "restart_storm) never delays these restarts.")
    return result


def _one_run(size: Size, index: int) -> dict[str, tuple[list[float], list[float], int]]:
    rng = random.Random(1000 + index)
    total = size.failures + size.healthy
    scenario = {"seed": index, "session_count": total, "start_delay": size.start_delay}
    settings = {"rate_limit": size.rate_limit}
    with side_by_side("restart_latency", scenario, poll_interval=size.poll_interval,
                      settings=settings, run=index) as sides:
        wait_first_poll(sides)
        ids = sides[OURS].server.simulator.session_ids()
        victims = rng.sample(ids, size.failures)
        # One failure in each slot of 1/failure_rate seconds, at a uniform random time in
        # it: random times whose phases cover the poll cycle evenly (stratified sampling,
        # which steadies the median without changing what it estimates).
        slot = 1.0 / size.failure_rate
        offsets = [(i + rng.random()) * slot for i in range(size.failures)]
        # Let the first polls settle, and start at a random phase of the poll cycle.
        begin = time.monotonic() + 1.0 + rng.uniform(0.0, size.poll_interval)
        failed: dict[str, list[tuple[str, float]]] = {k: [] for k in sides}
        for offset, session_id in zip(offsets, victims, strict=True):
            delay = begin + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for kind, side in sides.items():
                at = time.monotonic()
                side.server.simulator.set_status(session_id, "FAILED")
                failed[kind].append((session_id, at))
        # Long enough for the last failure to be seen, restarted and seen running again.
        time.sleep(size.start_delay + 3 * size.poll_interval + 0.5)
        for kind, side in sides.items():
            if not side.tool.alive():
                raise BenchError(f"{kind} exited during the run; see {side.tool.log_path}")
        out: dict[str, tuple[list[float], list[float], int]] = {}
        for kind, side in sides.items():
            restarts: dict[str, list[float]] = {}
            for record in side.server.simulator.requests():
                if record.kind == "restart" and record.session is not None:
                    restarts.setdefault(record.session, []).append(record.monotonic)
            delays: list[float] = []
            counts: list[float] = []
            not_restarted = 0
            for session_id, at in failed[kind]:
                after = [t for t in restarts.get(session_id, []) if t >= at]
                counts.append(len(restarts.get(session_id, [])))
                if after:
                    delays.append(min(after) - at)
                else:
                    not_restarted += 1
            out[kind] = (delays, counts, not_restarted)
        return out
