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


# ------------------------------------------------------------- state_url (PostgreSQL)

DSN = "postgresql://bob:dsn-PASSWORD-4f1e@db.example:5433/wasend?sslmode=require"


def test_state_url_from_the_environment_keeps_the_state_in_postgresql() -> None:
    settings = load({"HOME": "/home/u", "WASEND_SUPERVISOR_STATE_URL": DSN})
    dsn = settings.state_dsn()
    assert dsn is not None and dsn.get_secret_value() == DSN
    assert settings.state_path is None  # no default file beside it
    assert {DSN, "dsn-PASSWORD-4f1e"} <= set(settings.secret_values())
    assert "dsn-PASSWORD-4f1e" not in repr(settings)
    assert load({"HOME": "/home/u"}).state_dsn() is None


def test_state_url_from_a_file_or_toml(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text(f"  {DSN}\n")
    settings = load({"HOME": "/home/u", "WASEND_SUPERVISOR_STATE_URL_FILE": str(secret)})
    dsn = settings.state_dsn()
    assert dsn is not None and dsn.get_secret_value() == DSN
    assert DSN in settings.secret_values()
    config = tmp_path / "config.toml"
    config.write_text('state_url = "postgres://"\n')
    from_toml = load({"HOME": "/home/u"}, config_path=config).state_dsn()
    assert from_toml is not None and from_toml.get_secret_value() == "postgres://"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"WASEND_SUPERVISOR_STATE_URL": DSN, "WASEND_SUPERVISOR_STATE_PATH": "/tmp/s.db"},
         "state_url: cannot be given with state_path"),
        ({"WASEND_SUPERVISOR_STATE_URL": DSN, "WASEND_SUPERVISOR_STATE_URL_FILE": "/x"},
         "state_url: cannot be given with state_url_file"),
        ({"WASEND_SUPERVISOR_STATE_URL": "mysql://bob:dsn-PASSWORD-4f1e@h/db"},
         "state_url: must be a PostgreSQL URL"),
        ({"WASEND_SUPERVISOR_STATE_URL": "postgresql://bob:dsn-PASSWORD-4f1e@h:port/db"},
         "state_url: has a port that is not a number"),
        ({"WASEND_SUPERVISOR_STATE_URL_FILE": "/nonexistent/dsn"},
         "state_url_file: cannot read /nonexistent/dsn"),
    ],
)
def test_bad_state_url_settings_are_one_line_without_the_dsn(
    env: dict[str, str], problem: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"HOME": "/home/u", **env})
    [line] = caught.value.problems
    assert line.startswith(problem), line
    assert "dsn-PASSWORD-4f1e" not in line and "bob" not in line


def test_a_state_url_file_without_a_postgresql_url_names_the_file_only(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("mysql://bob:dsn-PASSWORD-4f1e@h/db\n")
    with pytest.raises(ConfigError) as caught:
        load({"HOME": "/home/u", "WASEND_SUPERVISOR_STATE_URL_FILE": str(secret)})
    [line] = caught.value.problems
    assert line.startswith(f"state_url_file: {secret} holds no usable URL")
    assert "dsn-PASSWORD-4f1e" not in line and "bob" not in line


def test_config_shows_the_state_url_as_its_host_and_database_only() -> None:
    from supervisor.config.render import render_settings

    shown = render_settings(load({"HOME": "/home/u", "WASEND_SUPERVISOR_STATE_URL": DSN}))
    [line] = [x for x in shown.splitlines() if x.startswith("state_url ")]
    assert line.startswith('state_url = "postgresql://db.example:5433/wasend"')
    assert "dsn-PASSWORD-4f1e" not in shown and "bob" not in shown and "sslmode" not in shown


def test_config_says_whether_leadership_is_on_when_it_follows_the_state() -> None:
    from supervisor.config.render import render_settings

    def enabled_line(env: dict[str, str]) -> str:
        shown = render_settings(load({"HOME": "/home/u", **env}))
        [line] = [x for x in shown.splitlines() if x.startswith("# enabled = ")]
        return line

    assert enabled_line({"WASEND_SUPERVISOR_STATE_URL": DSN}).endswith(
        "# default; on: the state is in PostgreSQL")
    assert enabled_line({}).endswith("# default; off: the state is in SQLite")
    shown = render_settings(load({"HOME": "/home/u", "WASEND_SUPERVISOR_STATE_URL": DSN,
                                  "WASEND_SUPERVISOR_HA__ENABLED": "false"}))
    assert "enabled = false" in shown
