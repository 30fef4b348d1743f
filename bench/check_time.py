"""``check`` from a cold start: wall time of the whole process, 100 healthy sessions.

``python -m supervisor check`` is run as a cron job or a monitoring system would run
it (a fresh process, a clean environment) against the local simulator, alternating
with the naive loop's one pass (``python -m bench.naive --once``). Import time is
measured apart with ``-X importtime`` (``PYTHONPROFILEIMPORTTIME=1``: the sum of the
top-level imports; it slows imports down, so it reads high).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import API_KEY, BenchError, start_simulator
from bench.procs import NAIVE, OURS, ROOT, TOOLS, base_env
from bench.report import Figure, Result, Target


def _commands() -> dict[str, list[str]]:
    """The installed ``wasend-supervisor`` script (as cron would run it) where there is one
    beside this Python (``make install`` puts it there), else ``python -m supervisor``."""
    script = Path(sys.executable).with_name("wasend-supervisor")
    ours = [str(script)] if script.exists() else [sys.executable, "-m", "supervisor"]
    return {OURS: [*ours, "check"], NAIVE: [sys.executable, "-m", "bench.naive", "--once"]}

_TOP_LEVEL = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| \S")


@dataclass(frozen=True)
class Size:
    runs: int = 21
    sessions: int = 100
    importtime_runs: int = 5


FULL = Size()
QUICK = Size(runs=7, importtime_runs=2)


def run(size: Size = FULL) -> Result:
    result = Result("check_time", f"check, {size.sessions} healthy sessions, cold start",
                    settings=asdict(size))
    commands = _commands()
    server = start_simulator({"seed": 0, "session_count": size.sessions})
    try:
        env = base_env(API_KEY, server.base_url)
        wall: dict[str, list[float]] = {k: [] for k in TOOLS}
        for kind in TOOLS:  # once each first: compiled bytecode written, caches warm
            _run(kind, commands[kind], env)
        for _ in range(size.runs):
            for kind in TOOLS:
                wall[kind].append(_run(kind, commands[kind], env))
        imports = {kind: [_import_ms(commands[kind], env) for _ in range(size.importtime_runs)]
                   for kind in TOOLS}
    finally:
        server.stop()
    result.figures += [
        Figure("check_time.wall", f"check wall time, {size.sessions} healthy sessions", "s",
               "run", wall[OURS], wall[NAIVE], Target.median_at_most(0.35, "<= 0.35 s")),
        Figure("check_time.imports", "import time (python -X importtime, top level)", "ms",
               "run", imports[OURS], imports[NAIVE], digits=0),
    ]
    result.notes.append(
        f"{' '.join(commands[OURS])}: a new process each time, alternating "
        f"with the naive pass; medians of {size.runs}. Wall time covers interpreter start, "
        "imports, settings, the list request, the report and the interpreter's exit.")
    return result


def _run(kind: str, argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT,
                          capture_output=True, check=False, timeout=60)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"{kind} check exited {done.returncode}: "
                         f"{done.stderr.decode(errors='replace')[-500:]}")
    return took


def _import_ms(argv: list[str], env: dict[str, str]) -> float:
    done = subprocess.run(argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, cwd=ROOT,
                          capture_output=True, check=False, timeout=60)
    total = sum(int(m.group(1)) for m in _TOP_LEVEL.finditer(done.stderr.decode()))
    return total / 1000

