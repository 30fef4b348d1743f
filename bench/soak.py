"""The long soak: thousands of poll cycles, compressed in time, over many sessions that
fail at random, against the simulator over real HTTP, on a real state file.

    python -m bench.soak                      # 5,000 cycles, 500 sessions, ~2-4 minutes
    python -m bench.soak --cycles 20000 --sessions 1000 --tracemalloc --json

Every ``--report-every`` cycles it prints one line: cycles done, time per cycle (median,
95th percentile, worst), resident memory, Python memory (with ``--tracemalloc``, which
slows everything down), open file descriptors, asyncio tasks, restarts sent, sessions
down right now, history rows and the state file's size (with its WAL). The simulator
runs in the same process (a thread), so its request log is cleared at each report to
keep its memory out of the measurement. At the end it stops the faults,
polls until every session is up and seen up, and checks that nothing leaked.

Exit status 0 when every failure was recovered and the file descriptors, tasks and
memory came back within bounds; 1 otherwise (the last line says why). The short version
of this runs in the test suite (``tests/faults/test_soak.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from supervisor.config.model import BackoffSettings, Settings
from supervisor.domain.models import Phase
from supervisor.runtime.wiring import build
from supervisor.simulator import SimulatorServer, parse_scenario

API_KEY = "sk-SOAK-RECOGNISABLE-KEY-51c0"


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _state_kib(state: str) -> int:
    """The state file and its write-ahead log, in KiB."""
    if state == ":memory:":
        return 0
    paths = (Path(state), Path(state + "-wal"))
    return sum(p.stat().st_size for p in paths if p.exists()) // 1024


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=0.01,
                        help="seconds between the end of one cycle and the next")
    parser.add_argument("--failure-rate", type=float, default=0.002,
                        help="chance per second that a healthy session fails")
    parser.add_argument("--server-errors", type=float, default=0.02,
                        help="share of restart requests answered 500")
    parser.add_argument("--state", default=None,
                        help="state file (default: a temporary one); :memory: for none")
    parser.add_argument("--report-every", type=int, default=500)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace Python memory (several times slower)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    return parser.parse_args(argv)


def _line(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data), flush=True)
    else:
        print("  ".join(f"{k}={v}" for k, v in data.items()), flush=True)


async def soak(args: argparse.Namespace) -> int:
    counts: Counter[str] = Counter()

    def count(_logger: Any, _name: str, event_dict: Any) -> Any:
        counts[str(event_dict["event"])] += 1
        raise structlog.DropEvent

    structlog.configure(processors=[count])
    scenario = parse_scenario({
        "session_count": args.sessions, "start_delay": 0.05, "seed": args.seed,
        "random_failures": {"rate": args.failure_rate},
        "server_errors": {"rate": args.server_errors, "kinds": ["restart"]},
    }, "soak")
    server = SimulatorServer(scenario=scenario, api_key=API_KEY).start()
    sim = server.simulator
    workdir = tempfile.TemporaryDirectory(prefix="wasend-soak-")
    state = args.state or str(Path(workdir.name) / "state.db")
    fds_before, tasks_before = _fds(), len(asyncio.all_tasks())
    settings = Settings(
        base_url=server.base_url, api_key=SecretStr(API_KEY), poll_interval=args.interval,
        poll_jitter=0.0, request_timeout=5.0, rate_limit=1000.0, max_restarts=1_000_000,
        backoff=BackoffSettings(initial=0.2, max=2.0, multiplier=2.0),
        starting_timeout=5.0, stable_after=5.0, state_path=Path(state),
    )
    runtime = build(settings, rng=random.Random(args.seed))
    sup = runtime.supervisor
    if args.tracemalloc:
        tracemalloc.start()
    durations: list[float] = []
    first: dict[str, float] = {}
    restarts_seen = 0  # the simulator's request log is cleared at each report
    started = time.perf_counter()
    verdict = "ok"
    try:
        for cycle in range(1, args.cycles + 1):
            t0 = time.perf_counter()
            result = await sup.poll()
            durations.append(time.perf_counter() - t0)
            if not result.ok:
                counts["bench.poll_not_ok"] += 1
            await asyncio.sleep(args.interval)
            if cycle % args.report_every == 0 or cycle == args.cycles:
                window = sorted(durations)
                durations.clear()
                report = {
                    "cycle": cycle,
                    "ms_median": round(statistics.median(window) * 1000, 2),
                    "ms_p95": round(window[int(len(window) * 0.95) - 1] * 1000, 2),
                    "ms_max": round(window[-1] * 1000, 2),
                    "rss_kib": _rss_kib(),
                    "py_kib": (tracemalloc.get_traced_memory()[0] // 1024
                               if args.tracemalloc else None),
                    "fds": _fds(),
                    "tasks": len(asyncio.all_tasks()),
                    "restarts": restarts_seen + sim.stats()["by_kind"].get("restart", 0),
                    "down": sum(s != "WORKING" for s in sim.statuses().values()),
                    "history_rows": getattr(runtime.store, "history_count", lambda: 0)(),
                    "state_kib": _state_kib(state),
                }
                first = first or report
                _line(report, args.json)
                # The simulator runs in this process: its request log would count as ours.
                restarts_seen = report["restarts"]
                sim.reset_log()
        sim.update_faults(random_failures={"rate": 0.0}, server_errors={"rate": 0.0})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = list(sup.store.records())
            if (set(sim.statuses().values()) == {"WORKING"} and len(records) == args.sessions
                    and all(r.phase is Phase.HEALTHY for r in records)):
                break
            await sup.poll()
            await asyncio.sleep(0.05)
        else:
            verdict = "not every session recovered within 60 s"
    finally:
        await runtime.aclose()
        server.stop()
        workdir.cleanup()
    elapsed = time.perf_counter() - started
    for _ in range(100):  # sockets closed by the peer go away a moment later
        if _fds() <= fds_before:
            break
        await asyncio.sleep(0.05)
    fds_after, tasks_after = _fds(), len(asyncio.all_tasks())
    if verdict == "ok" and fds_after > fds_before:
        verdict = f"file descriptors leaked: {fds_before} -> {fds_after}"
    if verdict == "ok" and tasks_after != tasks_before:
        verdict = f"tasks leaked: {tasks_before} -> {tasks_after}"
    if verdict == "ok" and counts["poll.crashed"]:
        verdict = f"{counts['poll.crashed']} poll(s) crashed"
    summary = {
        "verdict": verdict, "cycles": args.cycles, "sessions": args.sessions,
        "seconds": round(elapsed, 1), "cycles_per_second": round(args.cycles / elapsed, 1),
        "restarts_requested": counts["restart.requested"],
        "restarts_succeeded": counts["restart.succeeded"],
        "restarts_failed": counts["restart.failed"], "gave_up": counts["session.gave_up"],
        "rss_kib_first_report": first.get("rss_kib"), "rss_kib_end": _rss_kib(),
        "fds": [fds_before, fds_after], "tasks": [tasks_before, tasks_after],
    }
    _line(summary, args.json)
    return 0 if verdict == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(soak(_parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
