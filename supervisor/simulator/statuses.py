"""Session status values and the classes the simulator's life cycle puts them in.

The names come from the provider's SDK README (``CREATED``, ``STARTING``, ``CONNECTED``,
``STOPPED``, ``ERROR``) and from the engine underneath (``STOPPED``, ``STARTING``,
``SCAN_QR_CODE``, ``WORKING``, ``FAILED``).
"""

from __future__ import annotations

import re
from typing import Final

CREATED: Final = "CREATED"
STARTING: Final = "STARTING"
SCAN_QR_CODE: Final = "SCAN_QR_CODE"
WORKING: Final = "WORKING"
CONNECTED: Final = "CONNECTED"
STOPPED: Final = "STOPPED"
ERROR: Final = "ERROR"
FAILED: Final = "FAILED"

KNOWN: Final = frozenset(
    {CREATED, STARTING, SCAN_QR_CODE, WORKING, CONNECTED, STOPPED, ERROR, FAILED}
)
"""Every status the documentation names."""

HEALTHY: Final = frozenset({WORKING, CONNECTED})
"""Sessions in these states can drop by a random failure."""

RUNNING: Final = frozenset({WORKING, CONNECTED, STARTING, SCAN_QR_CODE})
"""A restart of a session in one of these answers 409 ("already running")."""

BROKEN: Final = frozenset({ERROR, FAILED})
"""Restartable, unless ``conflict_on_failed_restart`` asks for a stop first."""

STARTABLE: Final = frozenset({STOPPED, CREATED, ERROR, FAILED})
"""``POST .../start`` accepts these (only ``STOPPED`` and ``CREATED`` with
``start_only_from_stopped``); anything else answers 422."""

_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def is_well_formed(status: str) -> bool:
    """Whether ``status`` may be stored: letters, digits and ``_``, up to 64 long.

    The admin API accepts statuses outside :data:`KNOWN` on purpose, so that a client's
    handling of an unknown status can be tested; scenario files accept only known ones.
    """
    return _SHAPE.fullmatch(status) is not None
