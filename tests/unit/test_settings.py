"""Tests of supervisor.config: sources, precedence, validation messages, the API key."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from supervisor.config.key import ApiKeySource
from supervisor.config.load import load_settings
from supervisor.config.model import BackoffSettings, Settings, StatusSettings, setting_keys
from supervisor.config.problems import ConfigError
from supervisor.config.render import render_settings
from supervisor.config.sources import CONFIG_FILE_MAX_BYTES, env_var_names
from supervisor.domain.models import StatusClass
from supervisor.domain.policy import DEFAULT_HEALTHY, Backoff, Policy, StatusClasses, overlaps
from supervisor.state.store import DEFAULT_HISTORY_MAX_AGE, DEFAULT_HISTORY_MAX_ROWS, MEMORY

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk_test_Zq8vN3pL7wR2xK9mT4yB6cD1"
OTHER_KEY = "sk_test_Other0000000000000000000"
POLL = "WASEND_SUPERVISOR_POLL_INTERVAL"


def load(
    *,
    env: dict[str, str] | None = None,
    cli: dict[str, Any] | None = None,
    config: Path | None = None,
    secrets_dirs: list[Path] | None = None,
    require_api_key: bool = True,
) -> Settings:
    """load_settings with a key in the environment unless told otherwise, and no secret dirs."""
    return load_settings(
        cli=cli,
        config_path=config,
        env={"WASEND_API_KEY": KEY} if env is None else env,
        secrets_dirs=[] if secrets_dirs is None else secrets_dirs,
        require_api_key=require_api_key,
    )


def problems(**kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(**kwargs)
    return info.value.problems


def toml(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_no_key(text: str) -> None:
    assert KEY not in text
    assert KEY[8:20] not in text  # not even a piece of it


# --- defaults and construction -------------------------------------------------------------


def test_defaults_match_the_contract() -> None:
    s = load()
    assert s.api_key_file is None
    assert s.base_url == "https://api.wasend.dev"
    assert s.sessions == ()
    assert s.poll_interval == 30.0
    assert s.request_timeout == 15.0
    assert (s.backoff.initial, s.backoff.max, s.backoff.multiplier) == (5.0, 300.0, 2.0)
    assert s.max_restarts == 5
    assert s.restart_window == 3600.0
    assert s.stable_after == 300.0
    assert s.starting_timeout == 120.0
    assert s.gave_up_retry_interval == 3600.0
    assert s.auth_retry_interval == 300.0
    assert s.max_retry_after == 300.0
    assert s.rate_limit == 5.0
    assert s.get_concurrency == 8
    assert s.shutdown_grace == 10.0
    assert s.poll_jitter == 0.1
    assert s.statuses.healthy == ("WORKING", "CONNECTED")
    assert s.statuses.transitional == ("STARTING", "CREATED")
    assert s.statuses.restartable == ("STOPPED", "ERROR", "FAILED")
    assert s.statuses.needs_person == ("SCAN_QR_CODE",)
    assert s.log_format == "auto"
    assert s.log_level == "info"
    assert all(s.source_of(key) == "default" for key in setting_keys() if key != "api_key")


def test_settings_are_frozen() -> None:
    s = load()
    with pytest.raises(ValidationError):
        s.poll_interval = 1.0


def test_import_reads_nothing() -> None:
    env = {
        **os.environ,
        POLL: "-1",
        "WASEND_SUPERVISOR_CONFIG": "/nonexistent/config.toml",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", "import supervisor.config.load, supervisor.config.render"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_direct_construction_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLL, "1")
    monkeypatch.setenv("WASEND_API_KEY", KEY)
    s = Settings()
    assert s.poll_interval == 30.0
    assert s.api_key is None
    assert Settings(poll_interval=2).poll_interval == 2.0


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLL, "7")
    monkeypatch.setenv("WASEND_API_KEY", KEY)
    s = load_settings(secrets_dirs=[])
    assert s.poll_interval == 7.0
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == KEY


def test_given_env_mapping_hides_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLL, "7")
    assert load(env={"WASEND_API_KEY": KEY}).poll_interval == 30.0


# --- precedence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("with_cli", "with_env", "with_toml", "expected", "source"),
    [
        (True, True, True, 4.0, "command line --poll-interval"),
        (False, True, True, 3.0, f"env {POLL}"),
        (False, False, True, 2.0, "TOML"),
        (False, False, False, 30.0, "default"),
    ],
)
def test_precedence_cli_env_toml_default(
    tmp_path: Path,
    with_cli: bool,
    with_env: bool,
    with_toml: bool,
    expected: float,
    source: str,
) -> None:
    config = toml(tmp_path, "poll_interval = 2.0\n") if with_toml else None
    env = {"WASEND_API_KEY": KEY, **({POLL: "3"} if with_env else {})}
    cli = {"poll_interval": 4.0} if with_cli else None
    s = load(env=env, cli=cli, config=config)
    assert s.poll_interval == expected
    assert s.source_of("poll_interval") == (str(config) if source == "TOML" else source)


def test_nested_values_merge_per_key(tmp_path: Path) -> None:
    config = toml(tmp_path, "[backoff]\ninitial = 1.0\nmax = 50.0\n")
    s = load(
        env={"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_BACKOFF__INITIAL": "2"},
        cli={"backoff.multiplier": 3.0},
        config=config,
    )
    assert (s.backoff.initial, s.backoff.max, s.backoff.multiplier) == (2.0, 50.0, 3.0)
    assert s.source_of("backoff.initial") == "env WASEND_SUPERVISOR_BACKOFF__INITIAL"
    assert s.source_of("backoff.max") == str(config)
    assert s.source_of("backoff.multiplier") == "command line --backoff-multiplier"


def test_key_precedence_cli_file_env_secret_toml(tmp_path: Path) -> None:
    def key_file(name: str, value: str) -> Path:
        path = tmp_path / name
        path.write_text(value + "\n")
        return path

    cli_file = key_file("cli-key", "from-cli-file")
    toml_file = key_file("toml-key", "from-toml-file")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "wasend_api_key").write_text("from-secret-file\n")
    config = toml(tmp_path, f'api_key_file = "{toml_file}"\n')

    def key(**kwargs: Any) -> str:
        s = load(config=config, secrets_dirs=[secrets], **kwargs)
        assert s.api_key is not None
        return s.api_key.get_secret_value()

    env = {"WASEND_API_KEY": "from-env"}
    assert key(env=env, cli={"api_key_file": str(cli_file)}) == "from-cli-file"
    assert key(env=env) == "from-env"
    assert key(env={}) == "from-secret-file"
    (secrets / "wasend_api_key").unlink()
    assert key(env={}) == "from-toml-file"


def test_secret_file_beats_toml_for_the_key_only(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "wasend_api_key").write_text(KEY)
    (secrets / "wasend_supervisor_poll_interval").write_text("1")  # not a source of settings
    s = load(env={}, secrets_dirs=[secrets])
    assert s.poll_interval == 30.0
    assert s.api_key == SecretStr(KEY)


def test_supervisor_base_url_beats_shared_one() -> None:
    env = {
        "WASEND_API_KEY": KEY,
        "WASEND_BASE_URL": "https://shared.example",
        "WASEND_SUPERVISOR_BASE_URL": "https://mine.example",
    }
    s = load(env=env)
    assert s.base_url == "https://mine.example"
    assert s.source_of("base_url") == "env WASEND_SUPERVISOR_BASE_URL"
    del env["WASEND_SUPERVISOR_BASE_URL"]
    assert load(env=env).base_url == "https://shared.example"


def test_cli_keys_dotted_or_flat_none_skipped() -> None:
    s = load(cli={"backoff.max": 60.0, "rate_limit": 2.0, "poll_interval": None})
    assert s.backoff.max == 60.0
    assert s.rate_limit == 2.0
    assert s.poll_interval == 30.0


def test_unknown_cli_key_is_a_problem() -> None:
    assert problems(cli={"poll": 1.0}) == ["poll: unknown key (from command line --poll)"]


def test_api_key_is_never_a_cli_value() -> None:
    found = problems(cli={"api_key": KEY})
    assert len(found) == 1
    assert found[0].startswith("api_key: cannot be given on the command line;")
    assert_no_key(found[0])


# --- the config file -----------------------------------------------------------------------


def test_config_file_values_are_read(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        'sessions = ["a", "b"]\nlog_level = "DEBUG"\n[statuses]\nhealthy = ["working"]\n',
    )
    s = load(config=config)
    assert s.sessions == ("a", "b")
    assert s.log_level == "debug"
    assert s.statuses.healthy == ("WORKING",)
    assert s.config_file == config


def test_config_path_from_environment(tmp_path: Path) -> None:
    config = toml(tmp_path, "poll_interval = 9\n")
    s = load(env={"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_CONFIG": str(config)})
    assert s.poll_interval == 9.0
    assert s.config_file == config


def test_explicit_config_path_beats_environment(tmp_path: Path) -> None:
    chosen = toml(tmp_path, "poll_interval = 9\n", "chosen.toml")
    other = toml(tmp_path, "poll_interval = 8\n", "other.toml")
    env = {"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_CONFIG": str(other)}
    assert load(env=env, config=chosen).poll_interval == 9.0


def test_no_config_given_means_no_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    toml(tmp_path, "poll_interval = -1\n")  # a config.toml lying around is not picked up
    s = load()
    assert s.poll_interval == 30.0
    assert s.config_file is None


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    assert problems(config=path) == [f"config file {path}: not found"]


def test_missing_config_file_from_environment_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    env = {"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_CONFIG": str(path)}
    assert problems(env=env) == [
        f"config file {path}: not found (from environment variable WASEND_SUPERVISOR_CONFIG)"
    ]


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = toml(tmp_path, "poll_interval = 1\n[backoff]\ninitial = = 2\n")
    found = problems(config=path)
    assert len(found) == 1
    assert re.fullmatch(
        rf"config file {re.escape(str(path))}: invalid TOML at line 3, column \d+: \S.*",
        found[0],
    ), found[0]


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    assert problems(config=tmp_path) == [
        f"config file {tmp_path}: cannot read: not a regular file (a directory)"]


def test_config_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO given as the config file would block a SIGHUP reload on the event loop."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    assert problems(config=fifo) == [
        f"config file {fifo}: cannot read: not a regular file (a FIFO)"]


def test_a_huge_config_file_is_refused_not_read_on(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    path.write_bytes(b"#" * (CONFIG_FILE_MAX_BYTES + 1))
    assert problems(config=path) == [
        f"config file {path}: cannot read: over {CONFIG_FILE_MAX_BYTES} bytes, "
        "so not a configuration file"]


def test_broken_config_file_does_not_also_report_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    assert problems(env={}, config=path) == [f"config file {path}: not found"]


def test_unknown_toml_keys_are_problems(tmp_path: Path) -> None:
    path = toml(tmp_path, "poll_intervall = 3\nfoo = 1\n[backoff]\nstart = 1\n")
    assert problems(config=path) == [
        f"poll_intervall: unknown key, did you mean poll_interval? (from {path})",
        f"foo: unknown key (from {path})",
        f"backoff.start: unknown key (from {path})",
    ]


def test_table_given_as_a_value(tmp_path: Path) -> None:
    path = toml(tmp_path, "backoff = 5\n")
    assert problems(config=path) == [
        f"backoff: must be a table of initial, max, multiplier (from {path})"
    ]


def test_api_key_is_refused_in_a_config_file(tmp_path: Path) -> None:
    path = toml(tmp_path, f'api_key = "{KEY}"\n')
    found = problems(config=path)
    assert len(found) == 1
    assert found[0].startswith("api_key: cannot be given in a config file;")
    assert found[0].endswith(f"(from {path})")
    assert_no_key(found[0])


def test_relative_api_key_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    s = load(env={}, config=toml(tmp_path, 'api_key_file = "key"\n'))
    assert s.api_key_file == tmp_path / "key"
    assert s.api_key == SecretStr(KEY)


UNSET_IN_EXAMPLE = ("state_path", "alerts.urls_file", "alerts.alertmanager_url", "http_auth_file",
                    "webhooks.hmac_key", "webhooks.hmac_key_file", "state_url",
                    "state_url_file", "ha.enabled")


def _uncommented_example() -> str:
    """The example config with every commented default line (``#key = value``) enabled."""
    text = (ROOT / "config" / "wasend-supervisor.example.toml").read_text()
    lines = []
    for line in text.splitlines():
        # api_key_file, urls_file and http_auth_file name files that must exist;
        # state_path's default depends on the environment (STATE_DIRECTORY, XDG_STATE_HOME,
        # HOME); the Alertmanager's example is an example, not the default (none), as are
        # the webhooks' key and its file, and state_url (and its file: the state would
        # leave the SQLite file), and ha.enabled (which needs state_url).
        enable = re.match(r"#[a-z_]+ = ", line) and not line.startswith(
            ("#api_key_file", "#state_path", "#urls_file", "#alertmanager_url",
             "#http_auth_file", "#hmac_key", "#state_url", "#enabled"))
        lines.append(line[1:] if enable else line)
    return "\n".join(lines) + "\n"


def test_example_config_validates_as_shipped() -> None:
    s = load(config=ROOT / "config" / "wasend-supervisor.example.toml")
    assert s.poll_interval == 30.0


def test_example_config_lists_every_key_with_its_default(tmp_path: Path) -> None:
    example = (ROOT / "config" / "wasend-supervisor.example.toml").read_text()
    for key in setting_keys():
        if key == "api_key":
            continue
        assert re.search(rf"^#{re.escape(key.rpartition('.')[2])} = ", example, re.M), key
    path = toml(tmp_path, _uncommented_example())
    enabled = tomllib.loads(path.read_text())
    assert "poll_interval" in enabled
    assert set(enabled["backoff"]) == {"initial", "max", "multiplier"}
    s = load(config=path)
    defaults = load()
    assert s.model_dump() == defaults.model_dump()
    assert all(s.source_of(k) == str(path) for k in setting_keys()
               if "api_key" not in k and k not in UNSET_IN_EXAMPLE)


def test_configuration_reference_documents_every_key() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for key in setting_keys():
        assert f"`{key}`" in doc, key
        for name in env_var_names(key):
            assert name in doc, name


# --- environment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b", ("a", "b")),
        (" a , b ", ("a", "b")),
        ('["a", "b"]', ("a", "b")),
        ("single", ("single",)),
        ("", ()),
    ],
)
def test_sessions_from_env_json_or_commas(text: str, expected: tuple[str, ...]) -> None:
    s = load(env={"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_SESSIONS": text})
    assert s.sessions == expected


def test_status_lists_from_env_commas_and_json() -> None:
    s = load(
        env={
            "WASEND_API_KEY": KEY,
            "WASEND_SUPERVISOR_STATUSES__HEALTHY": "working, online",
            "WASEND_SUPERVISOR_STATUSES__NEEDS_PERSON": '["scan_qr_code", "banned"]',
        }
    )
    assert s.statuses.healthy == ("WORKING", "ONLINE")
    assert s.statuses.needs_person == ("SCAN_QR_CODE", "BANNED")
    assert s.source_of("statuses.healthy") == "env WASEND_SUPERVISOR_STATUSES__HEALTHY"


def test_bad_json_list_in_env() -> None:
    env = {"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_SESSIONS": '["a",'}
    assert problems(env=env) == [
        "sessions: must be a JSON list or comma-separated names "
        "(got '[\"a\",', from environment variable WASEND_SUPERVISOR_SESSIONS)"
    ]


def test_nested_env_with_double_underscore() -> None:
    env = {
        "WASEND_API_KEY": KEY,
        "WASEND_SUPERVISOR_BACKOFF__INITIAL": "1.5",
        "WASEND_SUPERVISOR_BACKOFF__MAX": "90",
        "WASEND_SUPERVISOR_BACKOFF__MULTIPLIER": "3",
    }
    s = load(env=env)
    assert (s.backoff.initial, s.backoff.max, s.backoff.multiplier) == (1.5, 90.0, 3.0)


def test_unknown_supervisor_env_vars_are_ignored() -> None:
    s = load(env={"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_NOPE": "1", "WASEND_NOPE": "2"})
    assert s.poll_interval == 30.0


def test_prefixed_api_key_variable_is_refused_without_echo() -> None:
    found = problems(env={"WASEND_SUPERVISOR_API_KEY": KEY})
    assert found == [
        "api_key: WASEND_SUPERVISOR_API_KEY is not read, the key's variable is WASEND_API_KEY "
        "(from environment variable WASEND_SUPERVISOR_API_KEY)"
    ]


# --- validation rules, one line each naming field and source ------------------------------


def _env_problem(var: str, value: str) -> list[str]:
    return problems(env={"WASEND_API_KEY": KEY, var: value})


def _from(var: str) -> str:
    return f"from environment variable {var}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("poll_interval", "-1", "must be greater than 0 (got -1"),
        ("poll_interval", "0", "must be greater than 0 (got 0"),
        ("poll_interval", "soon", "must be a number (got soon"),
        ("poll_interval", "inf", "must be a finite number (got inf"),
        ("request_timeout", "0", "must be greater than 0 (got 0"),
        ("backoff.initial", "-0.5", "must be at least 0 (got -0.5"),
        ("backoff.multiplier", "0.9", "must be at least 1 (got 0.9"),
        ("max_restarts", "0", "must be at least 1 (got 0"),
        ("max_restarts", "2.5", "must be a whole number (got 2.5"),
        ("restart_window", "0", "must be greater than 0 (got 0"),
        ("stable_after", "-1", "must be at least 0 (got -1"),
        ("starting_timeout", "0", "must be greater than 0 (got 0"),
        ("gave_up_retry_interval", "0", "must be greater than 0 (got 0"),
        ("auth_retry_interval", "-3", "must be greater than 0 (got -3"),
        ("max_retry_after", "0", "must be greater than 0 (got 0"),
        ("rate_limit", "0", "must be greater than 0 (got 0"),
        ("get_concurrency", "0", "must be at least 1 (got 0"),
        ("get_concurrency", "65", "must be at most 64 (got 65"),
        ("shutdown_grace", "-1", "must be at least 0 (got -1"),
        ("log_format", "xml", "must be one of 'json', 'console' or 'auto' (got xml"),
        (
            "log_level",
            "loud",
            "must be one of 'debug', 'info', 'warning', 'error' or 'critical' (got loud",
        ),
        ("sessions", "a,b,a", "duplicate session ids: a (got 'a,b,a'"),
        ("sessions", "a,,b", "item 2 is empty (got 'a,,b'"),
        ("statuses.healthy", "working,", "item 2 is empty (got 'working,'"),
        ("base_url", "ftp://x.example", "must be an https:// (or loopback http://) URL"),
        ("base_url", "https://", "must name a host"),
        ("base_url", "https://api.example?x=1", "must not have a query or fragment"),
        ("base_url", "https://api.example:99999", "has an invalid port"),
    ],
)
def test_each_rule_is_one_line_naming_field_and_source(key: str, value: str, message: str) -> None:
    var = env_var_names(key)[0]
    found = _env_problem(var, value)
    assert len(found) == 1, found
    assert found[0].startswith(f"{key}: {message}"), found[0]
    assert found[0].endswith(f"{_from(var)})"), found[0]
    assert "\n" not in found[0]


def test_the_example_message_from_the_contract() -> None:
    assert _env_problem(POLL, "-1") == [
        "poll_interval: must be greater than 0 (got -1, "
        "from environment variable WASEND_SUPERVISOR_POLL_INTERVAL)"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stable_after", "0"),
        ("shutdown_grace", "0"),
        ("backoff.initial", "0"),
        ("backoff.multiplier", "1"),
        ("backoff.max", "5"),  # equal to initial
        ("get_concurrency", "1"),
        ("get_concurrency", "64"),
        ("max_restarts", "1"),
    ],
)
def test_boundary_values_are_accepted(key: str, value: str) -> None:
    s = load(env={"WASEND_API_KEY": KEY, env_var_names(key)[0]: value})
    table, _, name = key.rpartition(".")
    owner = getattr(s, table) if table else s
    assert getattr(owner, name) == float(value)


def test_true_is_not_a_number(tmp_path: Path) -> None:
    path = toml(tmp_path, "poll_interval = true\n")
    assert problems(config=path) == [
        f"poll_interval: must be a number, not true or false (got True, from {path})"
    ]


def test_backoff_max_below_initial_names_both_sources(tmp_path: Path) -> None:
    path = toml(tmp_path, "[backoff]\nmax = 1.0\n")
    env = {"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_BACKOFF__INITIAL": "2"}
    assert problems(env=env, config=path) == [
        "backoff.max: must be at least backoff.initial, which is 2.0 (got 1.0, "
        f"from {path}; backoff.initial from environment variable "
        "WASEND_SUPERVISOR_BACKOFF__INITIAL)"
    ]


def test_backoff_max_default_below_initial_says_default() -> None:
    env = {"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_BACKOFF__INITIAL": "500"}
    assert problems(env=env) == [
        "backoff.max: must be at least backoff.initial, which is 500.0 (got 300.0, default; "
        "backoff.initial from environment variable WASEND_SUPERVISOR_BACKOFF__INITIAL)"
    ]


def test_cli_source_is_named() -> None:
    assert problems(cli={"poll_interval": -2.0}) == [
        "poll_interval: must be greater than 0 (got -2.0, from command line --poll-interval)"
    ]


def test_status_classes_must_be_disjoint(tmp_path: Path) -> None:
    path = toml(tmp_path, '[statuses]\nhealthy = ["working", "Error"]\n')
    env = {"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_STATUSES__NEEDS_PERSON": "working"}
    assert problems(env=env, config=path) == [
        f"statuses: ERROR is in both statuses.healthy (from {path}) "
        "and statuses.restartable (default)",
        f"statuses: WORKING is in both statuses.healthy (from {path}) and "
        "statuses.needs_person (from environment variable "
        "WASEND_SUPERVISOR_STATUSES__NEEDS_PERSON)",
    ]


def test_statuses_are_upper_cased_and_deduplicated() -> None:
    env = {"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_STATUSES__RESTARTABLE": "stopped,Stopped"}
    assert load(env=env).statuses.restartable == ("STOPPED",)


def test_log_level_and_format_are_case_insensitive() -> None:
    env = {
        "WASEND_API_KEY": KEY,
        "WASEND_SUPERVISOR_LOG_LEVEL": "WARNING",
        "WASEND_SUPERVISOR_LOG_FORMAT": "Json",
    }
    s = load(env=env)
    assert (s.log_level, s.log_format) == ("warning", "json")


def test_several_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = toml(tmp_path, "typo = 1\nrate_limit = 0\n")
    found = problems(
        env={POLL: "-1", "WASEND_SUPERVISOR_GET_CONCURRENCY": "100"},
        cli={"backoff.multiplier": 0.5},
        config=path,
    )
    assert len(found) == 6, found
    joined = "\n".join(found)
    for start in (
        "typo: unknown key",
        "api_key: no API key found",
        "poll_interval:",
        "rate_limit:",
        "get_concurrency:",
        "backoff.multiplier:",
    ):
        assert re.search(rf"^{re.escape(start)}", joined, re.M), start


def test_config_error_str_is_one_line_per_problem() -> None:
    error = ConfigError(["a: one (default)", "b: two (default)"])
    assert str(error) == "a: one (default)\nb: two (default)"
    assert error.problems == ["a: one (default)", "b: two (default)"]


# --- base_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://api.example.com", "http://10.0.0.1:8080", "http://127.example.com", "http://[::2]"],
)
def test_plain_http_refused_for_non_loopback(url: str) -> None:
    found = _env_problem("WASEND_BASE_URL", url)
    assert len(found) == 1
    assert found[0].startswith(
        "base_url: plain http:// is only allowed for a loopback host "
        "(127.0.0.0/8, ::1, localhost); use https://"
    )
    assert found[0].endswith(f"{_from('WASEND_BASE_URL')})")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8787/", "http://127.0.0.1:8787"),
        ("http://127.4.5.6", "http://127.4.5.6"),
        ("http://localhost:8787", "http://localhost:8787"),
        ("HTTP://LocalHost:8787", "http://LocalHost:8787"),
        ("http://[::1]:8787/", "http://[::1]:8787"),
        ("https://api.example.com/v1//", "https://api.example.com/v1"),
    ],
)
def test_loopback_http_and_https_accepted(url: str, expected: str) -> None:
    assert load(env={"WASEND_API_KEY": KEY, "WASEND_BASE_URL": url}).base_url == expected


def test_credentials_in_base_url_refused_without_echo() -> None:
    found = _env_problem("WASEND_BASE_URL", "https://user:hunter2@api.example.com")
    assert len(found) == 1
    assert found[0].startswith("base_url: must not contain a user name or password")
    assert "hunter2" not in found[0]
    assert "user" not in found[0].partition("(")[2]


def test_a_key_given_as_base_url_is_not_echoed_even_with_no_key_configured() -> None:
    """``config --base-url "$KEY"``: no key is configured, so there is none to compare
    the value to; a base_url that is not a URL is not echoed at all."""
    found = problems(env={}, cli={"base_url": KEY}, require_api_key=False)
    assert found == [
        "base_url: must be an https:// (or loopback http://) URL "
        f"(got a value that is not a URL ({len(KEY)} characters), from command line --base-url)"
    ]
    assert_no_key(found[0])
    assert KEY[:8] not in found[0]


@pytest.mark.parametrize(("url", "shown"), [
    ("ftp://files.example/upload/" + KEY, "got ftp://files.example,"),
    ("http://api.example.com/v1?token=" + KEY, "got http://api.example.com,"),
    ("https://api.example:99999/x", "got https://api.example:99999,"),
    ("https://user:hunter2@api.example.com", "got https://api.example.com,"),
])
def test_a_rejected_base_url_shows_its_scheme_and_host_only(url: str, shown: str) -> None:
    [found] = problems(env={}, cli={"base_url": url}, require_api_key=False)
    assert shown in found
    assert_no_key(found)
    assert "hunter2" not in found and "user" not in found.partition("(")[2]


@pytest.mark.parametrize("key", ["poll_interval", "log_level", "http_listen", "backoff.initial"])
def test_a_value_that_looks_like_a_key_is_never_echoed(key: str) -> None:
    found = problems(env={}, cli={key: KEY}, require_api_key=False)
    assert len(found) == 1
    assert_no_key(found[0])
    assert KEY[:8] not in found[0]


def test_short_plain_values_are_still_echoed() -> None:
    [found] = problems(env={}, cli={"log_level": "loud"}, require_api_key=False)
    assert "(got loud, from command line --log-level)" in found


# --- the API key ---------------------------------------------------------------------------


def test_key_from_env_is_stripped_and_secret() -> None:
    s = load(env={"WASEND_API_KEY": f"  {KEY}\n"})
    assert isinstance(s.api_key, SecretStr)
    assert s.api_key.get_secret_value() == KEY
    source = s.api_key_source()
    assert source is not None
    assert source.describe() == "environment variable WASEND_API_KEY"
    assert source.kind == "env"
    assert source.read() == SecretStr(KEY)


def test_env_key_read_returns_the_value_seen_at_load() -> None:
    env = {"WASEND_API_KEY": KEY}
    s = load(env=env)
    env["WASEND_API_KEY"] = OTHER_KEY
    source = s.api_key_source()
    assert source is not None
    assert source.read().get_secret_value() == KEY


def test_key_from_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "wasend_api_key").write_text(KEY + "\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    s = load(env=env, secrets_dirs=[creds, tmp_path / "run-secrets"])
    assert s.api_key == SecretStr(KEY)
    source = s.api_key_source()
    assert source is not None
    assert source.kind == "credential"
    assert source.describe() == f"credential {creds / 'wasend_api_key'}"
    assert s.source_of("api_key") == f"credential {creds / 'wasend_api_key'}"


def test_key_from_container_secrets(tmp_path: Path) -> None:
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / "wasend_api_key").write_text(KEY)
    s = load(env={}, secrets_dirs=[tmp_path / "no-credentials", secrets])
    assert s.api_key == SecretStr(KEY)
    source = s.api_key_source()
    assert source is not None
    assert source.describe() == f"secret file {secrets / 'wasend_api_key'}"


def test_credentials_directory_is_searched_before_container_secrets(tmp_path: Path) -> None:
    creds, secrets = tmp_path / "creds", tmp_path / "secrets"
    for directory, value in ((creds, KEY), (secrets, OTHER_KEY)):
        directory.mkdir()
        (directory / "wasend_api_key").write_text(value)
    s = load(env={"CREDENTIALS_DIRECTORY": str(creds)}, secrets_dirs=[creds, secrets])
    assert s.api_key == SecretStr(KEY)


def test_default_secret_dirs_are_credentials_directory_then_run_secrets(tmp_path: Path) -> None:
    if Path("/run/secrets/wasend_api_key").exists():
        pytest.skip("this machine has a real /run/secrets/wasend_api_key")
    creds = tmp_path / "creds"
    with pytest.raises(ConfigError) as info:
        load_settings(env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert info.value.problems == [
        "api_key: no API key found; set WASEND_API_KEY, set api_key_file, or provide a file "
        f"named wasend_api_key in {creds} or /run/secrets (default)"
    ]
    creds.mkdir()
    (creds / "wasend_api_key").write_text(KEY)
    s = load_settings(env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert s.api_key == SecretStr(KEY)


def test_key_from_api_key_file_in_env(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(f"\n{KEY}\n\n")
    s = load(env={"WASEND_SUPERVISOR_API_KEY_FILE": str(path)})
    assert s.api_key == SecretStr(KEY)
    assert s.api_key_file == path
    source = s.api_key_source()
    assert source is not None
    assert source.describe() == f"file {path}"
    assert source.path == path


def test_key_re_read_after_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY)
    source = load(env={"WASEND_SUPERVISOR_API_KEY_FILE": str(path)}).api_key_source()
    assert source is not None
    path.write_text(OTHER_KEY + "\n")
    assert source.read() == SecretStr(OTHER_KEY)
    path.write_text("\n")
    with pytest.raises(ConfigError) as info:
        source.read()
    assert info.value.problems == [f"api_key: must not be empty (from file {path})"]
    path.unlink()
    with pytest.raises(ConfigError) as info:
        source.read()
    assert info.value.problems == [f"api_key_file: cannot read {path}: No such file or directory"]


def test_credential_re_read_when_gone(tmp_path: Path) -> None:
    (tmp_path / "wasend_api_key").write_text(KEY)
    source = load(env={}, secrets_dirs=[tmp_path]).api_key_source()
    assert source is not None
    (tmp_path / "wasend_api_key").unlink()
    with pytest.raises(ConfigError) as info:
        source.read()
    assert info.value.problems == [
        f"api_key: cannot read secret file {tmp_path / 'wasend_api_key'}: No such file or directory"
    ]


def test_missing_api_key_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    assert problems(env={"WASEND_SUPERVISOR_API_KEY_FILE": str(path)}) == [
        f"api_key_file: cannot read {path}: No such file or directory "
        "(from environment variable WASEND_SUPERVISOR_API_KEY_FILE)"
    ]


def test_api_key_file_that_is_a_directory(tmp_path: Path) -> None:
    assert problems(env={"WASEND_SUPERVISOR_API_KEY_FILE": str(tmp_path)}) == [
        f"api_key_file: cannot read {tmp_path}: not a regular file (a directory) "
        "(from environment variable WASEND_SUPERVISOR_API_KEY_FILE)"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_api_key_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY)
    path.chmod(0)
    assert problems(env={"WASEND_SUPERVISOR_API_KEY_FILE": str(path)}) == [
        f"api_key_file: cannot read {path}: Permission denied "
        "(from environment variable WASEND_SUPERVISOR_API_KEY_FILE)"
    ]


def test_unreadable_api_key_file_from_read_without_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "key"
    path.write_text(KEY)
    source = ApiKeySource("file", str(path))

    def denied(name: object, flags: int, mode: int = 0o777) -> int:
        raise PermissionError(13, "Permission denied", str(name))

    with monkeypatch.context() as patched:
        patched.setattr(os, "open", denied)
        with pytest.raises(ConfigError) as info:
            source.read()
    assert info.value.problems == [f"api_key_file: cannot read {path}: Permission denied"]


def test_key_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"sk_\xff\xfe_key")
    assert problems(env={"WASEND_SUPERVISOR_API_KEY_FILE": str(path)}) == [
        f"api_key_file: cannot read {path}: not UTF-8 text "
        "(from environment variable WASEND_SUPERVISOR_API_KEY_FILE)"
    ]


def test_empty_key_is_a_problem_naming_its_source(tmp_path: Path) -> None:
    assert problems(env={"WASEND_API_KEY": " \n"}) == [
        "api_key: must not be empty (from environment variable WASEND_API_KEY)"
    ]
    (tmp_path / "wasend_api_key").write_text("\n")
    assert problems(env={}, secrets_dirs=[tmp_path]) == [
        f"api_key: must not be empty (from secret file {tmp_path / 'wasend_api_key'})"
    ]


def test_key_with_inner_space_is_refused_without_echo() -> None:
    found = problems(env={"WASEND_API_KEY": f"{KEY} {KEY}"})
    assert found == [
        "api_key: must be printable ASCII without spaces (from environment variable WASEND_API_KEY)"
    ]


def test_key_and_key_file_in_env_together_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY)
    found = problems(env={"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_API_KEY_FILE": str(path)})
    assert found == [
        "api_key: both WASEND_API_KEY and WASEND_SUPERVISOR_API_KEY_FILE are set; "
        "set only one (from environment)"
    ]


def test_missing_key_only_matters_when_required() -> None:
    s = load(env={}, require_api_key=False)
    assert s.api_key is None
    assert s.api_key_source() is None
    found = problems(env={}, secrets_dirs=[Path("/nonexistent/creds")])
    assert found == [
        "api_key: no API key found; set WASEND_API_KEY, set api_key_file, or provide a file "
        "named wasend_api_key in /nonexistent/creds (default)"
    ]


def test_settings_built_in_code_have_a_code_key_source() -> None:
    s = Settings(api_key=SecretStr(f" {KEY}\n"))
    assert s.api_key == SecretStr(KEY)
    source = s.api_key_source()
    assert source is not None
    assert source.describe() == "value given in code"
    assert source.read() == SecretStr(KEY)


# --- the key never shows -------------------------------------------------------------------


def test_key_not_in_repr_or_str() -> None:
    s = load()
    for text in (repr(s), str(s), repr(s.api_key), repr(s.api_key_source())):
        assert_no_key(text)
    assert "**" in repr(s)


def test_key_not_in_errors_when_placed_in_a_number_field() -> None:
    found = problems(env={"WASEND_API_KEY": KEY, POLL: KEY})
    assert found == [
        "poll_interval: must be a number (got ********, from environment variable "
        "WASEND_SUPERVISOR_POLL_INTERVAL)"
    ]


def test_key_not_in_errors_when_loaded_from_a_file_and_misplaced_in_toml(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY)
    path = toml(tmp_path, f'api_key_file = "key"\nrate_limit = "{KEY}"\n')
    found = problems(env={}, config=path)
    assert len(found) == 1
    assert found[0].startswith("rate_limit: must be a number (got ********")
    assert_no_key(found[0])


def test_long_inputs_are_cut_short() -> None:
    value = "x" * 30 + "SECRETTAIL"
    found = _env_problem(POLL, value)
    assert "SECRETTAIL" not in found[0]
    assert "got xxxxxxxxxxxxxxxxxxxxx..." in found[0]


def test_key_not_in_validation_error_of_direct_construction() -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"api_key": f"{KEY} {KEY}", "poll_interval": KEY})
    assert_no_key(str(info.value))
    assert_no_key(repr(info.value.errors(include_input=False)))


def test_key_not_in_render_output(tmp_path: Path) -> None:
    s = load()
    text = render_settings(s)
    assert_no_key(text)
    assert 'api_key = "********"' in text


# --- render_settings -----------------------------------------------------------------------


def test_render_shows_every_key_value_and_source(tmp_path: Path) -> None:
    config = toml(tmp_path, "rate_limit = 2.5\n[backoff]\nmax = 60.0\n")
    s = load(
        env={"WASEND_API_KEY": KEY, POLL: "12"},
        cli={"log_level": "debug"},
        config=config,
    )
    text = render_settings(s)
    lines = text.splitlines()

    def line(start: str) -> str:
        matching = [ln for ln in lines if ln.startswith(start)]
        assert len(matching) == 1, (start, text)
        return matching[0]

    assert line("api_key = ").endswith("# env WASEND_API_KEY")
    assert line("# api_key_file = (not set)").endswith("# default")
    assert line("poll_interval = 12.0").endswith(f"# env {POLL}")
    assert line("rate_limit = 2.5").endswith(f"# {config}")
    assert line('log_level = "debug"').endswith("# command line --log-level")
    assert line("max = 60.0").endswith(f"# {config}")
    assert line("request_timeout = 15.0").endswith("# default")
    assert f"# config file: {config} (from command line --config)" in lines
    for key in setting_keys():
        name = key.rpartition(".")[2]
        assert any(re.match(rf"(# )?{name} = ", ln) for ln in lines), key
    assert "[backoff]" in lines
    assert "[statuses]" in lines


def test_render_is_toml_that_matches_the_settings() -> None:
    s = load(env={"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_SESSIONS": "a,b"})
    parsed = tomllib.loads(render_settings(s))
    assert parsed["api_key"] == "********"
    assert parsed["sessions"] == ["a", "b"]
    assert parsed["poll_interval"] == s.poll_interval
    assert parsed["backoff"] == {"initial": 5.0, "max": 300.0, "multiplier": 2.0}
    assert parsed["statuses"]["healthy"] == ["WORKING", "CONNECTED"]
    assert "api_key_file" not in parsed


def test_render_names_the_key_file_source(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY)
    text = render_settings(load(env={"WASEND_SUPERVISOR_API_KEY_FILE": str(path)}))
    assert re.search(rf'^api_key = "\*{{8}}"\s+# file {re.escape(str(path))}$', text, re.M)
    assert re.search(r"^api_key_file = .*# env WASEND_SUPERVISOR_API_KEY_FILE$", text, re.M)


def test_render_without_a_key() -> None:
    text = render_settings(load(env={}, require_api_key=False))
    assert "# api_key = (not set)" in text
    assert "# config file: none" in text


# --- policy --------------------------------------------------------------------------------


def test_policy_maps_every_knob() -> None:
    env = {
        "WASEND_API_KEY": KEY,
        "WASEND_SUPERVISOR_BACKOFF__INITIAL": "1",
        "WASEND_SUPERVISOR_BACKOFF__MAX": "40",
        "WASEND_SUPERVISOR_BACKOFF__MULTIPLIER": "3",
        "WASEND_SUPERVISOR_MAX_RESTARTS": "7",
        "WASEND_SUPERVISOR_RESTART_WINDOW": "600",
        "WASEND_SUPERVISOR_STABLE_AFTER": "60",
        "WASEND_SUPERVISOR_STARTING_TIMEOUT": "90",
        "WASEND_SUPERVISOR_GAVE_UP_RETRY_INTERVAL": "1800",
        "WASEND_SUPERVISOR_STATUSES__HEALTHY": "working",
        "WASEND_SUPERVISOR_STATUSES__TRANSITIONAL": "starting",
        "WASEND_SUPERVISOR_STATUSES__RESTARTABLE": "stopped,failed",
        "WASEND_SUPERVISOR_STATUSES__NEEDS_PERSON": "scan_qr_code,banned",
    }
    policy = load(env=env).policy()
    assert policy == Policy(
        classes=StatusClasses.of(
            healthy=["WORKING"],
            transitional=["STARTING"],
            restartable=["STOPPED", "FAILED"],
            needs_person=["SCAN_QR_CODE", "BANNED"],
        ),
        backoff=Backoff(initial=1.0, max=40.0, multiplier=3.0),
        max_restarts=7,
        restart_window=600.0,
        stable_after=60.0,
        starting_timeout=90.0,
        gave_up_retry_interval=1800.0,
    )
    assert policy.classes.classify("banned") is StatusClass.NEEDS_PERSON
    assert policy.classes.classify("CONNECTED") is StatusClass.UNKNOWN


def test_default_policy_equals_policy_defaults() -> None:
    assert load().policy() == Policy()


# --- odds and ends -------------------------------------------------------------------------


def test_list_items_must_be_strings_in_toml(tmp_path: Path) -> None:
    path = toml(tmp_path, 'sessions = [1, "a"]\n')
    assert problems(config=path) == [
        f"sessions: item 1 must be a string (got [1, 'a'], from {path})"
    ]


def test_cli_list_as_argparse_gives_it() -> None:
    s = load(cli={"sessions": ["sales", "support"]})
    assert s.sessions == ("sales", "support")
    assert s.source_of("sessions") == "command line --sessions"


def test_empty_key_file_variable_is_a_problem() -> None:
    assert problems(env={"WASEND_SUPERVISOR_API_KEY_FILE": ""}) == [
        "api_key_file: must not be empty (from environment variable WASEND_SUPERVISOR_API_KEY_FILE)"
    ]


def test_empty_config_variable_means_no_config_file() -> None:
    s = load(env={"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_CONFIG": ""})
    assert s.config_file is None


def test_source_of_rejects_unknown_keys() -> None:
    with pytest.raises(KeyError):
        load().source_of("nope")


# --- one home for each rule, and the sources as pydantic-settings has them -----------------


def test_the_decision_cores_defaults_are_taken_from_the_policy() -> None:
    """Written once, in the domain's policy: the settings hold the very same values."""
    policy = Policy()
    for name in ("restart_window", "stable_after", "starting_timeout", "gave_up_retry_interval"):
        assert Settings.model_fields[name].default is getattr(policy, name), name
    for name in ("initial", "max", "multiplier"):
        assert BackoffSettings.model_fields[name].default is getattr(policy.backoff, name), name
    assert Settings.model_fields["max_restarts"].default == policy.max_restarts
    assert StatusSettings.model_fields["healthy"].default is DEFAULT_HEALTHY


def test_the_store_is_the_home_of_memory_and_the_history_defaults() -> None:
    assert Settings().state_location() == MEMORY
    assert Settings.model_fields["history_max_age"].default is DEFAULT_HISTORY_MAX_AGE
    assert Settings.model_fields["history_max_rows"].default == DEFAULT_HISTORY_MAX_ROWS


def test_the_overlap_rule_is_the_domains_and_keeps_the_classes_order() -> None:
    found = overlaps([
        (StatusClass.HEALTHY, ("WORKING", "ERROR", "FAILED")),
        (StatusClass.TRANSITIONAL, ("STARTING",)),
        (StatusClass.RESTARTABLE, ("FAILED", "ERROR")),
        (StatusClass.NEEDS_PERSON, ("WORKING",)),
    ])
    assert found == [
        ("FAILED", StatusClass.HEALTHY, StatusClass.RESTARTABLE),
        ("ERROR", StatusClass.HEALTHY, StatusClass.RESTARTABLE),
        ("WORKING", StatusClass.HEALTHY, StatusClass.NEEDS_PERSON),
    ]
    with pytest.raises(ValueError, match="'ERROR' is in both healthy and restartable"):
        StatusClasses.of(healthy=["WORKING", "ERROR"])
    env = {"WASEND_API_KEY": KEY, "WASEND_SUPERVISOR_STATUSES__HEALTHY": "working,failed,error"}
    var = "from environment variable WASEND_SUPERVISOR_STATUSES__HEALTHY"
    assert problems(env=env) == [
        # in the order of the later class: restartable is STOPPED, ERROR, FAILED
        f"statuses: ERROR is in both statuses.healthy ({var}) and statuses.restartable (default)",
        f"statuses: FAILED is in both statuses.healthy ({var}) and statuses.restartable (default)",
    ]


def test_no_config_module_hands_values_over_behind_the_call() -> None:
    """The sources are built per load and passed in: no ContextVar, no module-level layers."""
    for path in (ROOT / "supervisor" / "config").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {
            node.id if isinstance(node, ast.Name) else node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Name | ast.Attribute)
        }
        modules = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "ContextVar" not in names, path.name
        assert "contextvars" not in modules, path.name


@pytest.mark.parametrize(
    "env",
    [
        {"WASEND_SUPERVISOR_BACKOFF": '{"initial": 1}'},  # a table is read by its keys only
        {"WASEND_SUPERVISOR_BACKOFF": "x"},
        {"WASEND_SUPERVISOR_BACKOFF__START": "1"},  # no such key: ignored, as any other
        {"WASEND_SUPERVISOR_BACKOFF__INITIAL__X": "1"},
        {"WASEND_SUPERVISOR_SESSIONS__X": "1"},  # not a table
        {"WASEND_SUPERVISOR_STATUSES": '{"healthy": ["X"]}'},
        {"wasend_supervisor_poll_interval": "1"},  # names match as written
        {"WASEND_SUPERVISOR_poll_interval": "1"},
    ],
)
def test_environment_variables_that_name_no_key_are_ignored(env: dict[str, str]) -> None:
    s = load(env={"WASEND_API_KEY": KEY, **env})
    assert s.model_dump() == load().model_dump()
    assert all(s.source_of(key) == "default" for key in setting_keys() if key != "api_key")
