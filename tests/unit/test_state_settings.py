"""The state settings: where the file is by default, and what each source may say."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from supervisor.config.load import load_settings
from supervisor.config.model import Settings
from supervisor.config.problems import ConfigError
from supervisor.config.sources import default_state_path

KEY = "sk-state-settings-key"


def load(env: dict[str, str], **kw: object) -> Settings:
    return load_settings(env={"WASEND_API_KEY": KEY, **env}, secrets_dirs=[], **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "expected", "why"),
    [
        ({"STATE_DIRECTORY": "/var/lib/wasend-supervisor", "XDG_STATE_HOME": "/x",
          "HOME": "/home/u"}, "/var/lib/wasend-supervisor/state.db", "$STATE_DIRECTORY"),
        ({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, "/var/lib/a/state.db",
         "$STATE_DIRECTORY"),
        ({"XDG_STATE_HOME": "/home/u/.state", "HOME": "/home/u"},
         "/home/u/.state/wasend-supervisor/state.db", "$XDG_STATE_HOME"),
        ({"XDG_STATE_HOME": "relative/state", "HOME": "/home/u"},
         "/home/u/.local/state/wasend-supervisor/state.db", "~/.local/state"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/wasend-supervisor/state.db",
         "~/.local/state"),
    ],
)
def test_the_default_location_follows_systemd_then_xdg_then_home(
    env: dict[str, str], expected: str, why: str,
) -> None:
    assert default_state_path(env) == (Path(expected), why)
    settings = load(env)
    assert settings.state_location() == expected
    assert settings.source_of("state_path") == "default"


def test_a_given_state_path_wins_and_memory_is_kept_as_is(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": "/var/lib/x"}
    assert load({**env, "WASEND_SUPERVISOR_STATE_PATH": ":memory:"}).state_location() == (
        ":memory:")
    assert load({**env, "HOME": "/home/u", "WASEND_SUPERVISOR_STATE_PATH": "~/s.db"},
                ).state_location() in ("/home/u/s.db", str(Path("~/s.db").expanduser()))
    config = tmp_path / "config.toml"
    config.write_text('state_path = "state/here.db"\nhistory_max_rows = 10\n')
    loaded = load(env, config_path=config)
    assert loaded.state_location() == str(tmp_path / "state" / "here.db")
    assert loaded.history_max_rows == 10
    cli = load(env, cli={"state_path": "/tmp/cli.db"}, config_path=config)
    assert cli.state_location() == "/tmp/cli.db"
    assert cli.source_of("state_path", long=True) == "from command line --state-path"


def test_settings_built_in_code_keep_the_state_in_memory() -> None:
    assert Settings(api_key=SecretStr(KEY)).state_location() == ":memory:"


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("WASEND_SUPERVISOR_STATE_PATH", " ", "state_path: must not be empty"),
        ("WASEND_SUPERVISOR_HISTORY_MAX_AGE", "0", "history_max_age: must be greater than 0"),
        ("WASEND_SUPERVISOR_HISTORY_MAX_ROWS", "0", "history_max_rows: must be at least 1"),
        ("WASEND_SUPERVISOR_HISTORY_MAX_ROWS", "lots", "history_max_rows: must be a whole"),
    ],
)
def test_bad_state_settings_are_one_line_each(name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({name: value})
    [line] = caught.value.problems
    assert line.startswith(problem) and line.endswith(f"environment variable {name})")
