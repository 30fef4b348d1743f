"""``demo``: the real daemon against the built-in simulator, with a scripted story.

No account and no configuration: it starts the simulator on a free loopback port with
six sessions, runs the same ``Daemon`` as ``run`` against it over real HTTP, and makes
things happen on a timeline (a session stops, one keeps failing, one needs its QR code
scanned, one is in ERROR and answers 409, bursts of 429, a short outage). Events are
shown as they happen; at the end (``--duration`` or Ctrl-C) a short summary is printed.

With the 'web' extra installed it serves the status page too, on a free loopback port,
to a demo login whose token it draws and prints (the file of it is removed at the end):
the session that needs its QR code scanned shows one there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets as random_tokens
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import msgspec
import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, WrappedLogger

from supervisor import logs
from supervisor.config.model import BackoffSettings, Settings
from supervisor.domain import events as ev
from supervisor.domain.secrets import Secrets
from supervisor.service import Service
from supervisor.simulator import Simulator, SimulatorServer, parse_scenario

log = structlog.get_logger("supervisor.demo")

SCENARIO: dict[str, Any] = {
    "seed": 7,
    "start_delay": 1.0,
    "conflict_on_failed_restart": True,
    "sessions": [
        {"id": "shop-berlin", "session_name": "Shop Berlin"},
        {"id": "shop-paris", "session_name": "Shop Paris"},
        {"id": "support-desk", "session_name": "Support desk", "outcome": "FAILED"},
        {"id": "marketing", "session_name": "Marketing"},
        {"id": "sales", "session_name": "Sales"},
        {"id": "billing", "session_name": "Billing"},
    ],
    "session_count": 0,
    "scheduled_failures": [
        {"at": 3.0, "session": "shop-paris", "status": "STOPPED"},
        {"at": 5.0, "session": "support-desk", "status": "FAILED"},
        {"at": 9.0, "session": "marketing", "status": "SCAN_QR_CODE"},
        {"at": 13.0, "session": "sales", "status": "ERROR"},
    ],
}


class Beat(msgspec.Struct, frozen=True):
    at: float
    says: str
    does: Callable[[Simulator], object] | None = None


TIMELINE = (
    Beat(3.0, "shop-paris stops: it should be restarted and come back"),
    Beat(5.0, "support-desk fails, and every restart fails again: it should be given up on"),
    Beat(9.0, "marketing needs its QR code scanned: a restart cannot help, so none is made"),
    Beat(13.0, "sales goes to ERROR and answers 409 to a restart: stop it, then restart it"),
    Beat(19.0, "the API answers the next 3 requests with 429, Retry-After: 2 (seconds)",
         lambda sim: sim.update_faults(
             rate_limit={"burst": 3, "retry_after": 2, "retry_after_form": "seconds"})),
    Beat(25.0, "the API answers 2 more with 429 and an HTTP-date Retry-After",
         lambda sim: sim.update_faults(
             rate_limit={"burst": 2, "retry_after": 2, "retry_after_form": "http-date"})),
    Beat(28.0, "billing stops during a 4-second outage (503 to everything)",
         lambda sim: _stop_during_outage(sim, "billing", 4.0)),
    Beat(36.0, "someone scans marketing's QR code", lambda sim: sim.set_status(
        "marketing", "WORKING")),
)

def _stop_during_outage(sim: Simulator, session_id: str, seconds: float) -> None:
    sim.set_status(session_id, "STOPPED")
    sim.start_outage(seconds, "503")


SUMMARISED = {
    ev.RESTART_REQUESTED: "restart requests",
    ev.RESTART_SUCCEEDED: "restarts verified healthy",
    ev.SESSION_RECOVERED: "recoveries",
    ev.RESTART_CONFLICT: "conflicts resolved",
    ev.SESSION_GAVE_UP: "give-ups",
    ev.SESSION_NEEDS_PERSON: "sessions needing a person",
    ev.API_RATE_LIMITED: "429s honoured",
    ev.POLL_FAILED: "failed polls ridden out",
}


class Tally:
    """A structlog processor that counts events and hides idle poll lines."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        name = str(event_dict.get("event"))
        self.counts[name] += 1
        if name == ev.POLL_COMPLETED and not event_dict.get("actions"):
            raise structlog.DropEvent
        return event_dict


DEMO_LOGIN = "demo"


def page_available() -> bool:
    """Whether the 'web' extra is installed (looked up without importing it)."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("starlette", "jinja2", "multipart", "segno"))


def demo_settings(server: SimulatorServer, auth_file: Path | None = None) -> Settings:
    page: dict[str, Any] = {} if auth_file is None else {
        "http_listen": "127.0.0.1:0", "http_auth_file": auth_file}
    return Settings(**page,
        base_url=server.base_url,
        api_key=SecretStr(server.api_key),
        poll_interval=1.0,
        poll_jitter=0.0,
        request_timeout=5.0,
        backoff=BackoffSettings(initial=1.0, max=4.0, multiplier=2.0),
        max_restarts=3,
        restart_window=120.0,
        stable_after=10.0,
        starting_timeout=5.0,
        gave_up_retry_interval=600.0,
        max_retry_after=30.0,
        rate_limit=20.0,
        log_format="console",
        state_path=Path(":memory:"),  # a demo leaves nothing behind
    )


async def _script(sim: Simulator, started: float, out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    for beat in TIMELINE:
        await asyncio.sleep(max(0.0, started + beat.at - loop.time()))
        out.write(f"\n--- t={beat.at:4.0f}s  {beat.says}\n")
        out.flush()
        if beat.does is not None:
            beat.does(sim)


async def _main(
    duration: float | None, tally: Tally, out: TextIO, secrets: Secrets
) -> tuple[int, dict[str, Any]]:
    server = SimulatorServer(scenario=parse_scenario(SCENARIO, "demo scenario")).start()
    scratch = tempfile.TemporaryDirectory(prefix="wasend-supervisor-demo-")
    try:
        token = auth_file = None
        if page_available():
            token = random_tokens.token_urlsafe(18)
            auth_file = Path(scratch.name) / "web-auth"
            auth_file.write_text(f"{DEMO_LOGIN}:{token}\n")
            auth_file.chmod(0o600)
        settings = demo_settings(server, auth_file)
        service = Service.build(settings, env={}, secrets=secrets)
        daemon = service.daemon
        out.write(
            f"wasend-supervisor demo: simulator at {server.base_url} with "
            f"{len(server.simulator.session_ids())} sessions; polling every "
            f"{settings.poll_interval:g} s.\n"
            + (f"It ends by itself after {duration:g} s; " if duration else "")
            + "Ctrl-C ends it at any time.\n"
        )
        try:
            await service.open()
            if service.listener is not None:
                host, port = service.listener.address
                out.write(f"The status page: http://{host}:{port}/ (log in as {DEMO_LOGIN},"
                          f" token {token}); marketing shows its QR code there from t=9s.\n")
            out.flush()
            loop = asyncio.get_running_loop()
            script = asyncio.create_task(_script(server.simulator, loop.time(), out))
            if duration is not None:
                loop.call_later(duration, daemon.request_stop, "duration")
            try:
                status = await service.run()
            finally:
                script.cancel()
        finally:
            await service.aclose()
        return status, server.simulator.stats()
    finally:
        server.stop()
        scratch.cleanup()


def run_demo(duration: float | None = None, log_format: str = "console",
             out: TextIO | None = None) -> int:
    out = out or sys.stdout
    tally = Tally()
    secrets = Secrets()  # the process's: redacted from its log lines and the API's errors
    logs.configure(log_format, "info", out, secrets=secrets, extra=[tally])
    status, stats = asyncio.run(_main(duration, tally, out, secrets))
    out.write("\nSummary\n")
    for name, label in SUMMARISED.items():
        out.write(f"  {label:<28} {tally.counts.get(name, 0)}\n")
    out.write(f"  {'requests to the API':<28} {stats['requests']}\n")
    out.write(f"  {'requests sent too early':<28} {stats['early']}"
              "  (while a Retry-After was in force)\n")
    out.flush()
    return status
