"""Tests of the ``[alerts]`` settings: their sources, their rules and problem lines, the
URLs file, and the URLs kept secret in every output (``config``, problem lines, reprs)."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from supervisor.config.load import load_settings
from supervisor.config.model import AlertSettings, Settings
from supervisor.config.problems import ConfigError
from supervisor.config.render import render_settings
from supervisor.config.urls import URLS_FILE_MAX_BYTES, parse_entry, secret_pieces
from supervisor.domain.episodes import Kind
from supervisor.domain.secrets import Secrets

KEY = "sk_test_Zq8vN3pL7wR2xK9mT4yB6cD1"
TOKEN = "xoxb7Qm2Lr9Tt4Kp1Zs8Wd3"  # a token inside a URL: it must never be shown
SLACK = f"slack://{TOKEN}/C0123/#alerts"
HOOK = f"json://hooks.example.com/alert?token={TOKEN}x"
MAIL = "mailtos://ops:Pa55-w0rd-long@mail.example.com?to=oncall@example.com"
URLS_ENV = "WASEND_SUPERVISOR_ALERTS__URLS"
FILE_ENV = "WASEND_SUPERVISOR_ALERTS__URLS_FILE"
ROUTES_ENV = "WASEND_SUPERVISOR_ALERTS__ROUTES"
AM_ENV = "WASEND_SUPERVISOR_ALERTS__ALERTMANAGER_URL"


def load(env: dict[str, str] | None = None, *, config: Path | None = None,
         cli: dict[str, Any] | None = None) -> Settings:
    return load_settings(cli=cli, config_path=config, env={"WASEND_API_KEY": KEY, **(env or {})},
                         secrets_dirs=[])


def problems(env: dict[str, str] | None = None, *, config: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(env, config=config)
    return info.value.problems


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def urls_file(tmp_path: Path, text: str, mode: int = 0o600, name: str = "alert-urls") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text
    assert TOKEN[4:16] not in text  # not even a piece of it
    assert "Pa55-w0rd" not in text


def urls_of(settings: Settings) -> list[str]:
    return [entry.url.get_secret_value() for entry in settings.alerts.channel_urls()]


# --- defaults ------------------------------------------------------------------------------


def test_defaults_leave_alerts_off() -> None:
    alerts = load().alerts
    assert alerts.enabled is False
    assert alerts.urls == ()
    assert alerts.urls_file is None
    assert alerts.routes == ()
    assert alerts.alertmanager_url is None
    assert (alerts.unreachable_after, alerts.group_window, alerts.max_age, alerts.queue_max) == (
        120.0, 10.0, 3600.0, 10000)
    assert alerts.status_page_url == ""
    assert alerts.channel_urls() == ()
    assert alerts.secret_values() == ()
    assert AlertSettings() == alerts


# --- sources and precedence ----------------------------------------------------------------


def test_urls_from_the_config_file_with_their_tags(tmp_path: Path) -> None:
    config = toml(tmp_path, f'[alerts]\nurls = ["OnCall,ops={SLACK}", "{HOOK}"]\n')
    s = load(config=config)
    assert s.alerts.enabled
    entries = s.alerts.channel_urls()
    assert [e.url.get_secret_value() for e in entries] == [SLACK, HOOK]
    assert [e.tags for e in entries] == [("oncall", "ops"), ()]
    assert [e.scheme for e in entries] == ["slack", "json"]
    assert [e.where for e in entries] == ["alerts.urls item 1", "alerts.urls item 2"]
    assert s.source_of("alerts.urls") == str(config)


@pytest.mark.parametrize(
    "text", [f"{SLACK} {HOOK}", f"\n  {SLACK}\n{HOOK}\n", f'["{SLACK}", "{HOOK}"]'])
def test_urls_from_the_environment_split_on_whitespace_or_as_json(text: str) -> None:
    s = load({URLS_ENV: text})
    assert urls_of(s) == [SLACK, HOOK]
    assert s.source_of("alerts.urls") == f"env {URLS_ENV}"


def test_a_url_with_commas_stays_one_url() -> None:
    url = "mailtos://u:p4ss@example.com?to=a@example.com,b@example.com"
    assert urls_of(load({URLS_ENV: url})) == [url]


def test_environment_beats_config_file_and_command_line_beats_both(tmp_path: Path) -> None:
    config = toml(tmp_path, f'[alerts]\nurls = ["{SLACK}"]\ngroup_window = 3\nmax_age = 60\n')
    s = load({URLS_ENV: HOOK, "WASEND_SUPERVISOR_ALERTS__GROUP_WINDOW": "4"}, config=config,
             cli={"alerts.group_window": "5"})
    assert urls_of(s) == [HOOK]
    assert s.alerts.group_window == 5.0
    assert s.alerts.max_age == 60.0
    assert s.source_of("alerts.group_window") == "command line --alerts-group-window"
    assert s.source_of("alerts.urls") == f"env {URLS_ENV}"
    assert s.source_of("alerts.max_age") == str(config)
    assert s.source_of("alerts.queue_max") == "default"


def test_alertmanager_alone_turns_alerts_on() -> None:
    s = load({AM_ENV: "http://alertmanager:9093/"})
    assert s.alerts.enabled
    assert s.alerts.alertmanager_url == SecretStr("http://alertmanager:9093")
    assert s.alerts.channel_urls() == ()


# --- the URLs file -------------------------------------------------------------------------


def test_urls_file_lines_are_read_comments_and_blanks_skipped(tmp_path: Path) -> None:
    path = urls_file(tmp_path, f"# the on-call chat\n\n  oncall={SLACK}  \n# mail\n{MAIL}\n")
    s = load({FILE_ENV: str(path), URLS_ENV: HOOK})
    assert s.alerts.enabled
    assert urls_of(s) == [HOOK, SLACK, MAIL]  # the list's first, then the file's
    assert [e.where for e in s.alerts.channel_urls()] == [
        "alerts.urls item 1", f"{path} line 3", f"{path} line 5"]
    assert s.alerts.channel_urls()[1].tags == ("oncall",)
    read = s.alerts.urls_file_read()
    assert read is not None and read.exposure is None
    assert str(len(read.urls)) in repr(read) and TOKEN not in repr(read)


def test_urls_file_alone_turns_alerts_on_and_is_relative_to_the_config_file(
        tmp_path: Path) -> None:
    urls_file(tmp_path, SLACK + "\n")
    config = toml(tmp_path, '[alerts]\nurls_file = "alert-urls"\n')
    s = load(config=config)
    assert s.alerts.urls_file == tmp_path / "alert-urls"
    assert s.alerts.enabled and urls_of(s) == [SLACK]


def test_a_urls_file_others_can_read_is_noted(tmp_path: Path) -> None:
    path = urls_file(tmp_path, SLACK + "\n", mode=0o644)
    read = load({FILE_ENV: str(path)}).alerts.urls_file_read()
    assert read is not None and read.exposure == (0o644, "other users")


def test_a_systemd_credential_is_not_asked_who_else_may_read_it(tmp_path: Path) -> None:
    path = urls_file(tmp_path, SLACK + "\n", mode=0o644, name="wasend_alert_urls")
    s = load({FILE_ENV: str(path), "CREDENTIALS_DIRECTORY": str(tmp_path)})
    read = s.alerts.urls_file_read()
    assert read is not None and read.exposure is None
    assert urls_of(s) == [SLACK]


def test_a_missing_urls_file_is_one_line_naming_it_and_its_source(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    assert problems({FILE_ENV: str(path)}) == [
        f"alerts.urls_file: cannot read {path}: No such file or directory "
        f"(from environment variable {FILE_ENV})"
    ]


def test_a_urls_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    [line] = problems({FILE_ENV: str(path)})
    assert line.startswith(f"alerts.urls_file: cannot read {path}: not a regular file (a FIFO)")


def test_a_huge_urls_file_is_refused_not_read_on(tmp_path: Path) -> None:
    path = urls_file(tmp_path, (SLACK + "\n") * (URLS_FILE_MAX_BYTES // len(SLACK) + 2))
    [line] = problems({FILE_ENV: str(path)})
    assert f"over {URLS_FILE_MAX_BYTES} bytes" in line


def test_a_urls_file_without_a_url_is_a_problem(tmp_path: Path) -> None:
    path = urls_file(tmp_path, "# nothing yet\n\n")
    assert problems({FILE_ENV: str(path)}) == [
        f"alerts.urls_file: {path} holds no URL (from environment variable {FILE_ENV})"]


def test_a_bad_line_of_the_urls_file_is_named_by_number_never_shown(tmp_path: Path) -> None:
    path = urls_file(tmp_path, f"{SLACK}\nslack//{TOKEN}\ntgram://\n{SLACK}\n")
    found = problems({FILE_ENV: str(path)})
    assert found == [
        f"alerts.urls_file: {path} line 2 is not an Apprise URL (scheme://...) "
        f"(from environment variable {FILE_ENV})",
        f"alerts.urls_file: {path} line 3 is a tgram:// URL that names nothing after its scheme:// "
        f"(from environment variable {FILE_ENV})",
    ]
    assert_no_secret("\n".join(found))


def test_a_url_in_the_list_and_the_file_is_a_problem(tmp_path: Path) -> None:
    path = urls_file(tmp_path, f"ops={SLACK}\n")
    found = problems({FILE_ENV: str(path), URLS_ENV: SLACK})
    assert found == [f"alerts.urls_file: {path} line 1 is the same URL as alerts.urls item 1 "
                     f"(from environment variable {FILE_ENV})"]


def test_the_urls_file_is_read_again_at_each_load(tmp_path: Path) -> None:
    path = urls_file(tmp_path, SLACK + "\n")
    assert urls_of(load({FILE_ENV: str(path)})) == [SLACK]
    path.write_text(HOOK + "\n")
    assert urls_of(load({FILE_ENV: str(path)})) == [HOOK]


# --- rules and problem lines ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GROUP_WINDOW", "-1", "must be at least 0 (got -1"),
        ("UNREACHABLE_AFTER", "0", "must be greater than 0 (got 0"),
        ("MAX_AGE", "-5", "must be greater than 0 (got -5"),
        ("QUEUE_MAX", "0", "must be at least 1 (got 0"),
        ("QUEUE_MAX", "1.5", "must be a whole number (got 1.5"),
        ("GROUP_WINDOW", "true", "must be a number (got true"),
        ("URLS_FILE", "", "must not be empty"),
    ],
)
def test_each_rule_is_one_line_naming_the_key_and_its_source(
        name: str, value: str, message: str) -> None:
    env = f"WASEND_SUPERVISOR_ALERTS__{name}"
    [line] = problems({env: value})
    assert line.startswith(f"alerts.{name.lower()}: {message}"), line
    assert line.endswith(f"from environment variable {env})"), line


def test_the_example_message_of_the_brief() -> None:
    assert problems({"WASEND_SUPERVISOR_ALERTS__GROUP_WINDOW": "-1"}) == [
        "alerts.group_window: must be at least 0 (got -1, from environment variable "
        "WASEND_SUPERVISOR_ALERTS__GROUP_WINDOW)"]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (f"slack//{TOKEN}", "not an Apprise URL (scheme://...)"),
        (f"://{TOKEN}", "not an Apprise URL (scheme://...)"),
        (f"sl@ck://{TOKEN}", "not an Apprise URL (scheme://...)"),
        ("slack://", "a slack:// URL that names nothing after its scheme://"),
        (f"{TOKEN}://x y", "an Apprise URL with a space or a control character in it"),
        (f"on call=slack://{TOKEN}", "a slack:// URL whose tags are not letters, digits, _ and -,"
                                     " separated by commas"),
        (f"=slack://{TOKEN}", "a slack:// URL with an empty or overlong tag before its ="),
        (f"Slack://{TOKEN}\x1b[2J", "a slack:// URL with a space or a control character in it"),
    ],
)
def test_a_bad_url_is_named_by_its_scheme_only(entry: str, reason: str) -> None:
    found = problems({URLS_ENV: json.dumps([HOOK, entry])})
    assert found == [f"alerts.urls: item 2 is {reason} (from environment variable {URLS_ENV})"]
    assert_no_secret(found[0])


def test_the_same_url_twice_in_the_list_is_a_problem() -> None:
    assert problems({URLS_ENV: f"{SLACK} {HOOK} ops={SLACK}"}) == [
        f"alerts.urls: item 3 is the same URL as item 1 (from environment variable {URLS_ENV})"]


def test_urls_must_be_a_list_of_strings(tmp_path: Path) -> None:
    assert problems(config=toml(tmp_path, "[alerts]\nurls = [1]\n")) == [
        f"alerts.urls: item 1 must be a string (from {tmp_path / 'config.toml'})"]
    assert problems(config=toml(tmp_path, "[alerts]\nurls = {a = 1}\n")) == [
        f"alerts.urls: must be a list of Apprise URLs (from {tmp_path / 'config.toml'})"]


def test_an_alerts_value_that_is_no_table_is_a_problem(tmp_path: Path) -> None:
    [line] = problems(config=toml(tmp_path, 'alerts = "slack://x"\n'))
    assert line.startswith("alerts: must be a table of urls, urls_file, routes, ")


def test_an_unknown_alerts_key_gets_a_guess(tmp_path: Path) -> None:
    assert problems(config=toml(tmp_path, "[alerts]\ngroup_windw = 3\n")) == [
        f"alerts.group_windw: unknown key, did you mean alerts.group_window? "
        f"(from {tmp_path / 'config.toml'})"]


def test_alertmanager_url_rules_never_show_its_password() -> None:
    secret = "Am-pa55word-9"
    for url, message in [
        (f"ftp://user:{secret}@am.example:9093", "must be an http:// or https:// URL"),
        (f"http://user:{secret}@am.example:9093/?x=1", "must not have a query or fragment"),
        (f"http://user:{secret}@:9093", "must name a host"),
    ]:
        [line] = problems({AM_ENV: url})
        assert line.startswith(f"alerts.alertmanager_url: {message}"), line
        assert secret not in line and "user" not in line, line
    s = load({AM_ENV: f"https://user:{secret}@am.example:9093/"})
    assert s.alerts.alertmanager_url == SecretStr(f"https://user:{secret}@am.example:9093")
    assert secret in s.alerts.secret_values()
    assert f"https://user:{secret}@am.example:9093" in s.alerts.secret_values()


def test_an_alertmanager_url_without_credentials_is_no_secret() -> None:
    assert load({AM_ENV: "http://127.0.0.1:9093"}).alerts.secret_values() == ()
    assert load({AM_ENV: ""}).alerts.alertmanager_url is None


def test_status_page_url_is_a_plain_http_url_for_people() -> None:
    s = load({"WASEND_SUPERVISOR_ALERTS__STATUS_PAGE_URL": "HTTPS://status.example/qr?s=1#top"})
    assert s.alerts.status_page_url == "https://status.example/qr?s=1#top"
    [line] = problems({"WASEND_SUPERVISOR_ALERTS__STATUS_PAGE_URL": "https://u:pw@status.ex"})
    assert line.startswith("alerts.status_page_url: must not contain a user name or password "
                           "(got https://status.ex, from environment variable")


# --- routes --------------------------------------------------------------------------------


def test_routes_from_a_toml_table(tmp_path: Path) -> None:
    config = toml(tmp_path, f'[alerts]\nurls = ["oncall={SLACK}", "ops={HOOK}"]\n'
                            '[alerts.routes]\ngone = "ops"\nneeds_person = ["OnCall", "ops"]\n')
    alerts = load(config=config).alerts
    # in the kinds' order
    assert alerts.routes == (("needs_person", ("oncall", "ops")), ("gone", ("ops",)))
    assert alerts.route(Kind.NEEDS_PERSON) == ("oncall", "ops")
    assert alerts.route(Kind.GAVE_UP) is None  # every URL


@pytest.mark.parametrize("text", ['{"needs_person": ["oncall"], "gave_up": "ops,oncall"}',
                                  "needs_person=oncall  gave_up=ops,oncall"])
def test_routes_from_the_environment(text: str) -> None:
    alerts = load({ROUTES_ENV: text, URLS_ENV: f"oncall={SLACK}"}).alerts
    assert alerts.routes == (("needs_person", ("oncall",)), ("gave_up", ("ops", "oncall")))


def test_an_unknown_kind_is_a_problem_with_a_guess() -> None:
    assert problems({ROUTES_ENV: "needs_persn=oncall", URLS_ENV: f"oncall={SLACK}"}) == [
        "alerts.routes: needs_persn is no kind of alert, did you mean needs_person? "
        f"(got needs_persn=oncall, from environment variable {ROUTES_ENV})"]
    [line] = problems({ROUTES_ENV: '{"Pager Duty!": "x"}', URLS_ENV: f"x={SLACK}"})
    assert line.startswith("alerts.routes: a kind is no kind of alert (kinds: needs_person, "
                           "gave_up, auth_failed, api_unreachable, gone, zombie, "
                           "supervision_stopped)")


def test_a_kind_routed_to_tags_no_url_carries_is_a_problem(tmp_path: Path) -> None:
    path = urls_file(tmp_path, f"ops={HOOK}\n")
    assert problems({ROUTES_ENV: "needs_person=oncall gone=ops", FILE_ENV: str(path)}) == [
        "alerts.routes: needs_person is routed to oncall, a tag no alert URL carries "
        f"(from environment variable {ROUTES_ENV})"]


@pytest.mark.parametrize("text", ["needs_person", '{"gone": []}', '{"gone": [1]}',
                                  "gone=a;b", '{"gone": '])
def test_bad_routes_are_problems(text: str) -> None:
    [line] = problems({ROUTES_ENV: text, URLS_ENV: f"a={SLACK}"})
    assert line.startswith("alerts.routes: "), line
    assert line.endswith(f"from environment variable {ROUTES_ENV})"), line


# --- secrets: the URLs in no output --------------------------------------------------------


def test_a_token_in_a_url_is_in_no_config_output_problem_line_or_repr(tmp_path: Path) -> None:
    path = urls_file(tmp_path, f"{MAIL}\n")
    s = load({URLS_ENV: f"oncall={SLACK} {HOOK}", FILE_ENV: str(path),
              AM_ENV: "http://am:Pa55-w0rd-long@am.example:9093"})
    text = render_settings(s)
    assert_no_secret(text)
    assert_no_secret(repr(s))
    assert_no_secret(str(s))
    assert_no_secret(repr(s.alerts.channel_urls()))
    assert_no_secret(repr(s.alerts.urls_file_read()))
    assert_no_secret(repr(s.model_dump()))
    # a problem elsewhere in the same load, and the URLs themselves refused
    found = problems({URLS_ENV: f"{SLACK} {SLACK}", FILE_ENV: str(path),
                      "WASEND_SUPERVISOR_ALERTS__QUEUE_MAX": TOKEN})
    assert found, found
    assert_no_secret("\n".join(found))


def test_direct_construction_errors_show_no_url() -> None:
    with pytest.raises(ValidationError) as info:
        AlertSettings(urls=(f"slack//{TOKEN}",))  # type: ignore[arg-type]
    assert_no_secret(str(info.value))
    assert_no_secret(repr(info.value))


def test_config_masks_each_url_with_their_count_and_source(tmp_path: Path) -> None:
    path = urls_file(tmp_path, f"{MAIL}\n# a comment\n{HOOK}\n")
    s = load({URLS_ENV: f"oncall={SLACK}", FILE_ENV: str(path),
              AM_ENV: "https://am:Pa55-w0rd-long@am.example:9093",
              ROUTES_ENV: "needs_person=oncall"})
    text = render_settings(s)
    lines = text.splitlines()
    assert "[alerts]" in lines
    assert re.search(rf'^urls = \["\*{{8}}"\] +# env {URLS_ENV}; 1 URL$', text, re.M), text
    assert re.search(rf'^urls_file = "{re.escape(str(path))}" +# env {FILE_ENV}; 2 URLs$',
                     text, re.M), text
    assert re.search(r'^alertmanager_url = "https://\*{8}@am\.example:9093" +# env ', text, re.M)
    assert re.search(r'^routes = \{needs_person = \["oncall"\]\} +# env ', text, re.M), text
    assert re.search(r"^group_window = 10\.0 +# default$", text, re.M)
    parsed = tomllib.loads(text)["alerts"]
    assert parsed["urls"] == ["********"]
    assert parsed["routes"] == {"needs_person": ["oncall"]}
    assert_no_secret(text)


def test_config_without_alerts_shows_the_empty_table() -> None:
    text = render_settings(load())
    assert re.search(r"^urls = \[\] +# default$", text, re.M), text
    assert re.search(r"^# urls_file = \(not set\) +# default$", text, re.M)
    assert re.search(r"^# alertmanager_url = \(not set\) +# default$", text, re.M)
    assert re.search(r"^routes = \{\} +# default$", text, re.M)
    assert tomllib.loads(text)["alerts"]["queue_max"] == 10000


def test_secret_values_hold_each_url_its_password_and_its_token_like_pieces(
        tmp_path: Path) -> None:
    path = urls_file(tmp_path, f"{MAIL}\n")
    s = load({URLS_ENV: f"oncall={SLACK} {HOOK}", FILE_ENV: str(path)})
    values = s.alerts.secret_values()
    for expected in (SLACK, HOOK, MAIL, TOKEN, f"{TOKEN}x", "Pa55-w0rd-long"):
        assert expected in values, expected
    assert "hooks.example.com" not in values and "mail.example.com" not in values
    assert "oncall=" + SLACK not in values  # the tags are no part of the URL
    secrets = Secrets(values)
    line = f"apprise: sending to {SLACK} failed; token {TOKEN}; auth ops:Pa55-w0rd-long"
    assert_no_secret(secrets.redact(line))


def test_secret_pieces_of_a_url() -> None:
    assert secret_pieces("tgram://123456789:AAHbcdEfgh123/987654321") == (
        "tgram://123456789:AAHbcdEfgh123/987654321", "AAHbcdEfgh123")
    assert secret_pieces("ntfy://ntfy1.example/alerts") == ("ntfy://ntfy1.example/alerts",)
    assert secret_pieces("mailto://u:secret@mail.example") == (
        "mailto://u:secret@mail.example", "secret")  # a password, token-like or not
    assert secret_pieces("json://h/x?t=ab%2Fcd1234") == (
        "json://h/x?t=ab%2Fcd1234", "ab%2Fcd1234", "ab/cd1234")


def test_parse_entry_keeps_the_tags_apart_and_the_url_secret() -> None:
    entry = parse_entry(f"  A,b,a={SLACK} ", "here")
    assert entry.tags == ("a", "b")
    assert entry.url.get_secret_value() == SLACK
    assert TOKEN not in repr(entry)
    query = parse_entry("json://host/path?a=b&c=d", "here")
    assert query.tags == () and query.url.get_secret_value() == "json://host/path?a=b&c=d"
