"""The status page's two settings: http_auth_file (a path; the page is on with it) and
http_metrics_auth (which needs it); what config shows of them; what a reload keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config.load import load_settings
from supervisor.config.model import Settings
from supervisor.config.problems import ConfigError
from supervisor.config.render import render_settings
from supervisor.runtime.reload import RESTART_ONLY

KEY = "ws_live_abcdefghijklmnopqrstuvwx"


def load(env: dict[str, str], tmp_path: Path) -> Settings:
    return load_settings(env={"WASEND_API_KEY": KEY, "HOME": str(tmp_path), **env},
                         require_api_key=True)


def test_the_page_is_off_by_default(tmp_path: Path) -> None:
    settings = load({}, tmp_path)
    assert settings.http_auth_file is None
    assert settings.http_metrics_auth is False


def test_config_shows_the_auth_files_path_and_never_its_content(tmp_path: Path) -> None:
    path = tmp_path / "web-auth"
    path.write_text("alice:a-token-that-is-a-secret-42\n")
    settings = load({"WASEND_SUPERVISOR_HTTP_AUTH_FILE": str(path)}, tmp_path)
    shown = render_settings(settings)
    assert f'http_auth_file = "{path}"' in shown
    assert "env WASEND_SUPERVISOR_HTTP_AUTH_FILE" in shown
    assert "a-token-that-is-a-secret-42" not in shown
    assert "alice" not in shown


def test_metrics_auth_needs_the_auth_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load({"WASEND_SUPERVISOR_HTTP_METRICS_AUTH": "true"}, tmp_path)
    assert raised.value.problems == [
        "http_metrics_auth: needs http_auth_file set (the tokens it checks) (from environment"
        " variable WASEND_SUPERVISOR_HTTP_METRICS_AUTH)"]


def test_an_empty_auth_file_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load({"WASEND_SUPERVISOR_HTTP_AUTH_FILE": " "}, tmp_path)
    (problem,) = raised.value.problems
    assert problem.startswith("http_auth_file: must not be empty")


def test_the_page_settings_wait_for_a_restart() -> None:
    assert {"http_auth_file", "http_metrics_auth"} <= set(RESTART_ONLY)
