"""Fixtures shared by every test folder."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from supervisor import logs


def reset_logging() -> None:
    """Undo ``logs.configure``: structlog's defaults, no root handlers."""
    structlog.reset_defaults()
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


@pytest.fixture
def no_state_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No state file, configuration or key from the environment: the state commands'
    tests name their file themselves, and the default location is under ``tmp_path``."""
    for name in ("WASEND_SUPERVISOR_STATE_PATH", "WASEND_SUPERVISOR_CONFIG", "WASEND_API_KEY",
                 "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
