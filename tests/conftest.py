"""Fixtures shared by every test folder."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from supervisor import logs


def reset_logging() -> None:
    """Undo ``logs.configure``: structlog's defaults, no root handlers, no secrets."""
    structlog.reset_defaults()
    logs._secrets.clear()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """Everything the supervisor logs, as JSON lines at debug level, in a buffer."""
    buffer = io.StringIO()
    logs.configure("json", "debug", buffer)
    yield buffer
    reset_logging()
