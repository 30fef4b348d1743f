"""Fixtures shared by every test folder."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from supervisor import logs
from supervisor.clock import Clock
from supervisor.state.postgres import PostgresStore
from supervisor.state.sqlite import SqliteStore
from tests import pg


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
                 "STATE_DIRECTORY", "WASEND_SUPERVISOR_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.Server]:
    """A real PostgreSQL server for the session (``tests/pg.py``). Missing under CI: the
    test fails; elsewhere it is skipped with the reason."""
    why = pg.missing()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        why = why or "psycopg is not installed (the 'postgres' extra)"
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    server = pg.Server().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: pg.Server) -> str:
    """The DSN of a fresh, empty database on the session's server."""
    return pg_server.database()


Opener = Callable[..., SqliteStore | PostgresStore]


@pytest.fixture(params=["sqlite", "postgres"])
def shared_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores on one shared state, on each backend: an SQLite file, a PostgreSQL
    database (``opener(clock=...)``: another process's store on the same state). Every
    store opened is closed at the end."""
    opened: list[SqliteStore | PostgresStore] = []
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")

        def opener(clock: Clock | None = None, **options: Any) -> SqliteStore | PostgresStore:
            opened.append(PostgresStore.open(url, clock=clock, **options))
            return opened[-1]
    else:
        path = tmp_path / "state.db"

        def opener(clock: Clock | None = None, **options: Any) -> SqliteStore | PostgresStore:
            opened.append(SqliteStore.open(path, clock=clock, **options))
            return opened[-1]

    yield opener
    for store in opened:
        store.close()
