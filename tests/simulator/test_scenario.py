"""Scenario loading and validation (TOML, JSON, admin patches)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.simulator import Faults, ScenarioError, load_scenario, parse_scenario
from supervisor.simulator.faults import Outage, RateLimit
from supervisor.simulator.scenario import merge_faults, parse_faults

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "scenario.example.toml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_scenario_loads_with_every_section() -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.session_count == 20
    assert [s.id for s in scenario.sessions] == ["sess-0003", "support-line", "needs-scan"]
    assert scenario.sessions[0].outcome == ("FAILED", "FAILED", "WORKING")
    faults = scenario.faults
    assert faults.seed == 42
    assert faults.random_failures.rate == 0.001
    assert [f.at for f in faults.scheduled_failures] == [30.0, 60.0]
    assert faults.scheduled_failures[0].sessions == frozenset({"sess-0002"})
    assert faults.outage == Outage(duration=10.0, mode="503", at=120.0)


def test_example_scenario_mentions_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    from supervisor.simulator.scenario import SCENARIO_KEYS, SECTION_KEYS, SESSION_KEYS

    keys = {*SCENARIO_KEYS, *SESSION_KEYS, *(k for ks in SECTION_KEYS.values() for k in ks)}
    missing = sorted(k for k in keys if k not in text)
    assert missing == []


def test_json_scenario_loads(tmp_path: Path) -> None:
    data = {
        "session_count": 2,
        "list_shape": "flat",
        "outcome": ["failed", "WORKING"],
        "rate_limit": {"requests": 5, "window": 1, "retry_after_form": "http-date"},
        "sessions": [{"id": "x", "status": "stopped"}],
    }
    scenario = load_scenario(write(tmp_path, "s.json", json.dumps(data)))
    assert scenario.session_count == 2
    assert scenario.faults.list_shape == "flat"
    assert scenario.faults.outcome == ("FAILED", "WORKING")
    assert scenario.faults.rate_limit == RateLimit(
        requests=5, window=1.0, retry_after_form="http-date"
    )
    assert scenario.sessions[0].status == "STOPPED"


def test_empty_scenario_gives_defaults(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, "empty.toml", ""))
    assert scenario.session_count is None
    assert scenario.faults == Faults()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("list_shap = 'flat'", "list_shap: unknown key (did you mean 'list_shape'?)"),
        ("[rate_limit]\nreqests = 3", "rate_limit.reqests: unknown key (did you mean 'requests'?)"),
        (
            "list_shape = 'tree'",
            "list_shape: must be one of 'nested', 'flat', 'array' (got 'tree')",
        ),
        ("[rate_limit]\nretry_after_form = 'date'", "rate_limit.retry_after_form: must be one of"),
        ("[rate_limit]\nretry_after_form = 'raw'", "rate_limit.retry_after_raw: required"),
        ("[rate_limit]\nrequests = 'many'", "rate_limit.requests: must be an integer, got string"),
        ("[rate_limit]\nrequests = -1", "rate_limit.requests: must be >= 0, got -1"),
        ("[server_errors]\nrate = 1.5", "server_errors.rate: must be between 0 and 1, got 1.5"),
        ("[server_errors]\nstatus = 404", "server_errors.status: must be between 500 and 599"),
        ("[server_errors]\nkinds = ['lists']", "server_errors.kinds: unknown value 'lists'"),
        ("post_status = 302", "post_status: must be between 200 and 299"),
        ("start_delay = true", "start_delay: must be a number, got boolean true"),
        ("outcome = 'GREAT'", "outcome: must be a known status"),
        ("outcome = []", "outcome: must be a status or a non-empty list"),
        ("conflict_on_failed_restart = 'yes'", "conflict_on_failed_restart: must be true or false"),
        ("[random_failures]\nstatus = 'WORKING'", "random_failures.status: a failure cannot lead"),
        ("[[scheduled_failures]]\nstatus = 'FAILED'", "scheduled_failures[0].at: required"),
        (
            "[[scheduled_failures]]\nat = 1\nsession = 'a'\nsessions = ['b']",
            "scheduled_failures[0].session: give 'session' or 'sessions', not both",
        ),
        ("[outage]\nmode = 'refuse'", "outage.duration: required"),
        ("[outage]\nduration = 1\nmode = 'down'", "outage.mode: must be one of '503', 'refuse'"),
        ("[[sessions]]\nstatus = 'FAILED'", "sessions[0].id: required"),
        ("[[sessions]]\nid = 'a/b'", "sessions[0].id: must be a non-empty printable string"),
        (
            "[[sessions]]\nid = 'a'\n[[sessions]]\nid = 'a'",
            "sessions[1].id: duplicate session id 'a'",
        ),
        ("[[sessions]]\nid = 'a'\nstatus = 'ASLEEP'", "sessions[0].status: must be a known status"),
        ("session_count = 2000000", "session_count: must be between 0 and 1000000"),
        ("rate_limit = 5", "rate_limit: must be a table/object, got number 5"),
    ],
)
def test_bad_scenario_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_invalid_toml_is_a_scenario_error(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.toml", "seed = = 3")
    with pytest.raises(ScenarioError, match="invalid TOML"):
        load_scenario(path)


def test_invalid_json_is_a_scenario_error(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", "{")
    with pytest.raises(ScenarioError, match="invalid JSON"):
        load_scenario(path)


def test_json_top_level_must_be_an_object(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="must be a table/object at the top level"):
        load_scenario(write(tmp_path, "list.json", "[1]"))


def test_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read the scenario: No such file"):
        load_scenario(tmp_path / "nope.toml")


def test_outage_mode_may_be_written_as_a_number() -> None:
    faults = parse_scenario({"outage": {"duration": 2, "mode": 503}}).faults
    assert faults.outage == Outage(duration=2.0, mode="503", at=None)


def test_faults_round_trip_through_their_json_form() -> None:
    faults = load_scenario(EXAMPLE).faults
    assert parse_faults(json.loads(json.dumps(faults.to_dict()))) == faults


def test_merge_keeps_the_rest_of_a_section() -> None:
    current = parse_faults({"rate_limit": {"requests": 5, "window": 2}})
    merged = merge_faults(current, {"rate_limit": {"burst": 3}, "list_shape": "array"})
    assert merged.rate_limit == RateLimit(requests=5, window=2.0, burst=3)
    assert merged.list_shape == "array"


def test_merge_replaces_outage_and_schedule_whole() -> None:
    current = parse_faults(
        {"outage": {"at": 5, "duration": 1}, "scheduled_failures": [{"at": 1}, {"at": 2}]}
    )
    merged = merge_faults(
        current, {"outage": {"duration": 3, "mode": "refuse"}, "scheduled_failures": [{"at": 9}]}
    )
    assert merged.outage == Outage(duration=3.0, mode="refuse", at=None)  # None: "now"
    assert [s.at for s in merged.scheduled_failures] == [9.0]


def test_merge_null_section_goes_back_to_defaults() -> None:
    current = parse_faults({"latency": {"seconds": 2}, "outage": {"duration": 1}})
    merged = merge_faults(current, {"latency": None, "outage": None})
    assert merged.latency == Faults().latency
    assert merged.outage is None


def test_merge_rejects_unknown_keys_in_sections() -> None:
    with pytest.raises(
        ScenarioError, match=r"^hang\.secs: unknown key \(did you mean 'seconds'\?\)$"
    ):
        merge_faults(Faults(), {"hang": {"secs": 1}})
