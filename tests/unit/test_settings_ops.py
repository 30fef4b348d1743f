"""The operations settings: http_listen, unready_after, metrics_per_session."""

from __future__ import annotations

import pytest

from supervisor.config.load import load_settings
from supervisor.config.model import Settings, listen_address
from supervisor.config.problems import ConfigError


def env_load(**env: str) -> Settings:
    return load_settings(env=env, require_api_key=False, secrets_dirs=[])


@pytest.mark.parametrize(
    ("given", "stored", "address"),
    [
        ("", "", None),
        ("9187", "127.0.0.1:9187", ("127.0.0.1", 9187)),
        ("0.0.0.0:9187", "0.0.0.0:9187", ("0.0.0.0", 9187)),
        ("[::1]:9187", "[::1]:9187", ("::1", 9187)),
        ("[::]:0", "[::]:0", ("::", 0)),
        ("localhost:8080", "localhost:8080", ("localhost", 8080)),
        (" 127.0.0.1:1 ", "127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_http_listen_forms(given: str, stored: str, address: tuple[str, int] | None) -> None:
    settings = env_load(WASEND_SUPERVISOR_HTTP_LISTEN=given)
    assert settings.http_listen == stored
    assert listen_address(settings.http_listen) == address


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("::1:9187", "an IPv6 address must be in brackets"),
        ("127.0.0.1:65536", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:http", "the port must be a number from 0 to 65535"),
        ("[nope]:1", "is not an IPv6 address"),
        (":9187", "must be host:port, [IPv6]:port or a port alone"),
        ("somehost", "must be host:port, [IPv6]:port or a port alone"),
        ("bad host:1", "is not a host name or address"),
    ],
)
def test_bad_http_listen_is_one_line(given: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        env_load(WASEND_SUPERVISOR_HTTP_LISTEN=given)
    [problem] = caught.value.problems
    assert problem.startswith("http_listen: ") and reason in problem
    assert "WASEND_SUPERVISOR_HTTP_LISTEN" in problem


def test_http_listen_as_a_bare_number_in_toml(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("http_listen = 9187\n")
    settings = load_settings(config_path=path, env={}, require_api_key=False, secrets_dirs=[])
    assert settings.http_listen == "127.0.0.1:9187"


def test_http_listen_is_off_by_default() -> None:
    assert Settings().http_listen == ""


def test_unready_after_defaults_to_three_poll_intervals() -> None:
    assert Settings(poll_interval=20).unready_threshold == 60
    assert Settings(poll_interval=20, unready_after=45).unready_threshold == 45
    with pytest.raises(ConfigError) as caught:
        env_load(WASEND_SUPERVISOR_UNREADY_AFTER="-1")
    assert caught.value.problems[0].startswith("unready_after: must be at least 0")


def test_metrics_per_session_is_a_boolean() -> None:
    assert env_load().metrics_per_session is False
    assert env_load(WASEND_SUPERVISOR_METRICS_PER_SESSION="true").metrics_per_session is True
    with pytest.raises(ConfigError) as caught:
        env_load(WASEND_SUPERVISOR_METRICS_PER_SESSION="maybe")
    assert caught.value.problems == [
        "metrics_per_session: must be true or false "
        "(got maybe, from environment variable WASEND_SUPERVISOR_METRICS_PER_SESSION)"
    ]
