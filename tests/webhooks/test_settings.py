"""The [webhooks] settings: the key a secret wherever it comes from (never in a problem
line, masked by `config`), its file read at start, the endpoint's rules checked once."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config.load import load_settings
from supervisor.config.model import Settings
from supervisor.config.problems import ConfigError
from supervisor.config.render import render_settings

API_KEY = "sk_test_Zq8vN3pL7wR2xK9mT4yB6cD1"
HOOK_KEY = "whk-settings-7c2e9a1f0b3d5846"
ENV = "WASEND_SUPERVISOR_WEBHOOKS__HMAC_KEY"


def load(env: dict[str, str], tmp_path: Path | None = None, toml: str = "") -> Settings:
    config = None
    if toml and tmp_path is not None:
        config = tmp_path / "config.toml"
        config.write_text(toml)
    return load_settings(config_path=config, secrets_dirs=[],
                         env={"WASEND_API_KEY": API_KEY, **env})


def problems(env: dict[str, str], tmp_path: Path | None = None, toml: str = "") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(env, tmp_path, toml)
    return info.value.problems


def test_without_a_key_the_endpoint_is_off() -> None:
    assert not load({}).webhooks.enabled


def test_a_key_from_the_environment_is_masked_and_a_secret() -> None:
    settings = load({ENV: HOOK_KEY, "WASEND_SUPERVISOR_HTTP_LISTEN": "127.0.0.1:9101"})
    assert settings.webhooks.enabled and settings.webhooks.key() is not None
    assert HOOK_KEY in settings.secret_values()
    shown = render_settings(settings)
    assert HOOK_KEY not in shown and 'hmac_key = "**********"' in shown


def test_a_short_key_is_one_line_that_does_not_show_it() -> None:
    (line,) = problems({ENV: "too-short-key", "WASEND_SUPERVISOR_HTTP_LISTEN": "127.0.0.1:1"})
    assert line == ("webhooks.hmac_key: must be at least 16 characters (from environment "
                    f"variable {ENV})")


def test_a_key_file_is_read_at_start_and_wins(tmp_path: Path) -> None:
    key_file = tmp_path / "hook-key"
    key_file.write_text(f"  {HOOK_KEY}\n")
    settings = load({"WASEND_SUPERVISOR_WEBHOOKS__HMAC_KEY_FILE": str(key_file),
                     ENV: "another-key-of-16-chars", "WASEND_SUPERVISOR_HTTP_LISTEN": "9101"})
    key = settings.webhooks.key()
    assert key is not None and key.get_secret_value() == HOOK_KEY


@pytest.mark.parametrize(("content", "why"), [
    (None, "cannot read"), ("short\n", "holds no key of at least 16 printable characters")])
def test_a_key_file_that_cannot_be_used_is_one_line_naming_it(
        tmp_path: Path, content: str | None, why: str) -> None:
    key_file = tmp_path / "hook-key"
    if content is not None:
        key_file.write_text(content)
    (line,) = problems({"WASEND_SUPERVISOR_WEBHOOKS__HMAC_KEY_FILE": str(key_file),
                        "WASEND_SUPERVISOR_HTTP_LISTEN": "127.0.0.1:9101"})
    assert line.startswith("webhooks.hmac_key_file: ") and why in line
    assert "short" not in line.replace("holds no key", "")


@pytest.mark.parametrize(("env", "fragment"), [
    ({"WASEND_SUPERVISOR_WEBHOOKS__PATH": "webhooks"}, "must be a path starting with /"),
    ({"WASEND_SUPERVISOR_WEBHOOKS__PATH": "/livez"}, "must not be one of the probes' paths"),
    ({"WASEND_SUPERVISOR_WEBHOOKS__ALLOW_FROM": "10.0.0.0/8, nonsense"}, "is not a network"),
    ({"WASEND_SUPERVISOR_WEBHOOKS__CONCURRENCY": "0"}, "must be at least 1"),
])
def test_bad_values_are_one_line_naming_the_key(env: dict[str, str], fragment: str) -> None:
    (line,) = problems({ENV: HOOK_KEY, "WASEND_SUPERVISOR_HTTP_LISTEN": "127.0.0.1:1", **env})
    assert line.startswith("webhooks.") and fragment in line
