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
