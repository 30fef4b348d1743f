"""A stand-in for the WASend session API, with fault injection (``pip install .[simulator]``).

It is a second, independent reading of the provider's API and imports nothing from the
rest of the ``supervisor`` package. See ``docs/simulator.md``.

- :class:`Simulator`: sessions, life cycle, faults and the request log, in memory.
- :class:`SimulatorServer`: that over real HTTP (uvicorn in a background thread).
- :func:`serve`: the same in the foreground, until SIGINT/SIGTERM.
- :func:`load_scenario`: read and check a TOML/JSON scenario (:class:`ScenarioError`).

With a webhook URL it posts WAHA-shaped ``session.status`` events on every status
change (:mod:`.webhooks`).
"""

from .app import admin_requires_key, create_app
from .clock import Clock, ManualClock, SystemClock
from .faults import (
    Faults,
    Hang,
    Latency,
    MalformedJson,
    Outage,
    RandomFailures,
    RateLimit,
    RequestFilter,
    ScheduledFailure,
    ServerErrors,
    WebhookDelay,
    WebhookFaults,
    WebhookRetries,
    WebhookSettings,
)
from .gate import Admission
from .reqlog import RequestRecord
from .scenario import Scenario, ScenarioError, SessionSpec, load_scenario, parse_scenario
from .server import SimulatorServer, serve
from .simulator import Simulator
from .state import UnknownSession
from .webhooks import WebhookRecord

__all__ = [
    "Admission",
    "Clock",
    "Faults",
    "Hang",
    "Latency",
    "MalformedJson",
    "ManualClock",
    "Outage",
    "RandomFailures",
    "RateLimit",
    "RequestFilter",
    "RequestRecord",
    "Scenario",
    "ScenarioError",
    "ScheduledFailure",
    "ServerErrors",
    "SessionSpec",
    "Simulator",
    "SimulatorServer",
    "SystemClock",
    "UnknownSession",
    "WebhookDelay",
    "WebhookFaults",
    "WebhookRecord",
    "WebhookRetries",
    "WebhookSettings",
    "admin_requires_key",
    "create_app",
    "load_scenario",
    "parse_scenario",
    "serve",
]
