"""A 429 burst: requests sent while a ``Retry-After`` is in force.

At each burst the simulator answers the next ``burst`` requests 429 with a
``Retry-After`` of ``retry_after`` seconds (as delay-seconds, then as an HTTP-date), and
a few sessions fail at the same moment, so that restarts are waiting when it clears.
The simulator marks a request *early* when it arrives before the last ``Retry-After``
given to the key has passed (and answers it 429 again, with a fresh ``Retry-After``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from bench.common import BenchError, side_by_side, wait_first_poll
from bench.procs import NAIVE, OURS, TOOLS
from bench.report import Figure, Result, Target

FORMS = ("seconds", "http-date")


@dataclass(frozen=True)
class Size:
    runs: int = 3
    bursts: int = 2  # per run, alternating the Retry-After forms
    burst: int = 2  # 429s per burst
    retry_after: float = 3.0
    spacing: float = 9.0  # seconds from one burst to the next
    failing: int = 3  # sessions that fail at each burst
    sessions: int = 20
    poll_interval: float = 1.0
    start_delay: float = 0.5


FULL = Size()
QUICK = Size(runs=1)


def run(size: Size = FULL) -> Result:
    result = Result("retry_after", "429 bursts: requests while Retry-After is in force",
                    settings=asdict(size))
    early: dict[str, list[float]] = {k: [] for k in TOOLS}
    limited: dict[str, list[float]] = {k: [] for k in TOOLS}
    restarted: dict[str, list[float]] = {k: [] for k in TOOLS}
    for index in range(size.runs):
        for kind, (e, n429, share) in _one_run(size, index).items():
            early[kind].append(e)
            limited[kind].append(n429)
            restarted[kind].append(share)
    result.figures += [
        Figure("retry_after.early", "requests sent while a Retry-After was in force",
               "requests", "run", early[OURS], early[NAIVE], Target.max_at_most(0, "0"),
               digits=0),
        Figure("retry_after.answered_429", "requests answered 429", "requests", "run",
               limited[OURS], limited[NAIVE], digits=0),
        Figure("retry_after.restarted", "sessions failed at a burst and restarted by the "
               "end of the run", "share", "run", restarted[OURS], restarted[NAIVE], digits=2),
    ]
    result.notes.append(
        f"{size.bursts} bursts per run of {size.burst} x 429 with Retry-After "
        f"{size.retry_after:g} s ({' and '.join(FORMS)}), {size.spacing:g} s apart; P = "
        f"{size.poll_interval:g} s. An early request is answered 429 again with a fresh "
        "Retry-After, so a client that ignores it keeps itself locked out.")
    return result


def _one_run(size: Size, index: int) -> dict[str, tuple[float, float, float]]:
    scenario = {"seed": index, "session_count": size.sessions, "start_delay": size.start_delay}
    with side_by_side("retry_after", scenario, poll_interval=size.poll_interval,
                      run=index) as sides:
        wait_first_poll(sides)
        time.sleep(size.poll_interval)
        begin = time.monotonic()
        ids = sides[OURS].server.simulator.session_ids()
        victims = iter(ids)
        failed: list[str] = []
        for burst in range(size.bursts):
            form = FORMS[burst % len(FORMS)]
            chosen = [next(victims) for _ in range(size.failing)]
            failed += chosen
            for side in sides.values():
                sim = side.server.simulator
                sim.update_faults(rate_limit={"burst": size.burst, "retry_after": size.retry_after,
                                              "retry_after_form": form})
                for session_id in chosen:
                    sim.set_status(session_id, "FAILED")
            time.sleep(size.spacing)
        out: dict[str, tuple[float, float, float]] = {}
        for kind, side in sides.items():
            if not side.tool.alive():
                raise BenchError(f"{kind} exited during the run; see {side.tool.log_path}")
            sim = side.server.simulator
            records = [r for r in sim.requests() if r.monotonic >= begin]
            early = sum(1 for r in records if r.early)
            n429 = sum(1 for r in records if r.status == 429)
            restarted = {r.session for r in records
                         if r.kind == "restart" and r.status is not None and r.status < 300}
            share = sum(1 for s in failed if s in restarted) / len(failed)
            out[kind] = (early, n429, share)
        return out
