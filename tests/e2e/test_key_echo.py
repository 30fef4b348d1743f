"""The key pasted where it does not belong, with no key configured to compare it to: the
command line never echoes it, not even a piece of it."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import API_KEY, cli

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("env", [{}, {"WASEND_API_KEY": "sk-another-key-that-is-configured"}])
def test_config_base_url_given_the_key_does_not_echo_it(env: dict[str, str]) -> None:
    """``config --base-url "$KEY"``, with no key configured (nothing to compare it to)
    or with another one."""
    done = cli("config", "--base-url", API_KEY, env=env)
    assert done.returncode == 78, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("wasend-supervisor: configuration error: ")
    for start in range(len(API_KEY) - 8):
        assert API_KEY[start:start + 8] not in done.stdout + done.stderr


@pytest.mark.parametrize("flag", ["--poll-interval", "--request-timeout", "--rate-limit",
                                  "--log-format", "--log-level"])
@pytest.mark.parametrize("mode", ["config", "check", "run"])
def test_a_settings_flag_given_the_key_does_not_echo_it(mode: str, flag: str) -> None:
    """Every settings flag's value is checked by the settings, whose one-line problem never
    shows a key-like value (argparse's own ``invalid float value: '...'`` would)."""
    done = cli(mode, flag, API_KEY, env={})
    assert done.returncode == (3 if mode == "check" else 78), done.stderr
    assert f"configuration error: {flag.removeprefix('--').replace('-', '_')}" in done.stderr
    for start in range(len(API_KEY) - 8):
        assert API_KEY[start:start + 8] not in done.stdout + done.stderr


def test_wait_given_the_key_does_not_echo_it() -> None:
    done = cli("check", "--wait", API_KEY, env={})
    assert done.returncode == 3, done.stderr
    assert "--wait" in done.stdout
    for start in range(len(API_KEY) - 8):
        assert API_KEY[start:start + 8] not in done.stdout + done.stderr
