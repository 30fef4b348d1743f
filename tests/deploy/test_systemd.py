"""The systemd units: verified by systemd-analyze, scored for exposure, and the facts the
daemon's contract needs (notify, watchdog, credential, exit 78, state directory)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from supervisor.config.load import load_settings
from supervisor.config.model import Settings
from supervisor.config.problems import ConfigError
from tests.deploy.conftest import SYSTEMD, directives, needs_settings, tool

DAEMON = SYSTEMD / "wasend-supervisor.service"
CHECK = SYSTEMD / "wasend-supervisor-check.service"
TIMER = SYSTEMD / "wasend-supervisor-check.timer"
UNITS = (DAEMON, CHECK, TIMER)
INSTALLED = "/opt/wasend-supervisor/bin/wasend-supervisor"
CONFIG = "/etc/wasend-supervisor/config.toml"
MAX_EXPOSURE = 2.0
HOW = "Debian: apt-get install systemd"


def values(path: Path, key: str) -> list[str]:
    return [value for _, k, value in directives(path) if k == key]


def one(path: Path, key: str) -> str:
    found = values(path, key)
    assert len(found) == 1, f"{path.name}: {key}= set {len(found)} times"
    return found[0]


def seconds(value: str) -> float:
    """A systemd time span of the forms used here: 30s, 3min, 90."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match[1]) * (60 if match[2] in ("min", "m") else 1)


def verify(units: list[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on copies of ``units`` in which the installed console
    script's path is replaced by an executable stub in tmp_path.

    verify checks that each ExecStart= binary exists, and /opt/wasend-supervisor is not
    installed where tests run. Only that one path is changed (its arguments and every other
    line are verified as shipped); --root= was not used because it also moves the lookup of
    systemd's own units (sysinit.target...) and of /bin/kill into the fake root.
    """
    analyze = tool("systemd-analyze", HOW)
    stub = tmp_path / "bin" / "wasend-supervisor"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copies = []
    for unit in units:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED, str(stub)))
        copies.append(str(copy))
    return subprocess.run([analyze, "verify", *copies], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)


def test_every_unit_verifies_with_nothing_on_stderr(tmp_path: Path) -> None:
    done = verify(list(UNITS), tmp_path)
    # verify exits 0 on unknown keys and typos: anything on stderr is a failure.
    assert done.stderr == "", done.stderr
    assert done.returncode == 0


def test_verify_as_run_here_catches_a_typo(tmp_path: Path) -> None:
    typo = tmp_path / "src" / "wasend-supervisor.service"
    typo.parent.mkdir()
    typo.write_text(DAEMON.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    done = verify([typo], tmp_path)
    assert "Unknown key 'ProtectSytem'" in done.stderr


@pytest.mark.parametrize("unit", [DAEMON, CHECK], ids=lambda unit: unit.name)
def test_service_exposure_is_2_0_or_lower(unit: Path) -> None:
    analyze = tool("systemd-analyze", HOW)
    done = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)",
                      done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match[1]) <= MAX_EXPOSURE, done.stdout


def test_daemon_speaks_notify_with_a_watchdog_and_reloads_with_sighup() -> None:
    assert one(DAEMON, "Type") == "notify"
    assert one(DAEMON, "NotifyAccess") == "main"
    assert seconds(one(DAEMON, "WatchdogSec")) >= 10
    assert one(DAEMON, "ExecStart") == f"{INSTALLED} run --config {CONFIG}"
    assert one(DAEMON, "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_daemon_restarts_on_failure_but_not_on_bad_configuration() -> None:
    assert one(DAEMON, "Restart") == "on-failure"
    assert one(DAEMON, "RestartPreventExitStatus").split() == ["78"]
    assert int(one(DAEMON, "StartLimitBurst")) >= 1
    assert one(DAEMON, "StartLimitIntervalSec")


def test_daemon_stop_timeout_exceeds_the_default_shutdown_grace() -> None:
    grace = Settings.model_fields["shutdown_grace"].default
    assert seconds(one(DAEMON, "TimeoutStopSec")) > grace + 5


@pytest.mark.parametrize("unit", [DAEMON, CHECK], ids=lambda unit: unit.name)
def test_service_gets_key_config_and_state_from_systemd(unit: Path) -> None:
    assert one(unit, "LoadCredential") == "wasend_api_key:/etc/wasend-supervisor/api_key"
    assert one(unit, "ConfigurationDirectory") == "wasend-supervisor"
    assert one(unit, "StateDirectory") == "wasend-supervisor"
    assert one(unit, "DynamicUser") == "yes"
    assert one(unit, "CapabilityBoundingSet") == ""
    assert one(unit, "MemoryDenyWriteExecute") == "yes"
    assert values(unit, "SystemCallFilter") == ["@system-service", "~@privileged @resources"]


def test_check_service_is_as_hardened_as_the_daemon_and_shares_its_user() -> None:
    def hardening(unit: Path) -> list[str]:
        text = unit.read_text()
        block = text.split("# --- Hardening", 1)[1].split("\n[", 1)[0]
        return [line for line in block.splitlines() if line and not line.startswith("#")]

    assert hardening(CHECK) == hardening(DAEMON)
    assert one(CHECK, "User") == one(DAEMON, "User")


def test_check_service_is_a_oneshot_where_exit_1_is_success() -> None:
    assert one(CHECK, "Type") == "oneshot"
    command = one(CHECK, "ExecStart").split()
    assert command[:2] == [INSTALLED, "check"]
    assert command[command.index("--config") + 1] == CONFIG
    # 1 = something was restarted or is recovering: the check did its job. 2, 3 and 78 fail.
    assert one(CHECK, "SuccessExitStatus").split() == ["1"]
    assert "Restart" not in [key for _, key, _ in directives(CHECK)]


def test_timer_runs_the_check_every_few_minutes_and_catches_up() -> None:
    assert TIMER.with_suffix(".service") == CHECK  # the unit a timer starts by default
    assert one(TIMER, "OnCalendar") == "*:0/5"
    assert one(TIMER, "Persistent") == "true"
    assert seconds(one(TIMER, "RandomizedDelaySec")) > 0
    assert ("Install", "WantedBy", "timers.target") in directives(TIMER)


def test_systemd_config_turns_the_http_listener_off() -> None:
    config = tomllib.loads((SYSTEMD.parent / "config" / "systemd.toml").read_text())
    assert config == {"http_listen": ""}


def test_systemd_config_is_valid_for_the_daemon() -> None:
    needs_settings("http_listen")
    path = SYSTEMD.parent / "config" / "systemd.toml"
    try:
        settings = load_settings(config_path=path, env={}, require_api_key=False,
                                 secrets_dirs=[])
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail("\n".join(exc.problems))
    assert settings.model_dump()["http_listen"] == ""
