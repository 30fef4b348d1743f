"""The monitoring verdict: the exit statuses of a monitoring plugin (``check`` and
``status`` answer with them) and what a record's phase stands for among them."""

from __future__ import annotations

from typing import Final

from supervisor.domain.models import Phase

OK: Final = 0
WARNING: Final = 1
CRITICAL: Final = 2
UNKNOWN: Final = 3
LABELS: Final = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

_PHASE_SEVERITY: Final = {
    Phase.HEALTHY: (OK, "ok"),
    Phase.VERIFYING: (WARNING, "recovering"),
    Phase.STARTING: (WARNING, "starting"),
    Phase.UNHEALTHY: (WARNING, "waiting"),
    Phase.UNKNOWN: (WARNING, "unknown_status"),
    Phase.GAVE_UP: (CRITICAL, "gave_up"),
    Phase.GONE: (CRITICAL, "gone"),
    Phase.NEEDS_PERSON: (CRITICAL, "needs_person"),
}


# A session on hold (a person paused its supervision), whatever its phase: nobody
# supervises it, which is worth a warning until it is resumed.
_HELD: Final = (WARNING, "paused")


def phase_verdict(phase: Phase, *, held: bool = False) -> tuple[int, str]:
    """The exit status and outcome a record's phase stands for (``held``: on hold)."""
    return _HELD if held else _PHASE_SEVERITY[phase]
