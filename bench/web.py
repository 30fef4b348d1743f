"""The status page through a real daemon (``run`` with ``http_auth_file``) and the
simulator: what the page costs the person looking and the daemon serving it.

* First view, 10,000 sessions: the time from sending ``GET /`` (the first page of the
  table, with a Bearer token) to the last byte of the answer, over loopback, once the
  daemon has polled them all. It holds the server's time and a little more (the
  listener, the loopback), so it bounds the server time from above.
* Live update: a session's status changed in the simulator, then an open page's fetch
  (``/api/sessions/{id}``, every ``web.app.REFRESH`` seconds, as the page's script
  does) shows it. Measured from the change to the first fetch that shows it; the target
  is one poll interval plus 1 s.
* Poll cycle with 20 open pages: 20 clients fetching the table's JSON (the first page of
  100 rows) at the page's pace, beside the daemon polling 10,000 sessions; each poll
  cycle's ``duration_ms`` (``poll.completed``) against the same daemon's with no page
  open, in the same run (the medians' ratio).

The open pages are HTTP clients doing what the page's script does (the same request at
the same pace), not browsers: 20 browsers would measure the browsers on this machine.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.alerts import events
from bench.common import API_KEY, RESULTS, BenchError, start_simulator, wait_until
from bench.procs import OURS, ROOT, Tool
from bench.report import Figure, Result, Target
from supervisor.domain import events as ev
from supervisor.web.app import REFRESH
from tests.alerts.receivers import free_port

TOKEN = "bench-page-token-3f9a61c2d8e7"


@dataclass(frozen=True)
class Size:
    runs: int = 1
    sessions: int = 10_000
    poll_interval: float = 2.0
    views: int = 30  # first views timed
    changes: int = 10  # live updates timed
    pages: int = 20  # open pages for the poll cycle
    cycles: int = 15  # poll cycles measured with and without the pages


FULL = Size()
QUICK = Size(sessions=10_000, views=10, changes=4, cycles=6)


def run(size: Size = FULL) -> Result:
    result = Result("web", "the status page through the daemon", settings=asdict(size))
    views: list[float] = []
    updates: list[float] = []
    ratios: list[float] = []
    with_pages: list[float] = []
    without: list[float] = []
    for index in range(size.runs):
        v, u, (on, off) = _one_run(size, index)
        views += v
        updates += u
        with_pages += on
        without += off
        ratios.append(statistics.median(on) / statistics.median(off))
    result.figures += [
        Figure("web.first_view", f"first view, {size.sessions:,} sessions (GET /, 100 rows)",
               "ms", "view", views, target=Target.max_at_most(300, "≤ 300 ms"), digits=1),
        Figure("web.live_update", "status change in the simulator to the open page's fetch "
               "showing it", "s", "change", updates,
               target=Target.max_at_most(size.poll_interval + 1.0,
                                         f"≤ {size.poll_interval + 1.0:g} s (poll + 1 s)"),
               digits=2),
        Figure("web.poll_cycle_ratio", f"poll cycle with {size.pages} open pages / with none",
               "ratio", "run", ratios, target=Target.max_at_most(1.1, "≤ 1.1"), digits=3),
        Figure("web.poll_cycle_pages", f"poll cycle, {size.sessions:,} sessions, "
               f"{size.pages} open pages", "ms", "cycle", with_pages, digits=0),
        Figure("web.poll_cycle_no_page", f"poll cycle, {size.sessions:,} sessions, no page",
               "ms", "cycle", without, digits=0),
    ]
    result.notes.append(
        f"open pages: HTTP clients fetching /api/sessions?page=1 every {REFRESH:g} s, as the "
        "page's script does; first view timed over loopback from the request to its last "
        "byte (an upper bound of the server time)")
    return result


@contextlib.contextmanager
def _daemon(server_url: str, name: str, size: Size, auth: Path,
            port: int) -> Iterator[Tool]:
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tool = Tool(OURS, server_url, API_KEY, poll_interval=size.poll_interval,
                settings={"http_listen": f"127.0.0.1:{port}", "http_auth_file": str(auth),
                          "poll_jitter": 0},
                log=logs / f"{name}.log")
    tool.start()
    try:
        yield tool
    finally:
        tool.stop()


def _one_run(size: Size, index: int) -> tuple[list[float], list[float],
                                              tuple[list[float], list[float]]]:
    server = start_simulator({"seed": index, "session_count": size.sessions})
    auth = RESULTS / "logs" / "web-auth"
    auth.parent.mkdir(parents=True, exist_ok=True)
    auth.write_text(f"bench:{TOKEN}\n")
    auth.chmod(0o600)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {TOKEN}"}
    try:
        with _daemon(server.base_url, f"web-{index}", size, auth, port) as tool, \
                httpx.Client(base_url=base, headers=headers, trust_env=False,
                             timeout=10) as http:
            def polled() -> bool:
                try:
                    answer = http.get("/api/sessions?page=1&per_page=1")
                except httpx.TransportError:
                    return False
                return answer.status_code == 200 and answer.json()["total"] == size.sessions

            wait_until(polled, 120, "the daemon's first poll", step=0.2, tools={OURS: tool})
            views = _first_views(http, size.views)
            updates = _live_updates(server, http, size)
            cycles = _cycles(tool, base, size)
    finally:
        server.stop()
    return views, updates, cycles


def _first_views(http: httpx.Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = http.get("/")
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200 or "<table" not in answer.text:
            raise BenchError(f"GET / answered {answer.status_code}")
    return times


def _live_updates(server: object, http: httpx.Client, size: Size) -> list[float]:
    sim = server.simulator  # type: ignore[attr-defined]
    ids = sim.session_ids()
    found = []
    for n in range(size.changes):
        session_id = ids[n * 7 % len(ids)]
        status = "UPGRADING"  # a status nobody acts on: it stays until put back
        time.sleep(REFRESH * (n % 3) / 3)  # changes at every phase of the page's fetches
        changed = time.perf_counter()
        sim.set_status(session_id, status)
        deadline = changed + size.poll_interval * 3 + 10
        while True:  # the page's script: one fetch every REFRESH seconds
            fetched = time.perf_counter()
            shown = http.get(f"/api/sessions/{session_id}").json()["session"]["status"]
            if shown == status:
                found.append(time.perf_counter() - changed)
                break
            if fetched > deadline:
                raise BenchError(f"{session_id}'s change never showed")
            time.sleep(max(0.0, fetched + REFRESH - time.perf_counter()))
        sim.set_status(session_id, "WORKING")
    return found


def _cycles(tool: Tool, base: str, size: Size) -> tuple[list[float], list[float]]:
    """Poll cycles with no page open, then with ``size.pages`` open (from the log)."""
    def durations() -> list[float]:
        return [float(e["duration_ms"]) for e in events(tool.log_path, ev.POLL_COMPLETED)]

    def after(count: int) -> list[float]:
        start = len(durations())
        wait_until(lambda: len(durations()) >= start + count + 1,
                   size.poll_interval * (count + 3) * 3 + 60, "poll cycles", step=0.1,
                   tools={OURS: tool})
        return durations()[start + 1:start + 1 + count]  # the first may have begun before

    without = after(size.cycles)
    # The pages in a process of their own: in this one they would slow the simulator
    # (it shares this process's interpreter), and so the poll cycles they are to measure.
    pages = subprocess.Popen([sys.executable, "-m", "bench.web", base, str(size.pages)],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2 * REFRESH)
        if pages.poll() is not None:
            raise BenchError(f"the open pages exited ({pages.returncode})")
        with_pages = after(size.cycles)
    finally:
        pages.terminate()
        pages.wait(15)
    return with_pages, without


def open_pages(base: str, count: int) -> None:
    """``count`` open pages' fetches of the table's JSON, every ``REFRESH`` seconds each,
    until killed."""
    def page() -> None:
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {TOKEN}"},
                          trust_env=False, timeout=10) as http:
            while True:
                began = time.perf_counter()
                http.get("/api/sessions?page=1")
                time.sleep(max(0.0, began + REFRESH - time.perf_counter()))

    threads = [threading.Thread(target=page, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


__all__ = ["FULL", "QUICK", "Size", "open_pages", "run"]

if __name__ == "__main__":
    open_pages(sys.argv[1], int(sys.argv[2]))
