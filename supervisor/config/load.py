"""``load_settings``: every source read once, merged by pydantic-settings, validated.

The sources (``supervisor.config.sources``) are built for each call and handed to the
model as ``_build_sources``, pydantic-settings' own way to pass pre-built sources in (its
``CliApp`` does the same): nothing outside the call holds them, so loads may run side by
side, and ``Settings.settings_customise_sources`` keeps to keyword arguments for settings
built in code. A ``Settings`` subclass made per load would do as well, but defining one
rebuilds the model's schema (about 20 ms here, on every ``check``).

``alerts.urls_file`` is read here too, from the highest-priority source that names it,
before validation (as the key file is by its source); its URLs are handed to the settings
after, and what only the list and the file together show (a URL twice, a route to a tag
no URL carries) is checked then.

Every problem, whether found while reading a source or while validating, becomes one line
naming the key and its source, and all of them are raised together as ``ConfigError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_settings import PydanticBaseSettingsSource

from supervisor.config.files import read_failure, read_regular_file
from supervisor.config.key import (
    API_KEY_ENV,
    API_KEY_FILE_NAME,
    CREDENTIALS_ENV,
    KEY_FILE_MAX_BYTES,
)
from supervisor.config.model import Settings, check_state_url
from supervisor.config.origin import Given, Origin
from supervisor.config.problems import ConfigError, Problems, validation_problems
from supervisor.config.sources import (
    CommandLineSource,
    ConfigFileSource,
    EnvironmentSource,
    KeySource,
    StateDefaultSource,
    config_file_of,
    secret_dirs,
)
from supervisor.config.urls import (
    AlertUrl,
    UrlsFile,
    duplicates,
    parse_entry,
    read_urls_file,
    tags_of,
)

__all__ = ["load_settings"]


def load_settings(
    *,
    cli: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    require_api_key: bool = True,
    secrets_dirs: Sequence[Path] | None = None,
) -> Settings:
    """Read every source, validate, and return the settings, or raise ConfigError.

    ``cli``: overrides from the command line, by key: flat names for top-level keys
    (``"poll_interval"``), dotted names for nested ones (``"backoff.initial"``); a value of
    None means "not given". ``config_path``: the ``--config`` file (else
    ``WASEND_SUPERVISOR_CONFIG``; else no file). ``env``: the environment (default
    ``os.environ``). ``secrets_dirs``: where to look for a ``wasend_api_key`` file (default
    ``$CREDENTIALS_DIRECTORY`` then ``/run/secrets``). ``require_api_key``: whether a missing
    key is a problem.
    """
    env = os.environ if env is None else env
    problems = Problems()
    # Built in priority order, so that their problems come in that order too.
    command_line = CommandLineSource(Settings, cli or {}, problems)
    environment = EnvironmentSource(Settings, env)
    config_file = config_file_of(config_path, env)
    config = None if config_file is None else ConfigFileSource(Settings, *config_file, problems)
    dirs = secret_dirs(env, secrets_dirs)
    key = KeySource(
        Settings,
        env,
        dirs,
        cli=command_line.given,
        environment=environment.given,
        config=None if config is None else config.given,
        problems=problems,
    )
    failed = config is not None and config.failed
    if key.source is None and require_api_key and not problems.key_reported and not failed:
        where = " or ".join(str(d) for d in dirs)
        problems.add(
            f"api_key: no API key found; set {API_KEY_ENV}, set api_key_file, "
            f"or provide a file named {API_KEY_FILE_NAME} in {where} (default)"
        )
    urls_file = _read_urls_file([command_line.given, environment.given,
                                 *([] if config is None else [config.given])], env, problems)
    for given in (command_line.given, environment.given,
                  *([] if config is None else [config.given])):
        if "state_url" in given.values:  # a secret: never in a problem line
            problems.remember(given.values["state_url"])
    state_default = StateDefaultSource(Settings, env, problems)
    sources: list[PydanticBaseSettingsSource] = [command_line, environment, key]
    givens: list[Given] = [command_line.given, environment.given, key.given]
    if config is not None:
        sources.append(config)
        givens.append(config.given)
    sources.append(state_default)
    givens.append(state_default.given)

    settings: Settings | None = None
    try:
        # BaseSettings.__init__ takes _build_sources; type checkers see only the fields.
        settings = Settings(_build_sources=(tuple(sources), {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        problems.lines.extend(
            validation_problems(exc, _origins(givens), problems.known)
        )
    if problems.lines or settings is None:
        raise ConfigError(problems.lines)
    settings._origins = _origins(givens)
    settings._api_key_source = key.source
    settings._config_file = config_file
    settings.alerts._file = urls_file
    settings.webhooks._file_key = _read_hmac_key_file(settings, problems)
    settings._file_state_url = _read_state_url_file(settings, problems)
    problems.lines.extend(_alert_problems(settings))
    hooks = settings.webhooks
    if hooks.enabled and not hooks.listen and not settings.http_listen:
        named = "webhooks.hmac_key_file" if hooks.hmac_key_file else (
            "webhooks.hmac_key" if hooks.hmac_key else "webhooks.allow_unsigned")
        problems.add("webhooks: the endpoint needs an address: set http_listen, or "
                     f"webhooks.listen ({named} {settings.source_of(named, long=True)})")
    if problems.lines:
        raise ConfigError(problems.lines)
    return settings


def _read_urls_file(givens: Sequence[Given], env: Mapping[str, str],
                    problems: Problems) -> UrlsFile | None:
    """``alerts.urls_file``, from the highest-priority source that names it, read now:
    its URLs, or None (and a problem line for the file or for each bad line, naming the
    line but never showing it). Who else may read it is not asked of a systemd credential
    (a file in ``$CREDENTIALS_DIRECTORY``): systemd keeps those where only the service can
    open them, as for the key."""
    given = next((g for g in givens if "alerts.urls_file" in g.values), None)
    if given is None:
        return None
    path, origin = given.values["alerts.urls_file"], given.origins["alerts.urls_file"]
    if not isinstance(path, Path):
        return None  # pydantic reports the value
    try:
        lines, exposure = read_urls_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(f"alerts.urls_file: cannot read {path}: {read_failure(exc)} "
                     f"({origin.long()})")
        return None
    urls: list[AlertUrl] = []
    for number, text in lines:
        problems.remember(text)
        try:
            urls.append(parse_entry(text, f"{path} line {number}"))
        except ValueError as exc:
            problems.add(f"alerts.urls_file: {path} line {number} is {exc} ({origin.long()})")
    if not lines:
        problems.add(f"alerts.urls_file: {path} holds no URL ({origin.long()})")
    credentials = env.get(CREDENTIALS_ENV)
    if credentials and path.parent == Path(credentials):
        exposure = None
    return UrlsFile(path, origin, tuple(urls), exposure)


def _read_hmac_key_file(settings: Settings, problems: Problems) -> SecretStr | None:
    """``webhooks.hmac_key_file``, read now like a key file (a regular file, bounded; its
    one line, surrounding whitespace taken off). Problems name the file, never its text."""
    path = settings.webhooks.hmac_key_file
    if path is None:
        return None
    origin = settings.source_of("webhooks.hmac_key_file", long=True)
    try:
        data, _ = read_regular_file(Path(path), KEY_FILE_MAX_BYTES, "webhooks.hmac_key_file")
    except OSError as exc:
        problems.add(f"webhooks.hmac_key_file: cannot read {path}: {read_failure(exc)} "
                     f"({origin})")
        return None
    try:
        key = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        key = ""
    if len(key) < 16 or not key.isprintable():
        problems.add(f"webhooks.hmac_key_file: {path} holds no key of at least 16 printable "
                     f"characters ({origin})")
        return None
    problems.known.add(key)
    return SecretStr(key)


def _read_state_url_file(settings: Settings, problems: Problems) -> SecretStr | None:
    """``state_url_file``, read now like a key file (a regular file, bounded; its one
    line, surrounding whitespace taken off), checked as ``state_url`` is. Problems name
    the file, never its text."""
    path = settings.state_url_file
    if path is None:
        return None
    origin = settings.source_of("state_url_file", long=True)
    try:
        data, _ = read_regular_file(Path(path), KEY_FILE_MAX_BYTES, "state_url_file")
        text = data.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(f"state_url_file: cannot read {path}: {read_failure(exc)} ({origin})")
        return None
    problems.known.add(text)
    try:
        url = check_state_url(text)
    except PydanticCustomError as exc:
        problems.add(f"state_url_file: {path} holds no usable URL: it {exc.message()} "
                     f"({origin})")
        return None
    return url if isinstance(url, SecretStr) else None


def _alert_problems(settings: Settings) -> list[str]:
    """What only the URLs of the list and of the file together show: a URL given twice,
    a kind routed to tags that no URL carries (its alerts would go nowhere)."""
    alerts = settings.alerts
    urls = alerts.channel_urls()
    lines: list[str] = []
    read = alerts.urls_file_read()
    for first, again in duplicates(urls):
        where = "" if read is None else f" ({read.origin.long()})"
        lines.append(f"alerts.urls_file: {again.where} is the same URL as {first.where}{where}")
    carried = tags_of(urls)
    for kind, tags in alerts.routes:
        if not carried.intersection(tags):
            lines.append(
                f"alerts.routes: {kind} is routed to {', '.join(tags)}, a tag no alert URL "
                f"carries ({settings.source_of('alerts.routes', long=True)})"
            )
    return lines


def _origins(givens: Sequence[Given]) -> dict[str, Origin]:
    """Where each value came from: the highest-priority source that gave it."""
    origins: dict[str, Origin] = {}
    for given in reversed(givens):
        origins.update(given.origins)
    return origins
