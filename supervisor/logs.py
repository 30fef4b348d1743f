"""Logging: every line is a structlog event, rendered once, at the edge.

* ``json``: one JSON object per line (for journald, containers, log shippers);
  ``console``: aligned, human-readable lines; ``auto``: console on a TTY, else JSON.
* Stdlib loggers (httpx, httpcore, apscheduler, uvicorn) go through the same renderer,
  at WARNING and above, so one stream carries one format.
* Console lines are for a terminal: control characters in their values (a session's name
  from the API, an error's text) are escaped (``supervisor.printable``), so that a value
  cannot end a line, forge another or move the cursor; colours only on a TTY, and never
  when ``NO_COLOR`` is set (https://no-color.org). JSON escapes them by itself.
* Secrets: the process's ``Secrets`` (``supervisor.domain.secrets``), handed to
  ``configure``: each of its values (the API key) is replaced by ``[REDACTED]`` wherever
  it would appear in an event, even when it became known after ``configure``; fields with
  secret-looking names are dropped; tracebacks never show frame locals.

``configure`` is called once, by the CLI; nothing happens on import.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

from supervisor.domain.secrets import Secrets
from supervisor.printable import printable

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


def redacting(secrets: Secrets) -> Processor:
    """A structlog processor: the event's secret fields blanked, ``secrets``' values
    replaced wherever they appear in it (``Secrets.redact_fields``)."""

    def redact(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        secrets.redact_fields(event_dict)
        return event_dict

    return redact


class _Escaped:
    """A console value that held control characters: shown quoted, with them escaped
    (structlog's console renderer shows a value that is not a string with ``repr``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"'{printable(self.text)}'"


def escape_controls(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor for console lines: control characters in the event's name
    (a library's message) and in string values are shown escaped (``\\n``, ``\\x1b``).
    Other values are shown with ``repr``, which escapes them already."""
    for key, value in event_dict.items():
        if not isinstance(value, str) or printable(value) == value:
            continue
        if key == "event":
            event_dict[key] = printable(value)
        elif key == "exception":  # a traceback already rendered: keep its lines
            event_dict[key] = "\n".join(printable(line) for line in value.split("\n"))
        else:
            event_dict[key] = _Escaped(value)
    return event_dict


def _escaped_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """A plain traceback (no frame locals), each of its lines escaped as the values are."""
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write("\n".join(printable(line) for line in buffer.getvalue().split("\n")))


def _renderer(fmt: str, stream: TextIO) -> Processor:
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=stream.isatty() and not os.environ.get("NO_COLOR"),
            exception_formatter=_escaped_traceback,
        )
    return structlog.processors.JSONRenderer()


def configure(
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    secrets: Secrets | None = None,
    extra: Sequence[Processor] = (),
) -> None:
    """Set up structlog and the stdlib root logger to write to ``stream`` (stdout).

    ``secrets`` are the process's secrets, redacted from every event (as they are when
    the event is rendered: a value added later is redacted from then on); without them,
    only the fields of secret-looking names are. ``extra`` processors run on the
    supervisor's own events, after redaction (the demo counts events with one).
    """
    stream = stream or sys.stdout
    numeric = LEVELS[level.lower()]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        timestamper,
        redacting(Secrets() if secrets is None else secrets),
    ]
    renderer = _renderer(fmt, stream)
    if isinstance(renderer, structlog.processors.JSONRenderer):
        # Tracebacks as data, without frame locals (they would hold the API key).
        before_rendering: list[Processor] = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    else:
        before_rendering = [escape_controls]
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
            *before_rendering,
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
