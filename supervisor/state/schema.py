"""The state file's schema: its migrations, and how a record is written in it.

``MIGRATIONS`` are functions applied in order, each in the same transaction as its row in
``schema_migrations``; ``migrate`` brings a database up to ``SCHEMA_VERSION`` (or to an
earlier ``target``, which tests use to build old files). A database with a newer version
than this code knows, or with tables but no ``schema_migrations`` (somebody else's), is
refused with a ``StateError``.

Records are stored as canonical JSON (``encode``); ``decode`` reads them back, ignoring
fields it does not know and leaving out fields it lacks (their defaults apply), so a file
written by a neighbouring version stays readable. Where a fact moved from what a record
says for people into a field of its own, ``decode`` takes it from the older form when
the field is missing (``_UPGRADES``): ``starting_elsewhere``, once only the
``last_outcome`` of that name. Versions before it read the field's records still: they
ignore it, and keep writing the ``last_outcome`` it comes with.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, Final

import msgspec

from supervisor.domain.models import Phase, Record
from supervisor.state.store import StateError

SCHEMA_VERSION: Final = 6


# --------------------------------------------------------------------- migrations


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE records (session_id TEXT PRIMARY KEY, data TEXT NOT NULL,"
        " version INTEGER NOT NULL DEFAULT 1, updated_at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
        " session_id TEXT NOT NULL, event TEXT NOT NULL, action TEXT, attempt INTEGER,"
        " outcome TEXT, http_status INTEGER, duration_ms INTEGER)"
    )
    conn.execute("CREATE INDEX history_at ON history (at)")


def _v2(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE records ADD COLUMN writer TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE history ADD COLUMN reason TEXT")
    conn.execute("ALTER TABLE history ADD COLUMN status TEXT")
    conn.execute("ALTER TABLE history ADD COLUMN next_attempt_at REAL")
    conn.execute("CREATE INDEX history_session_at ON history (session_id, at)")


def _v3(conn: sqlite3.Connection) -> None:
    # ``key`` is a fingerprint of the API key (supervisor.api.ratelimit.key_fingerprint),
    # never the key; ``sends`` a JSON list of epoch seconds.
    conn.execute(
        "CREATE TABLE gate (key TEXT PRIMARY KEY, paused_until REAL NOT NULL DEFAULT 0,"
        " sends TEXT NOT NULL DEFAULT '[]', updated_at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE heartbeats (id TEXT PRIMARY KEY, kind TEXT NOT NULL, host TEXT NOT NULL,"
        " pid INTEGER NOT NULL, started_at REAL NOT NULL, seen_at REAL NOT NULL,"
        " last_poll_at REAL, last_ok_at REAL, poll_interval REAL, scope TEXT NOT NULL DEFAULT '',"
        " stopped_at REAL, waiting_until REAL)"
    )


def _v4(conn: sqlite3.Connection) -> None:
    # The open alert episodes: at most one per kind and subject (a resolved one is
    # deleted); ``kind`` a domain.episodes.Kind value, ``subject`` a session id or "".
    conn.execute(
        "CREATE TABLE episodes (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
        " subject TEXT NOT NULL, opened_at REAL NOT NULL, session_name TEXT NOT NULL"
        " DEFAULT '', status TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '')"
    )
    conn.execute("CREATE UNIQUE INDEX episodes_open ON episodes (kind, subject)")
    # Transitions waiting to be delivered, one row per channel; ``transition`` is a
    # domain.episodes.Transition as msgspec JSON. Ids are never reused.
    conn.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL,"
        " transition TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL"
        " DEFAULT 0, next_try_at REAL NOT NULL DEFAULT 0)"
    )
    conn.execute("CREATE INDEX outbox_due ON outbox (channel, next_try_at)")
    # What the episodes' rules watch before one opens: since when polls have failed to
    # reach the API (``name`` = 'api'), and the last failure's kind.
    conn.execute(
        "CREATE TABLE alert_watch (name TEXT PRIMARY KEY, since REAL NOT NULL,"
        " failure TEXT NOT NULL DEFAULT '')"
    )


def _v5(conn: sqlite3.Connection) -> None:
    # Operator holds: the sessions a person paused supervision of (state.store.Hold),
    # one row each; a released hold is deleted.
    conn.execute(
        "CREATE TABLE holds (session_id TEXT PRIMARY KEY, held_by TEXT NOT NULL,"
        " held_at REAL NOT NULL)"
    )


def _v6(conn: sqlite3.Connection) -> None:
    """The leader's lease lives in PostgreSQL only (``supervisor.state.postgres``): an
    SQLite file is one host's, and has no replicas to choose among. Nothing to do here;
    the version is kept in step with PostgreSQL's."""


MIGRATIONS: Final[tuple[tuple[int, str, Callable[[sqlite3.Connection], None]], ...]] = (
    (1, "records and restart history", _v1),
    (2, "writer of each record; reason, status and next attempt in the history", _v2),
    (3, "the rate gate shared by processes, and their heartbeats", _v3),
    (4, "open alert episodes, the alert outbox, and the outage watch", _v4),
    (5, "operator holds: sessions whose supervision a person paused", _v5),
    (6, "the leader's lease among replicas (PostgreSQL only)", _v6),
)


def applied_versions(conn: sqlite3.Connection) -> list[int]:
    """The migrations applied to this database ([] for an empty one).

    Raises StateError for a database that has tables but is not a state file.
    """
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if "schema_migrations" not in tables:
        if tables:
            raise StateError(
                "is an SQLite database but not a wasend-supervisor state file "
                f"(tables: {', '.join(sorted(tables)[:5])})"
            )
        return []
    return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def migrate(conn: sqlite3.Connection, now: float, *, target: int = SCHEMA_VERSION) -> int:
    """Apply the missing migrations up to ``target``, in one transaction; the version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = applied_versions(conn)
        if done and max(done) > SCHEMA_VERSION:
            raise StateError(
                f"has schema version {max(done)}, newer than this supervisor knows "
                f"({SCHEMA_VERSION}); use a newer wasend-supervisor or another state_path"
            )
        if not done:
            conn.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                " applied_at REAL NOT NULL, description TEXT NOT NULL)"
            )
        for version, description, step in MIGRATIONS:
            if version > target or version in done:
                continue
            step(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at, description) VALUES (?,?,?)",
                (version, now, description),
            )
            done.append(version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(done)


# --------------------------------------------------------------- record encoding


def encode(record: Record) -> str:
    """A record as compact, canonical JSON (floats round-trip exactly)."""
    data: dict[str, Any] = {}
    for name in Record.__struct_fields__:
        value = getattr(record, name)
        if isinstance(value, Phase):
            value = value.value
        elif isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, tuple):
            value = list(value)
        data[name] = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# A field a record written before it existed lacks: how to tell its value from the rest.
_UPGRADES: Final[dict[str, Callable[[dict[str, Any]], Any]]] = {
    "starting_elsewhere": lambda data: data.get("last_outcome") == "starting_elsewhere",
}


def decode(session_id: str, text: str) -> Record:
    """The record a row holds; raises ValueError or TypeError if it cannot be read.
    Fields it does not know are ignored; fields it lacks take their defaults (or what
    ``_UPGRADES`` reads from an older form). msgspec checks every field against
    ``Record``'s types (an integer where a number is due is taken; a boolean where an
    integer is due is not)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    for name, upgrade in _UPGRADES.items():
        if name not in data:
            data[name] = upgrade(data)
    return msgspec.convert({**data, "session_id": session_id}, type=Record)
