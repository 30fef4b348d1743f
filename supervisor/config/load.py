"""``load_settings``: every source read once, merged by pydantic-settings, validated.

The sources (``supervisor.config.sources``) are built for each call and handed to the
model as ``_build_sources``, pydantic-settings' own way to pass pre-built sources in (its
``CliApp`` does the same): nothing outside the call holds them, so loads may run side by
side, and ``Settings.settings_customise_sources`` keeps to keyword arguments for settings
built in code. A ``Settings`` subclass made per load would do as well, but defining one
rebuilds the model's schema (about 20 ms here, on every ``check``).

Every problem, whether found while reading a source or while validating, becomes one line
naming the key and its source, and all of them are raised together as ``ConfigError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import PydanticBaseSettingsSource

from supervisor.config.key import API_KEY_ENV, API_KEY_FILE_NAME
from supervisor.config.model import Settings
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
    return settings


def _origins(givens: Sequence[Given]) -> dict[str, Origin]:
    """Where each value came from: the highest-priority source that gave it."""
    origins: dict[str, Origin] = {}
    for given in reversed(givens):
        origins.update(given.origins)
    return origins
