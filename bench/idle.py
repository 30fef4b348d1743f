"""What a quiet account costs: API requests and CPU per poll cycle, every session healthy.

From the request log: every request between two list requests some cycles apart,
divided by the number of cycles. CPU: the tool process's CPU time over the same cycles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bench.common import list_count, requests, sample_when, side_by_side, wait_first_poll
from bench.procs import NAIVE, OURS, TOOLS
from bench.report import Figure, Result, Target


@dataclass(frozen=True)
class Size:
    runs: int = 3
    sessions: int = 1000
    poll_interval: float = 0.5
    cycles: int = 20  # measured, after two to warm up


FULL = Size()
QUICK = Size(runs=1, cycles=10)


def run(size: Size = FULL) -> Result:
    result = Result("idle_requests", "a quiet account: requests and CPU per cycle",
                    settings=asdict(size))
    per_cycle: dict[str, list[float]] = {k: [] for k in TOOLS}
    cpu_ms: dict[str, list[float]] = {k: [] for k in TOOLS}
    for index in range(size.runs):
        for kind, (reqs, cpu) in _one_run(size, index).items():
            per_cycle[kind].append(reqs)
            cpu_ms[kind].append(cpu * 1000)
    result.figures += [
        Figure("idle_requests.per_cycle",
               f"API requests per poll cycle, {size.sessions:,} healthy sessions", "requests",
               "run", per_cycle[OURS], per_cycle[NAIVE], Target.all_equal(1, "1"), digits=2),
        Figure("idle_requests.cpu_per_cycle",
               f"CPU time per poll cycle, {size.sessions:,} healthy sessions", "ms", "run",
               cpu_ms[OURS], cpu_ms[NAIVE], digits=1),
    ]
    return result


def _one_run(size: Size, index: int) -> dict[str, tuple[float, float]]:
    scenario = {"seed": index, "session_count": size.sessions}
    with side_by_side("idle_requests", scenario, poll_interval=size.poll_interval,
                      run=index) as sides:
        wait_first_poll(sides)
        timeout = 10 * size.poll_interval * (size.cycles + 3) + 30
        # (lists seen, CPU time) as soon as each tool has made its third list request...
        first = sample_when(sides, lambda s: list_count(s.server) >= 3,
                            lambda s: (list_count(s.server), s.tool.cpu()), timeout, "warm-up")
        # ...and as soon as it has made ``cycles`` more.
        last = sample_when(sides, lambda s: list_count(s.server) >= first[s.kind][0] + size.cycles,
                           lambda s: s.tool.cpu(), timeout, f"{size.cycles} cycles")
        out: dict[str, tuple[float, float]] = {}
        for kind, side in sides.items():
            seen, cpu = first[kind]
            lists = requests(side.server, "list")
            start, end = lists[seen - 1].monotonic, lists[seen - 1 + size.cycles].monotonic
            within = [r for r in requests(side.server) if start <= r.monotonic < end]
            out[kind] = (len(within) / size.cycles, (last[kind] - cpu) / size.cycles)
        return out
