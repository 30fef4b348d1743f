"""The processes a benchmark runs and what the kernel says about them.

``Tool`` starts one supervisor in its own process: ours (``python -m supervisor run``,
configured through its environment variables, as an operator would) or the naive loop
(``python -m bench.naive``). Its CPU time and memory are read from the kernel, so the
figures are that process's alone: the simulator runs elsewhere (in the bench process).

* CPU time: the process's CPU clock (``clock_gettime`` on the clock id Linux derives
  from the pid: every thread, nanosecond resolution), or ``/proc/<pid>/stat``'s
  ``utime + stime`` (10 ms ticks) where that clock cannot be read.
* Memory: ``VmRSS`` (resident now) and ``VmHWM`` (the peak) of ``/proc/<pid>/status``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]

OURS = "ours"
NAIVE = "naive"
TOOLS = (OURS, NAIVE)


def _cpu_clock_id(pid: int) -> int:
    # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) of the Linux kernel.
    return ((~pid) << 3) | 2


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) the process has used so far."""
    try:
        return time.clock_gettime(_cpu_clock_id(pid))
    except OSError:
        pass
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_bytes(pid: int) -> tuple[int, int]:
    """(resident now, peak resident) in bytes: ``VmRSS`` and ``VmHWM``."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def scratch_dir(prefix: str = "wasend-bench-") -> Path:
    """A new directory, removed when the bench exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def fresh_state_path() -> str:
    """A state file of its own for one tool (removed when the bench exits): a run never
    inherits the backoff or records of an earlier one, as it would from the default
    path under the home directory."""
    return str(scratch_dir() / "state.db")


def base_env(api_key: str, base_url: str) -> dict[str, str]:
    """A clean environment, as a service manager would give: no stray settings."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "WASEND_API_KEY": api_key,
        "WASEND_BASE_URL": base_url,
        "WASEND_SUPERVISOR_STATE_PATH": fresh_state_path(),
    }


def settings_env(settings: dict[str, Any]) -> dict[str, str]:
    """``{"poll_interval": 1.0, "backoff.initial": 0.5}`` as WASEND_SUPERVISOR_* variables."""
    return {
        "WASEND_SUPERVISOR_" + key.upper().replace(".", "__"): str(value)
        for key, value in settings.items()
    }


class Tool:
    """One supervisor process (ours or the naive loop) against one simulator."""

    def __init__(
        self,
        kind: str,
        base_url: str,
        api_key: str,
        *,
        poll_interval: float,
        settings: dict[str, Any] | None = None,
        log: Path,
    ) -> None:
        if kind not in TOOLS:
            raise ValueError(f"unknown tool {kind!r}")
        self.kind = kind
        self.log_path = log
        env = base_env(api_key, base_url)
        if kind == OURS:
            env.update(settings_env({"poll_interval": poll_interval, "log_format": "json",
                                     **(settings or {})}))
            self.argv = [sys.executable, "-m", "supervisor", "run"]
        else:
            self.argv = [sys.executable, "-m", "bench.naive", "--interval", str(poll_interval)]
        self.env = env
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def start(self) -> Tool:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> tuple[int, int]:
        return memory_bytes(self.pid)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (ours stops gracefully; the naive loop just dies), then the exit status."""
        status = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                status = self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return status

    def __enter__(self) -> Tool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
