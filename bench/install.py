"""Which Python a benchmark runs: the install users get, or the development one.

``shipped()`` builds what a user installs (and what the container holds): a new virtual
environment with ``pip install -c constraints.txt .``, the package and its runtime
dependencies at their pinned versions and nothing else. The development environment
differs in what start-up costs: it has the test and simulator extras, and with them
click and pygments, which httpx imports (for its command-line module) whenever they
are installed. ``here()`` is this Python, for tests of the harness and for machines
where the shipped install cannot be built (no package index): the result then says so.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError
from bench.procs import ROOT, scratch_dir

SHIPPED = "shipped"
DEVELOPMENT = "development"


@dataclass(frozen=True)
class Install:
    """A Python environment, and how to start the supervisor in it."""

    kind: str  # SHIPPED or DEVELOPMENT
    python: Path

    def supervisor(self) -> list[str]:
        """The installed ``wasend-supervisor`` script, as cron or systemd would run it,
        or ``python -m supervisor`` where there is no script beside this Python."""
        script = self.python.with_name("wasend-supervisor")
        return [str(script)] if script.exists() else [str(self.python), "-m", "supervisor"]


def here() -> Install:
    return Install(DEVELOPMENT, Path(sys.executable))


def shipped(timeout: float = 600.0) -> Install:
    """A new virtual environment holding what ``pip install .`` gives a user, pinned by
    constraints.txt (removed when the bench exits)."""
    folder = scratch_dir("wasend-bench-venv-")
    steps = (
        [sys.executable, "-m", "venv", str(folder)],
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"), str(ROOT)],
    )
    for argv in steps:
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"{' '.join(argv[:4])}: {exc}") from exc
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"{' '.join(argv[:4])} exited {done.returncode}: "
                             + " / ".join(tail))
    return Install(SHIPPED, folder / "bin" / "python")


def shipped_or_here() -> tuple[Install, str | None]:
    """The shipped install, or this Python and why the shipped one could not be built."""
    try:
        return shipped(), None
    except BenchError as exc:
        return here(), f"measured in the development environment: the shipped install " \
                       f"could not be built ({exc})"
