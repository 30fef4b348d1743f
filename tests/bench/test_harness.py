"""The benchmark harness on tiny scenarios, so that it does not rot.

These assert the shape of the results and the facts that hold whatever the machine's
speed (no request while a Retry-After is in force, one restart request per outage, one
request per quiet cycle), never timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import alerts, check_time, idle, install, latency, retry_after
from bench.__main__ import main as bench_main
from bench.common import API_KEY, RESULTS, start_simulator
from bench.install import DEVELOPMENT
from bench.procs import ROOT, base_env, cpu_seconds, memory_bytes
from bench.report import Figure, Result, Target, table
from bench.suite import BENCHMARKS, Benchmark, run_one
from supervisor.domain import events as ev

pytestmark = pytest.mark.e2e


def assert_well_formed(result: Result, keys: set[str]) -> None:
    assert result.error is None, result.notes
    assert {f.key for f in result.figures} == keys
    for figure in result.figures:
        assert figure.ours, figure.key
        assert figure.naive is None or figure.naive, figure.key
    doc = json.loads(json.dumps(result.to_dict()))  # plain JSON, nothing left out
    assert [f["key"] for f in doc["figures"]] == [f.key for f in result.figures]
    assert result.name in table([result])


def test_restart_latency_one_restart_request_per_outage() -> None:
    size = latency.Size(runs=1, failures=3, failure_rate=4.0, healthy=2, poll_interval=0.3,
                        start_delay=0.3)
    result = latency.run(size)
    assert_well_formed(result, {"restart_latency.median", "restart_latency.run_median",
                                "restart_latency.worst", "restarts_per_outage",
                                "outages_not_restarted"})
    assert list(result.figure("restarts_per_outage").ours) == [1, 1, 1]
    assert list(result.figure("outages_not_restarted").ours) == [0]
    assert all(d > 0 for d in result.figure("restart_latency.median").ours)


def test_alerts_through_the_daemon_a_storm_is_few_messages_naming_every_session() -> None:
    size = alerts.Size(runs=1, poll_interval=0.3, sessions=4, latencies=2, windowed=1,
                       group_window=1.0, storm=60, storm_polls=2, cycle_sessions=50,
                       cycle_needing=3, cycle_interval=0.2, cycles=5, warmup=1)
    result = alerts.run(size)
    assert_well_formed(result, {"alerts.latency", "alerts.latency_from_status",
                                "alerts.latency_beyond_window", "alerts.storm_messages",
                                "alerts.storm_named", "alerts.storm_messages_split",
                                "alerts.storm_named_split", "alerts.poll_cycle_ratio",
                                "alerts.poll_cycle_hanging", "alerts.poll_cycle_no_alerts",
                                "alerts.hanging_sends"})
    for suffix in ("", "_split"):  # 60 sessions: one message on either channel
        assert list(result.figure(f"alerts.storm_named{suffix}").ours) == [1.0]
        assert list(result.figure(f"alerts.storm_messages{suffix}").ours) == [1.0]
    assert len(result.figure("alerts.latency").ours) == 2
    assert all(d >= 0 for d in result.figure("alerts.latency").ours)
    # The status is set before the poll that opens the episode sees it.
    assert all(s >= o for s, o in zip(result.figure("alerts.latency_from_status").ours,
                                      result.figure("alerts.latency").ours, strict=True))
    assert len(result.figure("alerts.poll_cycle_hanging").ours) == 5
    assert len(result.figure("alerts.poll_cycle_no_alerts").ours) == 5
    # The daemons' own logs, where the figures came from.
    logs = RESULTS / "logs"
    assert alerts.events(logs / "alerts-0-storm.log", ev.ALERT_OPENED)
    assert not alerts.events(logs / "alerts-0-cycles-plain.log", ev.ALERT_OPENED)
    assert alerts.events(logs / "alerts-0-cycles-hanging.log", ev.ALERT_OPENED)


def test_retry_after_no_request_while_it_is_in_force() -> None:
    size = retry_after.Size(runs=1, bursts=1, burst=1, retry_after=1.0, spacing=3.0,
                            failing=1, sessions=3, poll_interval=0.3, start_delay=0.2)
    result = retry_after.run(size)
    assert_well_formed(result, {"retry_after.early", "retry_after.answered_429",
                                "retry_after.restarted"})
    assert list(result.figure("retry_after.early").ours) == [0]
    assert result.figure("retry_after.answered_429").ours[0] >= 1
    assert result.figure("retry_after.early").met is True


def test_idle_one_request_per_cycle() -> None:
    result = idle.run(idle.Size(runs=1, sessions=10, poll_interval=0.2, cycles=3))
    assert_well_formed(result, {"idle_requests.per_cycle", "idle_requests.cpu_per_cycle"})
    assert list(result.figure("idle_requests.per_cycle").ours) == [1.0]
    assert list(result.figure("idle_requests.per_cycle").naive or []) == [1.0]


def test_naive_restarts_every_session_not_running() -> None:
    server = start_simulator({"session_count": 3, "start_delay": 0.1})
    try:
        server.simulator.set_status("sess-0002", "STOPPED")
        subprocess.run([sys.executable, "-m", "bench.naive", "--once"], cwd=ROOT, check=True,
                       env=base_env(API_KEY, server.base_url), timeout=30, capture_output=True)
        records = server.simulator.requests()
    finally:
        server.stop()
    assert [r.kind for r in records] == ["list", "restart"]
    assert records[1].session == "sess-0002"


def test_proc_readings_of_this_process() -> None:
    rss, peak = memory_bytes(os.getpid())
    assert 0 < rss <= peak
    assert cpu_seconds(os.getpid()) > 0


def test_a_failing_benchmark_is_reported_not_raised() -> None:
    def broken(size: object) -> Result:
        raise RuntimeError("boom")

    result = run_one(Benchmark("broken", "fails", broken, None, None), None)
    assert result.error == "RuntimeError: boom"
    assert "ERROR: RuntimeError: boom" in table([result])


def test_targets_and_ratio() -> None:
    figure = Figure("x", "x", "s", "run", [0.2, 0.4, 0.3], [0.6, 0.6],
                    Target.median_at_most(0.35, "<= 0.35 s"))
    assert figure.met is True
    assert figure.ratio() == pytest.approx(0.5)
    assert Figure("y", "y", "n", "run", [0, 1], None, Target.all_equal(1, "1")).met is False


def test_cli_lists_and_refuses_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--list"]) == 0
    assert set(capsys.readouterr().out.split()) >= set(BENCHMARKS)
    with pytest.raises(SystemExit):
        bench_main(["no_such_benchmark"])


def test_check_time_measures_check_its_floor_and_the_naive_pass() -> None:
    result = check_time.run(check_time.Size(runs=1, sessions=3, importtime_runs=1,
                                            install=DEVELOPMENT))
    assert_well_formed(result, {"check_time.wall", "check_time.libraries", "check_time.own",
                                "check_time.imports", "check_time.modules",
                                "check_time.own_modules"})
    [modules] = result.figure("check_time.modules").ours
    [own_modules] = result.figure("check_time.own_modules").ours
    assert modules > own_modules > 10  # the cli, the check, its rooms' modules
    assert result.figure("check_time.own").target is not None
    wall = result.figure("check_time.wall").ours[0]
    floor = result.figure("check_time.libraries").ours[0]
    [own] = result.figure("check_time.own").ours
    assert own == pytest.approx((wall - floor) * 1000)
    assert "development install" in result.notes[-1]


def test_the_floor_imports_every_library_module_check_loads() -> None:
    server = start_simulator({"session_count": 3})
    try:
        env = base_env(API_KEY, server.base_url)
        libraries = check_time.third_party_modules(install.here(), env)
    finally:
        server.stop()
    tops = {name.partition(".")[0] for name in libraries}
    assert {"asyncio", "httpx", "httpcore", "anyio", "pydantic", "pydantic_settings",
            "structlog", "msgspec"} <= tops
    assert not any(name.startswith("supervisor") for name in libraries)
    # The floor process loads all of them (and so pays for each), and nothing of ours.
    code = check_time.import_only(libraries) + (
        "import sys, json\nprint(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                          timeout=60, text=True)
    loaded = set(json.loads(done.stdout))
    assert set(libraries) <= loaded
    assert not any(name.startswith("supervisor") for name in loaded)


@pytest.mark.parametrize(("name", "third_party"), [
    ("httpx._client", True), ("pydantic_settings", True), ("asyncio.events", False),
    ("supervisor.cli", False), ("_distutils_hack", False), ("json", False),
    ("sitecustomize", False),
])
def test_what_counts_as_a_library_module(name: str, third_party: bool) -> None:
    assert check_time.is_third_party(name) is third_party


def test_web_the_page_through_the_daemon() -> None:
    from bench import web

    result = web.run(web.Size(sessions=30, poll_interval=0.3, views=2, changes=2, pages=2,
                              cycles=3))
    assert_well_formed(result, {"web.first_view", "web.live_update", "web.poll_cycle_ratio",
                                "web.poll_cycle_pages", "web.poll_cycle_no_page"})
    assert len(result.figure("web.first_view").ours) == 2
    assert len(result.figure("web.live_update").ours) == 2
    assert len(result.figure("web.poll_cycle_pages").ours) == 3
    assert all(d > 0 for d in result.figure("web.first_view").ours)


def test_store_a_poll_cycle_on_postgresql_beside_one_on_sqlite() -> None:
    """Needs Debian's PostgreSQL (.ci/run installs it); under CI a missing one fails."""
    from bench import store
    from tests.pg import missing

    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed under CI: {why}")
        pytest.skip(why)
    result = store.run(store.Size(runs=1, sessions=200, changing=20, poll_interval=0.3,
                                  cycles=3, warmup=1))
    assert_well_formed(result, {"store.poll_cycle_ratio", "store.poll_cycle_postgres",
                                "store.poll_cycle_sqlite"})
    assert len(result.figure("store.poll_cycle_postgres").ours) == 3
    assert len(result.figure("store.poll_cycle_sqlite").ours) == 3
    assert result.figure("store.poll_cycle_ratio").ours[0] > 0
