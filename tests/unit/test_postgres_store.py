"""What only the PostgreSQL store has to show (the store tests that run on both backends
are in test_sqlite_store.py, test_alert_store.py and test_holds.py): a lost connection is
one line without the DSN and the next call connects again; a database that is not ours,
or newer, is refused and left alone; processes racing on one database (migrating,
claiming a record, updating the gate row) never both win; nothing of it is loaded
without ``state_url``."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.domain.models import Phase, Record
from supervisor.state.postgres import PostgresStore, migrate
from supervisor.state.schema import SCHEMA_VERSION
from supervisor.state.store import GateRow, StateError, describe_dsn, dsn_secrets
from tests.conftest import reset_logging
from tests.fakes import FakeClock

PASSWORD = "pg-unit-PASSWORD-93b2"


@pytest.fixture
def opened() -> Iterator[Callable[..., PostgresStore]]:
    made: list[PostgresStore] = []

    def open_store(url: str, **kw: Any) -> PostgresStore:
        with capture_logs():
            made.append(PostgresStore.open(url, clock=FakeClock(), **kw))
        return made[-1]

    yield open_store
    for store in made:
        store.close()


def sql(url: str, *statements: str) -> list[Any]:
    import psycopg

    found: list[Any] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            cursor = conn.execute(statement)
            found.append(cursor.fetchall() if cursor.description else None)
    return found


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def test_a_dsn_is_shown_as_its_host_port_and_database_only() -> None:
    url = "postgresql://bob:s3cret%21@db.example:5433/wasend?sslmode=require&password=x"
    assert describe_dsn(url) == "postgresql://db.example:5433/wasend"
    assert describe_dsn("postgres://[::1]/w") == "postgresql://[::1]/w"
    assert describe_dsn("postgresql://") == (
        "postgresql:// (from the PG* environment variables)")
    assert set(dsn_secrets(url)) == {url, "s3cret%21", "s3cret!"}
    assert dsn_secrets("postgresql://h/db") == ("postgresql://h/db",)


def test_a_lost_connection_is_one_line_without_the_dsn_and_the_next_call_reconnects(
    opened: Callable[..., PostgresStore], pg_url: str,
) -> None:
    store = opened(with_password(pg_url))
    store.put(Record("s1", attempt=1))
    sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(StateError) as caught:
        store.put(Record("s1", attempt=2))
    line = str(caught.value)
    assert "\n" not in line and line.startswith("lost the connection to postgresql://127.0.0.1:")
    assert PASSWORD not in line and "postgres@" not in line
    store.put(Record("s1", attempt=3))  # connected again
    assert store.get("s1") == Record("s1", attempt=3)
    assert opened(pg_url).get("s1") == Record("s1", attempt=3)


def test_a_writer_waits_for_another_process_s_transaction_for_its_busy_timeout_at_most(
    opened: Callable[..., PostgresStore], pg_url: str,
) -> None:
    holder, waiter = opened(pg_url), opened(pg_url, busy_timeout=0.2)
    with holder.transaction():
        holder.put(Record("s1", attempt=1))
        with pytest.raises(StateError, match="lock timeout"):
            waiter.put(Record("s1", attempt=2))
    waiter.put(Record("s1", attempt=3))
    assert holder.get("s1") == Record("s1", attempt=3)


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    with pytest.raises(StateError) as caught:
        PostgresStore.open(f"postgresql://u:{PASSWORD}@127.0.0.1:1/db", connect_timeout=1)
    line = str(caught.value)
    assert line.startswith("cannot reach postgresql://127.0.0.1:1/db: ")
    assert PASSWORD not in line and "\n" not in line


def test_somebody_elses_database_is_refused_and_left_as_it_was(pg_url: str) -> None:
    sql(pg_url, "CREATE TABLE orders (id INTEGER)", "INSERT INTO orders VALUES (1)")
    with pytest.raises(StateError, match=r"not a wasend-supervisor state \(tables: orders\)"):
        PostgresStore.open(pg_url)
    assert sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
               "SELECT id FROM orders") == [[("orders",)], [(1,)]]


def test_a_database_from_a_newer_supervisor_is_refused(
    opened: Callable[..., PostgresStore], pg_url: str,
) -> None:
    opened(pg_url).close()
    sql(pg_url, "INSERT INTO schema_migrations VALUES (99, 0, 'the future')")
    with pytest.raises(StateError, match="schema version 99, newer than this supervisor"):
        PostgresStore.open(pg_url)
    with pytest.raises(StateError, match="schema version 99"):
        PostgresStore.open_readonly(pg_url)


def test_reading_only_creates_nothing_and_writes_nothing(
    opened: Callable[..., PostgresStore], pg_url: str,
) -> None:
    with pytest.raises(FileNotFoundError):
        PostgresStore.open_readonly(pg_url)
    assert sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == [[]]
    opened(pg_url).put(Record("s1"))
    reader = PostgresStore.open_readonly(pg_url)
    try:
        assert reader.get("s1") == Record("s1")
        with pytest.raises(StateError, match="read-only"):
            reader.put(Record("s2"))
        assert reader.get("s2") is None
    finally:
        reader.close()


def test_an_older_database_is_migrated_in_place_keeping_its_rows(
    opened: Callable[..., PostgresStore], pg_url: str,
) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrate(conn, 1.0, target=3) == 3
        conn.execute("INSERT INTO records (session_id, data, updated_at) VALUES"
                     " ('old', '{\"phase\": \"healthy\"}', 1.0)")
    store = opened(pg_url)
    assert store.schema_version == SCHEMA_VERSION
    assert store.get("old") == Record("old", phase=Phase.HEALTHY)
    assert store.holds() == {} and store.open_episodes() == []
    versions = sql(pg_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert versions == [[(v,) for v in range(1, SCHEMA_VERSION + 1)]]


def race(count: int, work: Callable[[int], object]) -> list[object]:
    """``work(i)`` in ``count`` threads let go at once; what each returned."""
    gate = threading.Barrier(count)
    found: dict[int, object] = {}

    def one(i: int) -> None:
        gate.wait()
        found[i] = work(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(found) == count
    return [found[i] for i in range(count)]


def test_processes_starting_together_on_an_empty_database_migrate_it_once(
    pg_url: str,
) -> None:
    stores = race(4, lambda _: PostgresStore.open(pg_url, clock=FakeClock()))
    try:
        assert {s.schema_version for s in stores if isinstance(s, PostgresStore)} == {
            SCHEMA_VERSION}
    finally:
        for store in stores:
            if isinstance(store, PostgresStore):
                store.close()
    assert sql(pg_url, "SELECT count(*) FROM schema_migrations") == [[(SCHEMA_VERSION,)]]


def test_of_many_processes_claiming_one_restart_exactly_one_wins(
    opened: Callable[..., PostgresStore], pg_url: str,
) -> None:
    seen = Record("s1", phase=Phase.UNHEALTHY, last_status="STOPPED")
    opened(pg_url).put(seen)
    stores = [opened(pg_url) for _ in range(6)]
    assert all(s.get("s1") == seen for s in stores)  # each decided on the same record
    won = race(6, lambda i: stores[i].swap(
        seen, Record("s1", phase=Phase.VERIFYING, attempt=1, name=f"claim {i}")))
    assert sorted(won, key=bool) == [False] * 5 + [True]
    winner = won.index(True)
    assert opened(pg_url).get("s1") == Record("s1", phase=Phase.VERIFYING, attempt=1,
                                               name=f"claim {winner}")


def test_the_gate_row_is_read_and_written_in_one_step_by_each_process(
    opened: Callable[..., PostgresStore], pg_url: str,
) -> None:
    stores = [opened(pg_url) for _ in range(4)]

    def send(row: GateRow | None, at: float) -> GateRow:
        return GateRow(0.0, (*(row.sends if row else ()), at))

    def many(i: int) -> None:
        for n in range(15):
            at = float(i * 100 + n)
            stores[i].update_gate_row("key", partial(send, at=at))

    race(4, many)  # the first updates find no row: made once, none lost
    row = stores[0].gate_row("key")
    assert row is not None and sorted(row.sends) == sorted(
        float(i * 100 + n) for i in range(4) for n in range(15))


def test_check_and_status_without_state_url_load_nothing_of_postgresql() -> None:
    code = (
        "import sys, supervisor.cli, supervisor.runtime.check, supervisor.runtime.wiring,"
        " supervisor.state.report\n"
        "from pydantic import SecretStr\n"
        "from supervisor.config.model import Settings\n"
        "store = supervisor.runtime.wiring.open_store("
        "Settings(api_key=SecretStr('sk-x'), state_path=':memory:'))\n"
        "store.close()\n"
        "print('loaded:', ','.join(m for m in sys.modules if m.startswith('psycopg')"
        " or m == 'supervisor.state.postgres'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    [line] = [x for x in done.stdout.splitlines() if x.startswith("loaded:")]
    assert line.strip() == "loaded:"


@pytest.mark.usefixtures("no_state_env")
@pytest.mark.parametrize(("argv", "status"), [
    (["status"], 3), (["history"], 78), (["retry", "s1"], 78), (["pause", "s1"], 78),
])
def test_a_database_the_commands_cannot_reach_is_one_line_naming_state_url(
    argv: list[str], status: int, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from supervisor import cli

    monkeypatch.setenv("WASEND_SUPERVISOR_STATE_URL",
                       f"postgresql://u:{PASSWORD}@127.0.0.1:1/db?connect_timeout=1")
    try:
        assert cli.main(argv) == status
    finally:
        reset_logging()  # the commands configure the logs
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("wasend-supervisor: state error: state_url: cannot reach"
                           " postgresql://127.0.0.1:1/db: "), line
    assert line.endswith("(from environment variable WASEND_SUPERVISOR_STATE_URL)")
    assert PASSWORD not in captured.err + captured.out


async def test_a_poll_on_a_lost_connection_sends_nothing_and_the_next_one_supervises(
    opened: Callable[..., PostgresStore], pg_url: str,
) -> None:
    from supervisor.domain.policy import Policy
    from supervisor.runtime.cycle import Supervisor
    from tests.fakes import FakeApi, MaxRandom

    clock = FakeClock()
    store = opened(pg_url)
    api = FakeApi({"a": "WORKING"})
    sup = Supervisor(api, store, Policy(), clock, MaxRandom(), auth_retry_interval=300)
    assert (await sup.poll()).ok
    api.statuses["a"] = "STOPPED"
    sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with capture_logs() as events:
        lost = await sup.poll()
    assert not lost.ok and lost.state_error is not None
    assert lost.state_error.startswith("lost the connection to postgresql://127.0.0.1:")
    assert [e["log_level"] for e in events if e["event"] == "state.unavailable"] == ["error"]
    assert [c for c in api.calls if c[0] == "restart"] == []
    assert (await sup.poll()).ok  # connected again: supervision goes on
    assert [c for c in api.calls if c[0] == "restart"] == [("restart", "a")]
    record = opened(pg_url).get("a")
    assert record is not None and record.phase is Phase.VERIFYING


def test_a_bare_url_takes_everything_from_libpq_s_pg_variables(
    opened: Callable[..., PostgresStore], pg_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    for name, value in {"PGHOST": parts.hostname, "PGPORT": str(parts.port),
                        "PGUSER": parts.username, "PGDATABASE": parts.path[1:]}.items():
        monkeypatch.setenv(name, str(value))
    store = opened("postgresql://")
    assert store.location == "postgresql:// (from the PG* environment variables)"
    store.put(Record("s1"))
    assert opened(pg_url).get("s1") == Record("s1")
