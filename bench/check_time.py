"""``check`` from a cold start: wall time of the whole process, 100 healthy sessions.

``wasend-supervisor check`` is run as a cron job or a monitoring system would run it (a
fresh process, a clean environment) against the local simulator, from the install a
user gets (``bench.install.shipped``: the package and its pinned runtime dependencies,
nothing else). Each round runs three processes back to back, in the same environment:

* ours: ``wasend-supervisor check``;
* the naive one-shot: ``python -m bench.naive --once`` (httpx, one list, no state);
* the libraries alone: a process that imports every module ``check`` loads from outside
  the project and the standard library (pydantic, pydantic-settings, httpx with httpcore
  and anyio's asyncio backend, structlog, msgspec, asyncio) and does nothing else. It is
  the floor that the libraries the design calls for set; ``check``'s own share is its
  time less the floor's, round by round.

Import time is measured apart with ``-X importtime`` (``PYTHONPROFILEIMPORTTIME=1``: the
sum of the top-level imports; it slows imports down, so it reads high).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from bench.common import API_KEY, BenchError, start_simulator
from bench.install import DEVELOPMENT, SHIPPED, Install, here, shipped_or_here
from bench.procs import NAIVE, OURS, ROOT, base_env, scratch_dir
from bench.report import Figure, Result, Target

LIBRARIES = "libraries"
# The target, measured side by side in one run (absolute times on shared machines swing by
# 30% between runs): check's own time, its wall time less the floor's round by round, has
# a median of at most this many milliseconds.
OWN_TARGET_MS = 50.0

_TOP_LEVEL = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| \S")

# Run in place of the console script: the check, then the modules it loaded, in the order
# they were loaded, written to the file named by the first argument.
_LOADED = """\
import gc, json, sys
gc.disable()
from supervisor.cli import main
status = main(["check"])
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(list(sys.modules), out)
sys.exit(status)
"""


@dataclass(frozen=True)
class Size:
    runs: int = 21
    sessions: int = 100
    importtime_runs: int = 5
    install: str = SHIPPED  # or DEVELOPMENT: this Python (tests, no package index)


FULL = Size()
QUICK = Size(runs=7, importtime_runs=2)


def run(size: Size = FULL) -> Result:
    result = Result("check_time", f"check, {size.sessions} healthy sessions, cold start",
                    settings=asdict(size))
    install, why = shipped_or_here() if size.install == SHIPPED else (here(), None)
    if why:
        result.notes.append(why)
    server = start_simulator({"seed": 0, "session_count": size.sessions})
    try:
        env = _env(install, server.base_url)
        loaded = loaded_modules(install, env)
        libraries = third_party(loaded)
        commands = {
            OURS: [*install.supervisor(), "check"],
            LIBRARIES: [str(install.python), "-c", import_only(libraries)],
            NAIVE: [str(install.python), "-m", "bench.naive", "--once"],
        }
        envs = {OURS: env, LIBRARIES: env, NAIVE: {**env, "PYTHONPATH": str(ROOT)}}
        wall: dict[str, list[float]] = {kind: [] for kind in commands}
        for kind, argv in commands.items():  # once each first: bytecode written, caches warm
            _run(kind, argv, envs[kind])
        for _ in range(size.runs):
            for kind, argv in commands.items():
                wall[kind].append(_run(kind, argv, envs[kind]))
        imports = {kind: [_import_ms(commands[kind], envs[kind])
                          for _ in range(size.importtime_runs)] for kind in (OURS, NAIVE)}
    finally:
        server.stop()
    own = [(o - f) * 1000 for o, f in zip(wall[OURS], wall[LIBRARIES], strict=True)]
    result.figures += [
        Figure("check_time.wall", f"check wall time, {size.sessions} healthy sessions", "s",
               "run", wall[OURS], wall[NAIVE]),
        Figure("check_time.libraries", "its libraries imported, nothing else (the floor)",
               "s", "run", wall[LIBRARIES], wall[NAIVE]),
        Figure("check_time.own", "check less the floor, the same round", "ms", "run", own,
               target=Target.median_at_most(OWN_TARGET_MS, f"median <= {OWN_TARGET_MS:g} ms"),
               digits=0),
        # The layout must not load more on the check path: what it loads, counted.
        Figure("check_time.modules", "modules loaded by one check", "modules", "run",
               [len(loaded)], digits=0),
        Figure("check_time.own_modules", "of them the supervisor's own", "modules", "run",
               [sum(1 for name in loaded if _ours(name))], digits=0),
        Figure("check_time.imports", "import time (python -X importtime, top level)", "ms",
               "run", imports[OURS], imports[NAIVE], digits=0),
    ]
    tops = sorted({name.partition(".")[0] for name in libraries})
    result.notes.append(
        f"{install.kind} install ({install.python}); {' '.join(commands[OURS][-2:])}: a new "
        f"process each time, alternating with the floor and the naive pass; medians of "
        f"{size.runs}. Wall time covers interpreter start, imports, settings, the list "
        f"request, the report and the interpreter's exit. The floor imports the "
        f"{len(libraries)} modules check loads from {', '.join(tops)}.")
    return result


def _env(install: Install, base_url: str) -> dict[str, str]:
    """base_env, without the checkout on the path for the shipped install: its package is
    the installed one."""
    env = base_env(API_KEY, base_url)
    if install.kind != DEVELOPMENT:
        env.pop("PYTHONPATH", None)
    return env


def is_third_party(name: str) -> bool:
    """A module of an installed library: not ours, not the standard library's, not one
    of the interpreter's or the installer's own (``_distutils_hack``, editable finders)."""
    top = name.partition(".")[0]
    return not (top == "supervisor" or top in sys.stdlib_module_names or top.startswith("_")
                or top in ("sitecustomize", "usercustomize"))


def _ours(name: str) -> bool:
    return name.partition(".")[0] == "supervisor"


def third_party_modules(install: Install, env: dict[str, str]) -> list[str]:
    """The modules one ``check`` loads from installed libraries, in the order it loads
    them, plus asyncio (the event loop the check runs on, which the naive pass does not
    need)."""
    return third_party(loaded_modules(install, env))


def third_party(loaded: list[str]) -> list[str]:
    return ["asyncio", *(name for name in loaded if is_third_party(name))]


def loaded_modules(install: Install, env: dict[str, str]) -> list[str]:
    """Every module one ``check`` has loaded when it ends, in the order it loaded them."""
    out = scratch_dir() / "modules.json"
    done = subprocess.run([str(install.python), "-c", _LOADED, str(out)], env=env,
                          cwd=out.parent, capture_output=True, check=False, timeout=60)
    if done.returncode != 0 or not out.exists():
        raise BenchError(f"listing check's modules failed ({done.returncode}): "
                         f"{done.stderr.decode(errors='replace')[-500:]}")
    loaded: list[str] = json.loads(out.read_text(encoding="utf-8"))
    return loaded


def import_only(modules: list[str]) -> str:
    """Python source that imports these modules as check does (the collector off while
    it does, as ``supervisor.cli.entry`` has it) and ends."""
    return ("import gc, importlib\ngc.disable()\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\ngc.freeze()\n")


def _run(kind: str, argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=False,
                          timeout=60)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"{kind} exited {done.returncode}: "
                         f"{done.stderr.decode(errors='replace')[-500:]}")
    return took


def _import_ms(argv: list[str], env: dict[str, str]) -> float:
    done = subprocess.run(argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, cwd=ROOT,
                          capture_output=True, check=False, timeout=60)
    total = sum(int(m.group(1)) for m in _TOP_LEVEL.finditer(done.stderr.decode()))
    return total / 1000


__all__ = [
    "FULL",
    "OWN_TARGET_MS",
    "QUICK",
    "Size",
    "import_only",
    "is_third_party",
    "loaded_modules",
    "run",
    "third_party",
    "third_party_modules",
]
