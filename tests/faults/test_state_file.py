"""The state file under a running daemon: a full disk, a lock another process holds, the
file emptied, deleted or overwritten while ``run`` uses it, and ``history`` or ``check``
run beside it."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.ops.metrics import Metrics
from supervisor.runtime.wiring import build
from supervisor.simulator import SimulatorServer
from supervisor.state.sqlite import SqliteStore
from tests.e2e.conftest import Running, Served, SimFactory, cli
from tests.e2e.test_operations import eventually
from tests.fakes import MaxRandom
from tests.faults.conftest import settings_at, start_run
from tests.waiting import until, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

RESTART_REQUESTS = "wasend_supervisor_restart_requests_total"


def restarts(server: SimulatorServer) -> list[str | None]:
    return [r.session for r in server.simulator.requests() if r.kind == "restart"]


def requested_rows(state: Path) -> int:
    store = SqliteStore.open_readonly(state)
    try:
        return sum(e.event == "restart.requested" for e in store.read_history())
    finally:
        store.close()


# ------------------------------------------------------------------ a full disk


class SmallDisk:
    """A filesystem of its own (tmpfs, 2 MiB) that a test can fill and free."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while self._write(fd):
                pass
        finally:
            os.close(fd)

    @staticmethod
    def _write(fd: int) -> bool:
        try:
            os.write(fd, b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return False
        return True

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "small"
    root.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                           str(root)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("needs a filesystem of its own to fill (mount -t tmpfs, as root)")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


async def test_on_a_full_disk_every_restart_is_logged_counted_and_kept_once(
    simulator: SimFactory, small_disk: SmallDisk,
) -> None:
    """Expectation: with the state file on a full filesystem, a session that fails is not
    restarted (its claim cannot be written, so nothing is sent), and no poll logs
    ``restart.requested`` or counts ``restart_requests_total`` for it; each such poll
    says ``state.unavailable`` once. Once there is room, it is restarted once: one
    request, one event, one count, one history row."""
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    state = small_disk.root / "state.db"
    metrics = Metrics()
    with capture_logs() as events:
        running = Running(build(settings_at(server.base_url, state_path=state),
                                rng=MaxRandom()))
        running.runtime.supervisor.observers.append(metrics.observe_event)
        await until(lambda: any(e["event"] == "poll.completed" for e in events))
        small_disk.fill()
        server.simulator.set_status("b", "STOPPED")
        await until(lambda: sum(e["event"] == "state.unavailable" for e in events) >= 5)
        assert restarts(server) == []
        assert [e for e in events if e["event"] == "restart.requested"] == []
        assert metrics.registry.get_sample_value(RESTART_REQUESTS) == 0
        assert all("full" in e["problem"] for e in events if e["event"] == "state.unavailable")
        small_disk.free()
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events))
        assert await running.stop() == 0
    assert restarts(server) == ["b"]
    assert [e["session_id"] for e in events if e["event"] == "restart.requested"] == ["b"]
    assert metrics.registry.get_sample_value(RESTART_REQUESTS) == 1
    assert requested_rows(state) == 1


# ------------------------------------------------------- a lock held elsewhere

HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


async def test_a_lock_held_by_another_process_does_not_stall_the_event_loop(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: while another process holds the state file's write lock for 3 s,
    the daemon's poll waits for it off the event loop: a task ticking every 20 ms never
    waits 0.5 s. The session that failed meanwhile is restarted once the lock is let go,
    once."""
    server = simulator({"sessions": [{"id": "a"}, {"id": "b"}], "session_count": 0})
    state = tmp_path / "state.db"
    gaps: list[float] = []

    async def tick() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.02)
            gaps.append(loop.time() - last)
            last = loop.time()

    with capture_logs() as events:
        running = Running(build(settings_at(server.base_url, state_path=state),
                                rng=MaxRandom()))
        await until(lambda: any(e["event"] == "poll.completed" for e in events))
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLD, str(state), "3", stdout=asyncio.subprocess.PIPE)
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"held\n"
        held_at = time.monotonic()
        ticker = asyncio.create_task(tick())
        server.simulator.set_status("b", "STOPPED")
        await until(lambda: any(e["event"] == "restart.succeeded" for e in events), 15)
        ticker.cancel()
        assert await holder.wait() == 0
        assert await running.stop() == 0
    [restart] = [r for r in server.simulator.requests() if r.kind == "restart"]
    assert restart.monotonic - held_at >= 2.5, "the restart was not held up by the lock"
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"


# ------------------------------------------------------ a real run, and its file


def logged(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


class Daemon:
    """``run`` in a process of its own on ``state``, which has restarted ``a`` once."""

    def __init__(self, server: SimulatorServer, tmp_path: Path) -> None:
        self.server = server
        self.state = tmp_path / "state.db"
        self.log = tmp_path / "run.log"
        self.proc = start_run(server, self.state, self.log)
        wait_for(lambda: self.saw("restart.succeeded"))

    def saw(self, name: str) -> bool:
        return any(e["event"] == name for e in logged(self.log))

    def restart(self, session: str) -> None:
        """Fail a session and wait until the daemon has restarted it."""
        before = len(restarts(self.server))
        self.server.simulator.set_status(session, "STOPPED")
        wait_for(lambda: len(restarts(self.server)) > before
                 and self.server.simulator.status(session) == "WORKING")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=10) == 0, self.log.read_text()[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def daemon(simulator: SimFactory, tmp_path: Path) -> Iterator[Daemon]:
    server = simulator({"sessions": [{"id": "a", "status": "STOPPED"}, {"id": "b"}],
                        "session_count": 0})
    running = Daemon(server, tmp_path)
    try:
        yield running
    finally:
        running.kill()


def test_history_beside_a_run_whose_file_was_emptied_leaves_its_wal_and_rows(
    daemon: Daemon,
) -> None:
    """Expectation: ``truncate -s 0 state.db`` under a daemon (paused between polls),
    then ``history``: ``history`` refuses the empty file in one line and leaves the
    daemon's ``-wal`` as it was (SQLite deletes the ``-wal`` of an empty database it
    opens). The daemon, going on, notices (``state.file_replaced``, ``problem =
    truncated``), rebuilds the file from what it holds (its ``-wal`` included) and keeps
    supervising; every restart it sent has its history row."""
    state, wal = daemon.state, daemon.state.with_name("state.db-wal")
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        os.truncate(state, 0)
        before = wal.read_bytes()
        looked = cli("history", env={"WASEND_SUPERVISOR_STATE_PATH": str(state)})
        wal_kept = wal.exists() and wal.read_bytes() == before
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert looked.returncode == 78
    [line] = looked.stderr.strip().splitlines()
    assert "is empty and was not made by wasend-supervisor" in line
    assert wal_kept
    wait_for(lambda: daemon.saw("state.file_restored"))
    [replaced] = [e for e in logged(daemon.log) if e["event"] == "state.file_replaced"]
    assert (replaced["problem"], replaced["level"]) == ("truncated", "error")
    daemon.restart("b")
    daemon.stop()
    assert requested_rows(state) == len(restarts(daemon.server)) == 2


def test_a_state_file_deleted_under_a_run_is_rebuilt_with_every_row(daemon: Daemon) -> None:
    """Expectation: ``rm state.db*`` under a running daemon is noticed within a poll
    (one ``state.file_replaced``, ``problem = deleted``): the daemon makes the file again
    with every record and history row it had (read through the deleted file it still
    holds open), writes on to it, and not to the deleted one."""
    for name in daemon.state.parent.glob("state.db*"):
        name.unlink()
    wait_for(lambda: daemon.saw("state.file_restored"))
    daemon.restart("b")
    daemon.stop()
    found = [e for e in logged(daemon.log) if e["event"] == "state.file_replaced"]
    assert [(e["problem"], e["path"]) for e in found] == [("deleted", str(daemon.state))]
    assert requested_rows(daemon.state) == len(restarts(daemon.server)) == 2


def test_a_check_beside_a_run_whose_file_was_overwritten_moves_nothing(
    daemon: Daemon,
) -> None:
    """Expectation: garbage written over the first page of a state file that a daemon
    holds (paused between polls), then a ``check`` on it: the check cannot tell the file
    is a state file, so it refuses in one line (its error status) and leaves the file as
    it was (it used to move the daemon's live file aside, splitting the two onto
    different files). The daemon, going on, notices (``problem = overwritten``), moves
    the file aside itself (it knows the file is its own), and rebuilds it from what it
    holds: its restarts, before and after, are all in the file its path names."""
    state = daemon.state
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        with state.open("r+b") as f:
            f.write(os.urandom(4096))
        garbage = state.read_bytes()
        env = {"WASEND_BASE_URL": daemon.server.base_url,
               "WASEND_API_KEY": daemon.server.api_key,
               "WASEND_SUPERVISOR_STATE_PATH": str(state)}
        checked = cli("check", env=env)
        left_alone = state.read_bytes() == garbage and not list(state.parent.glob("*.corrupt-*"))
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert checked.returncode in (3, 78), checked.stderr  # 3 once check's start-up errors say so
    [line] = checked.stderr.strip().splitlines()
    assert "is not a wasend-supervisor state file" in line
    assert left_alone
    wait_for(lambda: daemon.saw("state.file_restored"))
    [moved] = [e for e in logged(daemon.log) if e["event"] == "state.corrupt_moved_aside"]
    assert Path(moved["moved_to"]).read_bytes()[:4096] == garbage[:4096]
    daemon.restart("b")
    daemon.stop()
    assert requested_rows(state) == len(restarts(daemon.server)) == 2
    conn = sqlite3.connect(state)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_readyz_is_503_while_the_state_file_cannot_be_used(
    simulator: SimFactory, tmp_path: Path,
) -> None:
    """Expectation: the state file replaced, under a running service, by a file that is
    not a state file: ``/readyz`` answers 503 with the reason (no restart can be recorded,
    so none is sent) while ``/livez`` stays 200, and the file is left as it was. Once the
    path is put right, the service makes the file again with every row it held and is
    ready again."""
    server = simulator({"sessions": [{"id": "a", "status": "STOPPED"}], "session_count": 0})
    state = tmp_path / "state.db"
    with capture_logs() as events:
        served = await Served(server, state_path=state).start()
        try:
            await until(lambda: any(e["event"] == "restart.succeeded" for e in events))
            await eventually(served, "/readyz", 200)
            state.unlink()
            state.write_text("poll_interval = 10\n")
            await eventually(served, "/readyz", 503)
            reason = (await served.get("/readyz")).json()["reason"]
            assert reason.startswith("the state file cannot be used: ")
            assert "is not a wasend-supervisor state file" in reason
            assert await served.status("/livez") == 200
            assert state.read_text() == "poll_interval = 10\n"
            state.unlink()
            await eventually(served, "/readyz", 200)
        finally:
            assert await served.stop() == 0
    assert [e["problem"] for e in events if e["event"] == "state.file_replaced"] == ["replaced"]
    assert requested_rows(state) == len(restarts(server)) == 1
