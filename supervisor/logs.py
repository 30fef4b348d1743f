"""Logging: every line is a structlog event, rendered once, at the edge.

* ``json``: one JSON object per line (for journald, containers, log shippers);
  ``console``: aligned, human-readable lines; ``auto``: console on a TTY, else JSON.
* Stdlib loggers (httpx, httpcore, apscheduler, uvicorn) go through the same renderer,
  at WARNING and above, so one stream carries one format.
* Secrets: ``register_secret`` adds a value (the API key) that is replaced by
  ``[REDACTED]`` wherever it would appear in an event; fields with secret-looking names
  are dropped; tracebacks never show frame locals.

``configure`` is called once, by the CLI; nothing happens on import.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
QUIET_LIBRARIES = ("httpx", "httpcore", "apscheduler", "uvicorn", "uvicorn.error", "asyncio")
# A poll that waits out a Retry-After makes APScheduler skip the next run and say so at
# WARNING; that is by design (one poll at a time), so only its errors are shown.
HUSHED_LIBRARIES = ("apscheduler.scheduler", "apscheduler.executors.default")
SECRET_FIELDS = frozenset({"api_key", "authorization", "headers", "password", "token"})
REDACTED = "[REDACTED]"

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never print ``value``: it is replaced wherever it appears in an event."""
    if len(value) >= 4:
        _secrets.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def redact(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: drop secret fields, blank out registered secret values."""
    for key in [k for k in event_dict if k.lower() in SECRET_FIELDS]:
        event_dict[key] = REDACTED
    if _secrets:
        for key, value in event_dict.items():
            event_dict[key] = _scrub(value)
    return event_dict


def _renderer(fmt: str, stream: TextIO) -> Processor:
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=stream.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )
    return structlog.processors.JSONRenderer()


def configure(
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    extra: Sequence[Processor] = (),
) -> None:
    """Set up structlog and the stdlib root logger to write to ``stream`` (stdout).

    ``extra`` processors run on the supervisor's own events, after redaction (the demo
    counts events with one).
    """
    stream = stream or sys.stdout
    numeric = LEVELS[level.lower()]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        timestamper,
        redact,
    ]
    renderer = _renderer(fmt, stream)
    if isinstance(renderer, structlog.processors.JSONRenderer):
        # Tracebacks as data, without frame locals (they would hold the API key).
        exceptions: list[Processor] = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    else:
        exceptions = []
    structlog.configure(
        processors=[*shared, *extra, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exceptions,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    for name in HUSHED_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.ERROR))


def event_names(events: list[MutableMapping[str, Any]]) -> list[str]:
    """The names of captured events, in order (a small helper for tests and reports)."""
    return [str(e["event"]) for e in events]
