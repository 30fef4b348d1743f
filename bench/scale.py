"""How far one process scales: CPU per poll cycle and resident memory with 10,000
sessions, over many cycles.

A short poll interval makes the cycles run back to back. Each time a tool's list
request appears in the request log (a new cycle begins), its process's CPU time and
resident memory are read; the CPU of one cycle is the difference between two such
readings. Memory growth compares the median resident memory over the first cycles
after warm-up with that over the last ones; the peak is the kernel's ``VmHWM``. The
naive loop runs alongside, for fewer cycles (it is slower).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

from bench.common import BenchError, requests, side_by_side, wait_first_poll
from bench.procs import NAIVE, OURS, TOOLS, Tool
from bench.report import Figure, Result, Target

MB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    runs: int = 1
    sessions: int = 10_000
    cycles: int = 1000  # of ours
    naive_cycles: int = 300  # the naive loop is slower: it stops after these
    poll_interval: float = 0.1
    warmup: int = 5  # cycles left out
    window: int = 50  # cycles at each end compared for growth
    timeout: float = 900.0


FULL = Size()
QUICK = Size(cycles=100, naive_cycles=100, window=20)


@dataclass
class Trace:
    """One reading per cycle: (CPU seconds, resident bytes)."""

    cpu: list[float]
    rss: list[int]
    peak: int = 0


def run(size: Size = FULL) -> Result:
    result = Result("scale", f"{size.sessions:,} sessions: CPU per cycle, memory",
                    settings=asdict(size))
    cpu: dict[str, list[float]] = {k: [] for k in TOOLS}
    rss: dict[str, list[float]] = {k: [] for k in TOOLS}
    peak: dict[str, list[float]] = {k: [] for k in TOOLS}
    growth: dict[str, list[float]] = {k: [] for k in TOOLS}
    cycles: dict[str, list[float]] = {k: [] for k in TOOLS}
    for index in range(size.runs):
        for kind, trace in _one_run(size, index).items():
            deltas = [b - a for a, b in zip(trace.cpu, trace.cpu[1:], strict=False)]
            cpu[kind] += deltas[size.warmup:]
            resident = trace.rss[size.warmup:]
            rss[kind].append(statistics.median(resident) / MB)
            peak[kind].append(trace.peak / MB)
            window = max(1, min(size.window, len(resident) // 2))
            early = statistics.median(resident[:window])
            late = statistics.median(resident[-window:])
            growth[kind].append(100.0 * (late - early) / early)
            cycles[kind].append(len(deltas))
    result.figures += [
        Figure("scale.cycle_cpu", f"CPU time of one poll cycle, {size.sessions:,} sessions",
               "s", "cycle", cpu[OURS], cpu[NAIVE], Target.median_at_most(0.15, "<= 0.15 s")),
        Figure("scale.rss", f"resident memory, {size.sessions:,} sessions (median)", "MB",
               "run", rss[OURS], rss[NAIVE], digits=1),
        Figure("scale.peak_rss", f"peak resident memory (VmHWM), {size.sessions:,} sessions",
               "MB", "run", peak[OURS], peak[NAIVE], Target.max_at_most(80, "<= 80 MB"),
               digits=1),
        Figure("scale.rss_growth", "resident memory growth, first to last cycles", "%", "run",
               growth[OURS], growth[NAIVE], Target.max_at_most(5, "<= 5 %"), digits=1),
        Figure("scale.cycles", "poll cycles measured", "cycles", "run", cycles[OURS],
               cycles[NAIVE], digits=0),
    ]
    result.notes.append(
        f"P = {size.poll_interval:g} s, so cycles run back to back; the first {size.warmup} "
        f"cycles are left out; growth compares the median over {size.window} cycles after "
        f"them with the median over the last ones. The naive loop runs alongside for "
        f"{size.naive_cycles} cycles.")
    return result


def _one_run(size: Size, index: int) -> dict[str, Trace]:
    scenario = {"seed": index, "session_count": size.sessions}
    with side_by_side("scale", scenario, poll_interval=size.poll_interval, run=index) as sides:
        wait_first_poll(sides, timeout=60.0)
        traces = {kind: Trace([], []) for kind in sides}
        seen = {kind: 0 for kind in sides}
        deadline = time.monotonic() + size.timeout
        wanted = {OURS: size.cycles, NAIVE: size.naive_cycles}
        running = dict(sides)
        # One reading per cycle, until each has done its cycles (+1 for the difference).
        while running:
            for kind, side in list(running.items()):
                if not side.tool.alive():
                    raise BenchError(f"{kind} exited; see {side.tool.log_path}")
                count = len(requests(side.server, "list"))
                if count > seen[kind]:
                    seen[kind] = count
                    _read(side.tool, traces[kind])
                if len(traces[kind].cpu) > wanted[kind] + size.warmup:
                    traces[kind].peak = side.tool.memory()[1]
                    side.tool.stop()
                    del running[kind]
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {size.timeout:g} s")
            time.sleep(0.002)
        return traces


def _read(tool: Tool, trace: Trace) -> None:
    trace.cpu.append(tool.cpu())
    trace.rss.append(tool.memory()[0])


__all__ = ["FULL", "NAIVE", "QUICK", "Size", "run"]
