"""The command line's shell: parsing, configuration errors, lean imports for check."""

from __future__ import annotations

import subprocess
import sys

import pytest

from supervisor import cli


def test_every_mode_is_known() -> None:
    parser = cli.build_parser()
    for mode in ("run", "check", "config", "simulate", "demo"):
        assert parser.parse_args([mode]).mode == mode


def test_flags_become_highest_priority_overrides() -> None:
    args = cli.build_parser().parse_args(
        ["check", "--poll-interval", "7", "--session", "a", "--session", "b"])
    assert cli._overrides(args) == {"poll_interval": 7.0, "sessions": ["a", "b"]}


def test_bad_setting_exits_78_with_one_line(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASEND_API_KEY", "sk-cli-test")
    assert cli.main(["config", "--poll-interval", "0"]) == cli.EX_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("wasend-supervisor: configuration error: poll_interval")


def test_check_path_does_not_import_the_scheduler_or_the_simulator() -> None:
    code = (
        "import sys, supervisor.cli, supervisor.check, supervisor.wiring;"
        "bad = [m for m in ('apscheduler', 'starlette', 'uvicorn', 'supervisor.daemon',"
        " 'supervisor.simulator') if m in sys.modules];"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == ""
