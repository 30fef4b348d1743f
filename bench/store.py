"""What the state store costs a poll cycle: PostgreSQL beside SQLite.

Two daemons side by side in one run (``python -m supervisor run`` each, as an operator
starts it), each against its own simulator with the same 10,000 sessions: one with its
state in a SQLite file (``state_path``), one in PostgreSQL (``state_url``; Debian's server,
started by the bench on a free loopback port with its own durable defaults, fsync on).
At each poll a few hundred sessions change status between ``WORKING`` and ``CONNECTED``
(both healthy: their records are written, nothing is restarted), on both simulators at
once. Each cycle's ``duration_ms`` (``poll.completed``) from the daemons' logs; the ratio
of the two medians per run. Which daemon starts first alternates from run to run.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass

from bench.alerts import daemon, events
from bench.common import BenchError, list_count, start_simulator
from bench.report import Figure, Result, Target
from supervisor.domain import events as ev


@dataclass(frozen=True)
class Size:
    runs: int = 3
    sessions: int = 10_000
    changing: int = 300  # records changing at each poll
    poll_interval: float = 2.0
    cycles: int = 20
    warmup: int = 3


FULL = Size()
QUICK = Size(runs=1, cycles=8)


def run(size: Size = FULL) -> Result:
    result = Result("store", "a poll cycle's cost of the state store: PostgreSQL beside "
                    "SQLite", settings=asdict(size))
    ratios: list[float] = []
    pg_ms: list[float] = []
    sqlite_ms: list[float] = []
    for index in range(size.runs):
        on_pg, on_sqlite = _one_run(size, index)
        pg_ms += on_pg
        sqlite_ms += on_sqlite
        ratios.append(statistics.median_grouped(on_pg, 1)
                      / statistics.median_grouped(on_sqlite, 1))
    result.figures += [
        Figure("store.poll_cycle_ratio", f"poll cycle on PostgreSQL / on SQLite, "
               f"{size.sessions:,} sessions, {size.changing} records changing a poll "
               "(medians, side by side)", "ratio", "run", ratios,
               target=Target.median_at_most(1.5, "<= 1.5"), digits=3),
        Figure("store.poll_cycle_postgres", "poll cycle, state in PostgreSQL", "ms", "cycle",
               pg_ms, digits=0),
        Figure("store.poll_cycle_sqlite", "poll cycle, state in a SQLite file", "ms", "cycle",
               sqlite_ms, digits=0),
    ]
    result.notes.append(
        f"Two daemons side by side, P = {size.poll_interval:g} s, {size.sessions:,} sessions "
        f"each, {size.changing} of them flipped between WORKING and CONNECTED at each poll; "
        f"{size.cycles} cycles each after {size.warmup} left out; PostgreSQL 15 from Debian "
        "with its defaults (fsync on), on 127.0.0.1; the ratio of the medians of "
        "poll.completed duration_ms, interpolated (whole milliseconds).")
    return result


def _one_run(size: Size, index: int) -> tuple[list[float], list[float]]:
    from tests.pg import Server, missing  # noqa: PLC0415 (only this benchmark needs it)

    why = missing()
    if why is not None:
        raise BenchError(f"PostgreSQL is not available: {why}")
    pg = Server(durable=True).start()
    servers = {kind: start_simulator({"seed": 500 + index, "session_count": size.sessions})
               for kind in ("postgres", "sqlite")}
    try:
        dsn = pg.database()
        ids = servers["sqlite"].simulator.session_ids()
        order = ["postgres", "sqlite"] if index % 2 == 0 else ["sqlite", "postgres"]
        settings = {"postgres": {"state_url": dsn}, "sqlite": {}}
        with contextlib.ExitStack() as stack:
            tools = {}
            for kind in order:
                tools[kind] = stack.enter_context(daemon(
                    servers[kind], f"store-{index}-{kind}", poll_interval=size.poll_interval,
                    settings=settings[kind], state_path=kind == "sqlite"))
            wanted = size.warmup + size.cycles
            seen = 0
            flip = 0
            deadline = time.monotonic() + wanted * size.poll_interval * 4 + 120
            while not all(len(events(t.log_path, ev.POLL_COMPLETED)) >= wanted
                          for t in tools.values()):
                for kind, tool in tools.items():
                    if not tool.alive():
                        raise BenchError(f"{kind} exited; see {tool.log_path}")
                if time.monotonic() > deadline:
                    raise BenchError("timed out waiting for the poll cycles")
                polls = list_count(servers["sqlite"])
                if polls > seen:  # flip the next batch on both, once a poll
                    seen = polls
                    status = "CONNECTED" if flip % 2 == 0 else "WORKING"
                    batch = ids[(flip * size.changing) % len(ids):][:size.changing]
                    for server in servers.values():
                        for session_id in batch:
                            server.simulator.set_status(session_id, status)
                    flip += 1
                time.sleep(0.02)
            durations = {kind: [float(e["duration_ms"]) for e in events(
                tools[kind].log_path, ev.POLL_COMPLETED)][size.warmup:wanted] for kind in tools}
    finally:
        for server in servers.values():
            server.stop()
        pg.stop()
    return durations["postgres"], durations["sqlite"]


__all__ = ["FULL", "QUICK", "Size", "run"]
