"""The alerts put together: a daemon or a check with Apprise URLs but without Apprise says
so in one line before any poll, rather than failing at the first alert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-wiring-test-key-0001"
# Runs the command line with Apprise hidden, as on an install without the alerts extra.
WITHOUT_APPRISE = (
    "import sys; sys.modules['apprise'] = None; "
    "from supervisor.cli import main; sys.exit(main(sys.argv[1:]))"
)


def run_without_apprise(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
        "WASEND_API_KEY": KEY, "WASEND_BASE_URL": "http://127.0.0.1:9",
        "WASEND_SUPERVISOR_STATE_PATH": str(tmp_path / "state.db"),
        "WASEND_SUPERVISOR_ALERTS__URLS": "json://127.0.0.1:9/hook-Tok3nTok3nTok3nTok3n",
    }
    return subprocess.run([sys.executable, "-c", WITHOUT_APPRISE, *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)


def test_run_with_apprise_urls_but_no_apprise_says_which_extra_before_any_poll(
    tmp_path: Path,
) -> None:
    done = run_without_apprise(tmp_path, "run")
    assert done.returncode == 69, done.stderr
    lines = [line for line in done.stderr.splitlines() if "alerts" in line]
    assert lines == ["wasend-supervisor: alerts needs the 'alerts' extra (pip install "
                     "'wasend-supervisor[alerts]'): alerts.urls needs Apprise, which is not "
                     "installed"]
    assert "Traceback" not in done.stderr and "Tok3n" not in done.stderr + done.stdout
    assert '"poll.' not in done.stdout  # nothing was polled


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_check_with_apprise_urls_but_no_apprise_is_unknown_naming_the_extra(
    tmp_path: Path, as_json: bool,
) -> None:
    done = run_without_apprise(tmp_path, "check", *(["--json"] if as_json else []))
    assert done.returncode == 3, done.stderr
    if as_json:
        assert "alerts' extra" in json.loads(done.stdout)["error"]
    else:
        assert done.stdout.startswith("UNKNOWN") and "'alerts' extra" in done.stdout
    assert "Traceback" not in done.stderr and "Tok3n" not in done.stderr + done.stdout


def test_check_with_no_alerts_needs_no_apprise(tmp_path: Path) -> None:
    done = run_without_apprise(tmp_path, "check", "--no-alerts")
    assert "extra" not in done.stdout + done.stderr  # the API is unreachable: UNKNOWN for that
    assert done.returncode == 3
