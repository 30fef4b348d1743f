"""The command line's shell: parsing, configuration errors, lean imports for check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import __version__, cli
from supervisor.config.load import load_settings


def test_every_mode_is_known() -> None:
    parser = cli.build_parser()
    for mode in ("run", "check", "config", "simulate", "demo"):
        assert parser.parse_args([mode]).mode == mode


@pytest.mark.usefixtures("no_state_env")
def test_flags_become_highest_priority_overrides(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASEND_API_KEY", "sk-cli-test")
    monkeypatch.setenv("WASEND_SUPERVISOR_POLL_INTERVAL", "30")
    monkeypatch.setenv("WASEND_SUPERVISOR_SESSIONS", "x")
    assert cli.main(["config", "--poll-interval", "7", "--session", "a", "--session", "b"]) == 0
    shown = capsys.readouterr().out
    # Converted as every source's values are, and named as their source.
    assert re.search(r"^poll_interval = 7\.0 +# command line --poll-interval$", shown, re.M), shown
    assert re.search(r'^sessions = \["a", "b"\] +# command line --sessions$', shown, re.M), shown


def test_bad_setting_exits_78_with_one_line(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASEND_API_KEY", "sk-cli-test")
    assert cli.main(["config", "--poll-interval", "0"]) == cli.EX_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("wasend-supervisor: configuration error: poll_interval")


def test_check_path_does_not_import_the_scheduler_or_the_simulator() -> None:
    code = (
        "import sys, supervisor.cli, supervisor.runtime.check, supervisor.runtime.wiring;"
        "bad = [m for m in ('apscheduler', 'starlette', 'uvicorn', 'supervisor.runtime.daemon',"
        " 'supervisor.simulator') if m in sys.modules];"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"wasend-supervisor {__version__}\n"


def test_help_shows_each_settings_flags_default_and_variable_and_the_exit_statuses(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    out = capsys.readouterr().out
    assert ("seconds between poll cycles (default: 30.0; env "
            "WASEND_SUPERVISOR_POLL_INTERVAL)") in out
    assert ("(default: https://api.wasend.dev; env WASEND_SUPERVISOR_BASE_URL or "
            "WASEND_BASE_URL)") in out
    assert "(default: info; env WASEND_SUPERVISOR_LOG_LEVEL)" in out
    for status in ("0  OK:", "1  WARNING:", "2  CRITICAL:", "3  UNKNOWN:"):
        assert status in out
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "78   invalid configuration" in out and "(default: 15.0; env " in out


def test_usage_errors_exit_2_except_for_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--bogus"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == "wasend-supervisor run: error: unrecognized arguments: --bogus"
    assert cli.main([]) == 2


@pytest.mark.parametrize("argv", [
    ["check", "--bogus"], ["check", "--wait", "-1"], ["check", "--wait", "nan"],
    ["check", "--wait", "inf"], ["check", "extra"],
])
def test_check_answers_a_usage_error_as_unknown(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 3
    out, err = capsys.readouterr()
    assert out.startswith("UNKNOWN: usage error: ") and len(out.splitlines()) == 1
    assert err.startswith("usage: wasend-supervisor check ")


def test_check_answers_a_usage_error_in_json_when_asked(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--json", "--wait", "-1"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["exit_status"] == 3 and data["sessions"] == []
    assert data["error"].startswith("usage error: argument --wait: ")


def test_check_answers_a_configuration_error_as_unknown(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASEND_API_KEY", "sk-cli-test")
    monkeypatch.setenv("WASEND_SUPERVISOR_RATE_LIMIT", "lots")
    assert cli.main(["check", "--poll-interval", "-5"]) == 3
    out, err = capsys.readouterr()
    assert out == ("UNKNOWN: configuration error: poll_interval: must be greater than 0 "
                   "(got -5, from command line --poll-interval) (and 1 more)\n")
    assert len(err.splitlines()) == 2
    assert cli.main(["check", "--json", "--poll-interval", "-5"]) == 3
    assert json.loads(capsys.readouterr().out)["error"].startswith(
        "configuration error: poll_interval: ")
    assert cli.main(["run", "--poll-interval", "-5"]) == cli.EX_CONFIG


@pytest.mark.parametrize(("env", "quiet", "tty", "level"), [
    ({}, False, False, "info"),  # a timer's journal keeps every restart
    ({}, False, True, "warning"),  # a person reads the report
    ({}, True, False, "warning"),  # cron mails it
    ({"WASEND_SUPERVISOR_LOG_LEVEL": "info"}, True, True, "info"),  # set: as set
    ({"WASEND_SUPERVISOR_LOG_LEVEL": "debug"}, False, False, "debug"),
])
def test_check_log_level(env: dict[str, str], quiet: bool, tty: bool, level: str) -> None:
    settings = load_settings(env=env, require_api_key=False)
    assert cli.check_log_level(settings, quiet=quiet, tty=tty) == level
    flagged = load_settings(cli={"log_level": "info"}, env={}, require_api_key=False)
    assert cli.check_log_level(flagged, quiet=quiet, tty=tty) == "info"


def test_the_configuration_docs_name_only_flags_that_exist() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    named = set(re.findall(r"command line (--[a-z][a-z-]*)", doc)) - {"--flag"}  # a placeholder
    assert named  # the examples do show flags
    parser = cli.build_parser()
    known = {flag for mode in ("run", "check", "config")
             for flag in re.findall(r"--[a-z][a-z-]*", parser.modes[mode].format_help())}
    assert named <= known, named - known
