"""The benchmarks, by name, in the order they run, each with its full and quick sizes."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench import (
    alerts,
    check_time,
    failover,
    idle,
    latency,
    retry_after,
    scale,
    store,
    storm,
    web,
    webhooks,
    zombies,
)
from bench.report import Result


@dataclass(frozen=True)
class Benchmark:
    name: str
    about: str
    run: Callable[[Any], Result]
    full: Any
    quick: Any

    def size(self, *, quick: bool, runs: int | None = None) -> Any:
        size = self.quick if quick else self.full
        return size if runs is None else replace(size, runs=runs)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("restart_latency", "time from a failure to its restart request; restart "
                  "requests per outage", latency.run, latency.FULL, latency.QUICK),
        Benchmark("idle_requests", "API requests and CPU per poll cycle, 1,000 healthy "
                  "sessions", idle.run, idle.FULL, idle.QUICK),
        Benchmark("retry_after", "requests sent while a Retry-After is in force, 429 bursts",
                  retry_after.run, retry_after.FULL, retry_after.QUICK),
        Benchmark("restart_storm", "every session fails at once under a server rate limit",
                  storm.run, storm.FULL, storm.QUICK),
        Benchmark("scale", "CPU per poll cycle and memory with 10,000 sessions",
                  scale.run, scale.FULL, scale.QUICK),
        Benchmark("check_time", "check's wall time from a cold start, 100 sessions",
                  check_time.run, check_time.FULL, check_time.QUICK),
        Benchmark("alerts", "through the daemon: episode opened to message received; a "
                  "storm of 1,000; the poll cycle beside a hanging channel", alerts.run,
                  alerts.FULL, alerts.QUICK),
        Benchmark("zombies", "sessions WORKING by status whose engine is not connected: "
                  "time to their restart, requests while they are watched", zombies.run,
                  zombies.FULL, zombies.QUICK),
        Benchmark("store", "a poll cycle's cost of the state store: PostgreSQL beside SQLite, "
                  "10,000 sessions", store.run, store.FULL, store.QUICK),
        Benchmark("webhooks", "signed webhooks through the daemon: events a second with the "
                  "poll loop on schedule, a burst's reads, forgeries' cost", webhooks.run,
                  webhooks.FULL, webhooks.QUICK),
        Benchmark("failover", "three replicas on one PostgreSQL database: takeover after "
                  "SIGKILL and SIGTERM, requests per cycle", failover.run, failover.FULL,
                  failover.QUICK),
        Benchmark("web", "the status page through the daemon: first view of 10,000 "
                  "sessions, a change to an open page, the poll cycle with 20 pages open",
                  web.run, web.FULL, web.QUICK),
    )
}


def run_one(bench: Benchmark, size: Any) -> Result:
    """Run a benchmark; a failure becomes a Result with an error, not an exception."""
    started = time.monotonic()
    try:
        result = bench.run(size)
    except Exception as exc:
        result = Result(bench.name, bench.about, error=f"{type(exc).__name__}: {exc}")
        result.notes.append(traceback.format_exc())
    result.seconds = time.monotonic() - started
    return result
