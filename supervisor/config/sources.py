"""The sources of the settings: pydantic-settings' own, each keeping what it gave.

Highest priority first (``load_settings`` builds them in this order and hands them to
pydantic-settings, which merges them key by key)::

    command line   CommandLineSource (an InitSettingsSource): the mapping the CLI hands in
    environment    EnvironmentSource (an EnvSettingsSource): WASEND_SUPERVISOR_<KEY>, tables
                   nested with "__", and WASEND_BASE_URL
    the key        KeySource: WASEND_API_KEY, or api_key_file (command line, environment,
                   config file), or wasend_api_key in $CREDENTIALS_DIRECTORY or /run/secrets
    config file    ConfigFileSource (a TomlConfigSettingsSource): --config PATH or
                   WASEND_SUPERVISOR_CONFIG; none given: no file is read
    defaults       StateDefaultSource (where the state file lives), then the model's defaults

Each source keeps a ``Given``: what it gave, by dotted key, and where each value came from;
that is how every value's origin is known, for problem lines and ``config``'s output.

Where pydantic-settings' sources are configured or subclassed, and why (2.16):

* ``EnvSettingsSource`` reads ``os.environ``: it is fed the mapping ``load_settings`` is
  given, only its upper-case ``WASEND_`` names, so that a name matches exactly as written.
  Lists carry ``NoDecode`` so that comma-separated text reaches our validator (its JSON
  decoding would abort with ``SettingsError``). A table is read from its keys only
  (``WASEND_SUPERVISOR_BACKOFF__MAX``), and a variable that names no key is ignored, as any
  unknown variable is. The key's variables are the key's source's.
* ``TomlConfigSettingsSource`` skips a missing file silently and lets ``TOMLDecodeError``
  escape: the file is read through ``read_regular_file`` (a regular file, size-limited,
  never blocking) and every failure is a problem line.
* ``SecretsSettingsSource`` names its files after the env prefix (``wasend_supervisor_api_key``)
  and warns about a missing directory: the key has a source of its own (``KeySource``),
  which also keeps the key's precedence and its file checks.
* The command line and the config file are vetted before pydantic sees them (unknown keys,
  with a guess at the key meant, in the order given; a key given where keys are refused; a
  table given as a value), and a relative path in the config file is taken from its folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

from supervisor.config.files import read_failure, read_regular_file
from supervisor.config.key import (
    API_KEY_ENV,
    API_KEY_FILE_NAME,
    CONTAINER_SECRETS_DIR,
    CREDENTIALS_ENV,
    ApiKeySource,
    KeyKind,
)
from supervisor.config.model import TABLES, setting_keys
from supervisor.config.origin import Given, Origin
from supervisor.config.problems import Problems
from supervisor.state.store import MEMORY

__all__ = [
    "BASE_URL_ENV",
    "CONFIG_ENV",
    "CONFIG_FILE_MAX_BYTES",
    "ENV_PREFIX",
    "STATE_FILE_NAME",
    "CommandLineSource",
    "ConfigFileSource",
    "EnvironmentSource",
    "KeySource",
    "StateDefaultSource",
    "cli_flag",
    "config_file_of",
    "default_state_path",
    "env_var_names",
    "secret_dirs",
]

ENV_PREFIX = "WASEND_SUPERVISOR_"
BASE_URL_ENV = "WASEND_BASE_URL"
CONFIG_ENV = "WASEND_SUPERVISOR_CONFIG"
STATE_FILE_NAME = "state.db"

CONFIG_FILE_MAX_BYTES = 1024 * 1024
"""A configuration file longer than this is refused, not read on."""

_PATH_KEYS = frozenset({"api_key_file", "state_path", "alerts.urls_file", "http_auth_file",
                        "webhooks.hmac_key_file", "state_url_file"})


def env_var_names(key: str) -> tuple[str, ...]:
    """The environment variables a key is read from, the one that wins first."""
    if key == "api_key":
        return (API_KEY_ENV,)
    name = ENV_PREFIX + key.upper().replace(".", "__")
    if key == "base_url":
        return (name, BASE_URL_ENV)
    return (name,)


def cli_flag(key: str) -> str:
    """The flag named in problem lines for a key given on the command line: ``--backoff-max``."""
    return "--" + key.replace(".", "-").replace("_", "-")


def default_state_path(env: Mapping[str, str]) -> tuple[Path, str]:
    """Where the state file lives when ``state_path`` is not set, and why there:
    ``$STATE_DIRECTORY/state.db`` (systemd's ``StateDirectory=``; the first of several),
    else ``$XDG_STATE_HOME/wasend-supervisor/state.db`` (an absolute one only, as the XDG
    specification says), else ``~/.local/state/wasend-supervisor/state.db``."""
    first = env.get("STATE_DIRECTORY", "").split(":")[0].strip()
    if first:
        return Path(first) / STATE_FILE_NAME, "$STATE_DIRECTORY"
    xdg = env.get("XDG_STATE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "wasend-supervisor" / STATE_FILE_NAME, "$XDG_STATE_HOME"
    home = env.get("HOME", "").strip()
    base = Path(home) if home else Path.home()
    return base / ".local" / "state" / "wasend-supervisor" / STATE_FILE_NAME, "~/.local/state"


def secret_dirs(env: Mapping[str, str], given: Sequence[Path] | None) -> list[Path]:
    """Where a ``wasend_api_key`` file is looked for: ``given``, else
    ``$CREDENTIALS_DIRECTORY`` (when set) then ``/run/secrets``."""
    if given is not None:
        return list(given)
    dirs = [Path(env[CREDENTIALS_ENV])] if env.get(CREDENTIALS_ENV) else []
    return [*dirs, CONTAINER_SECRETS_DIR]


def config_file_of(config_path: Path | None, env: Mapping[str, str]) -> tuple[Path, Origin] | None:
    """The config file to read, and who named it: ``--config``, else
    ``WASEND_SUPERVISOR_CONFIG`` (when not empty), else none."""
    if config_path is not None:
        return Path(config_path).expanduser(), Origin("cli", "--config")
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser(), Origin("env", CONFIG_ENV)
    return None


# --- vetting what a mapping gives (the command line, the config file) ---------------------


def _unknown(key: str) -> str:
    """``unknown key``, with a guess at the key meant when one is close."""
    table, _, name = key.rpartition(".")
    if table in TABLES:
        candidates = [f"{table}.{sub}" for sub in TABLES[table].model_fields]
    else:
        candidates = [*setting_keys(), *TABLES]
    names = {c.rpartition(".")[2] if table else c: c for c in candidates}
    # Imported here: only this message needs it, and a check that starts well never does.
    import difflib  # noqa: PLC0415

    close = difflib.get_close_matches(name if table else key, list(names), n=1, cutoff=0.75)
    return f"unknown key, did you mean {names[close[0]]}?" if close else "unknown key"


def _path(value: Any, base: Path | None) -> Any:
    """A path key's value as a path: ``~`` expanded, and a relative one taken from ``base``
    (the config file's folder). Anything else is left for pydantic (or the key's source)
    to report; ``:memory:`` is no path."""
    if not isinstance(value, str | Path) or str(value).strip() in ("", MEMORY):
        return value
    path = Path(value).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _vet(
    data: Mapping[str, Any],
    origin_of: Callable[[str], Origin],
    problems: Problems,
    *,
    base: Path | None = None,
) -> Given:
    """What a TOML document or a CLI mapping (dotted keys or tables) gives, and the
    problems with it: unknown keys, the key itself, a table given as a value."""
    given = Given()

    def put(key: str, value: Any) -> None:
        origin = origin_of(key)
        if value is None:  # the CLI passes None for a flag that was not given
            return
        if key == "api_key":
            problems.remember(value)
            where = "on the command line" if origin.kind == "cli" else "in a config file"
            problems.key_problem(
                f"api_key: cannot be given {where}; use {API_KEY_ENV}, a credential file "
                f"named {API_KEY_FILE_NAME}, or api_key_file ({origin.long()})"
            )
        elif key not in setting_keys():
            problems.add(f"{key}: {_unknown(key)} ({origin.long()})")
        elif key in _PATH_KEYS:
            given.put(key, _path(value, base), origin)
        else:
            given.put(key, value, origin)

    for raw_key, value in data.items():
        key = str(raw_key)
        table = TABLES.get(key)
        if table is None:
            put(key, value)
        elif isinstance(value, Mapping):
            for sub, sub_value in value.items():
                put(f"{key}.{sub}", sub_value)
        elif value is not None:
            subs = ", ".join(table.model_fields)
            problems.add(f"{key}: must be a table of {subs} ({origin_of(key).long()})")
    return given


# --- the sources ----------------------------------------------------------------------------


class CommandLineSource(InitSettingsSource):
    """The command line's values: a mapping of flat keys (``poll_interval``), dotted keys
    (``backoff.initial``) or tables; a value of None is a flag not given."""

    def __init__(
        self, settings_cls: type[BaseSettings], values: Mapping[str, Any], problems: Problems
    ) -> None:
        self.given = _vet(values, lambda key: Origin("cli", cli_flag(key)), problems)
        super().__init__(settings_cls, self.given.nested())


class EnvironmentSource(EnvSettingsSource):
    """The environment: ``WASEND_SUPERVISOR_<KEY>``, table keys as ``<TABLE>__<KEY>``, and
    ``WASEND_BASE_URL`` after ``WASEND_SUPERVISOR_BASE_URL``; read from the mapping given."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        # Only upper-case WASEND_ names: every name this source reads is written so, and
        # matching them case-insensitively must not make another spelling one of them.
        self._ours = {
            name: value
            for name, value in env.items()
            if name.startswith("WASEND_") and name == name.upper()
        }
        super().__init__(
            settings_cls,
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
            env_ignore_empty=False,
            env_parse_none_str=None,
        )
        self.given = Given()
        for key, value in self._flat(super().__call__()):
            names = env_var_names(key)
            name = next((n for n in names if n in self._ours), names[0])
            self.given.put(key, _path(value, None) if key in _PATH_KEYS else value,
                           Origin("env", name))

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # As EnvSettingsSource keeps os.environ when case-insensitive: names lower-cased.
        return {name.lower(): value for name, value in self._ours.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "api_key" or field_name in TABLES:
            return None, field_name, False  # the key's own source; a table: by its keys
        value, key, is_complex = super().get_field_value(field, field_name)
        if value is None and field_name == "base_url":
            value = self.env_vars.get(BASE_URL_ENV.lower())
        return value, key, is_complex

    def explode_env_vars(
        self, field_name: str, field: FieldInfo, env_vars: Mapping[str, str | None]
    ) -> dict[str, Any]:
        table = TABLES.get(field_name)
        if table is None:
            return {}  # only a table has keys of its own
        found = super().explode_env_vars(field_name, field, env_vars)
        return {k: v for k, v in found.items() if k in table.model_fields and isinstance(v, str)}

    @staticmethod
    def _flat(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """What the source gave, by dotted key."""
        flat: list[tuple[str, Any]] = []
        for key, value in data.items():
            if key in TABLES:
                flat.extend((f"{key}.{sub}", sub_value) for sub, sub_value in value.items())
            else:
                flat.append((key, value))
        return flat

    def __call__(self) -> dict[str, Any]:
        return self.given.nested()


_TOML_POSITION = re.compile(
    r"^(?P<msg>.*?) \((?P<where>at line \d+, column \d+|at end of document)\)$"
)


class ConfigFileSource(TomlConfigSettingsSource):
    """The TOML config file. ``failed``: it could not be read or parsed (the problem is
    in ``problems``, and nothing of it is used)."""

    def __init__(
        self, settings_cls: type[BaseSettings], path: Path, origin: Origin, problems: Problems
    ) -> None:
        self.path, self.origin = path, origin
        self._problems = problems
        self.failed = False
        self.given = Given()
        super().__init__(settings_cls, toml_file=path)

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        document = self._document()
        if document is None:
            self.failed = True
            return {}
        source = Origin("config", str(self.path))
        self.given = _vet(document, lambda _key: source, self._problems, base=self.path.parent)
        return self.given.nested()

    def _document(self) -> dict[str, Any] | None:
        """The parsed file, or None (and a problem) when it cannot be read or parsed."""
        path = self.path
        suffix = f" ({self.origin.long()})" if self.origin.kind == "env" else ""
        try:
            data = read_regular_file(path, CONFIG_FILE_MAX_BYTES, "a configuration file")[0]
            text = data.decode("utf-8")
        except FileNotFoundError:
            self._problems.add(f"config file {path}: not found{suffix}")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self._problems.add(f"config file {path}: cannot read: {read_failure(exc)}{suffix}")
            return None
        # Imported here: a check configured by its environment alone never loads it.
        import tomllib  # noqa: PLC0415

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            found = _TOML_POSITION.match(str(exc))
            detail = (
                f"invalid TOML {found['where']}: {found['msg']}"
                if found
                else f"invalid TOML: {exc}"
            )
            self._problems.add(f"config file {path}: {detail}")
            return None


class KeySource(PydanticBaseSettingsSource):
    """The API key, from the highest-priority place that offers one (a key or a key file):
    ``api_key_file`` on the command line; ``WASEND_API_KEY`` (or ``api_key_file`` in the
    environment; both is a problem); ``wasend_api_key`` in the secret directories; an
    ``api_key_file`` in the config file. ``source``: where it was found, or None."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        env: Mapping[str, str],
        dirs: Sequence[Path],
        *,
        cli: Given,
        environment: Given,
        config: Given | None,
        problems: Problems,
    ) -> None:
        super().__init__(settings_cls)
        self._env, self._dirs, self._problems = env, dirs, problems
        self.given = Given()
        self.source = self._find(cli, environment, config or Given())

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.given.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.given.nested()

    def _find(self, cli: Given, environment: Given, config: Given) -> ApiKeySource | None:
        env, problems = self._env, self._problems
        misplaced = ENV_PREFIX + "API_KEY"
        for name in (API_KEY_ENV, misplaced):
            problems.remember(env.get(name))
        if misplaced in env:
            problems.key_problem(
                f"api_key: {misplaced} is not read, the key's variable is {API_KEY_ENV} "
                f"(from environment variable {misplaced})"
            )

        if "api_key_file" in cli.values:
            return self._from_file(cli)

        direct = env.get(API_KEY_ENV)
        if direct is not None and "api_key_file" in environment.values:
            problems.key_problem(
                f"api_key: both {API_KEY_ENV} and {ENV_PREFIX}API_KEY_FILE are set; set only "
                "one (from environment)"
            )
            return None
        if direct is not None:
            source = ApiKeySource("env", API_KEY_ENV, SecretStr(direct.strip()))
            self.given.put("api_key", SecretStr(direct), source.origin())
            return source
        if "api_key_file" in environment.values:
            return self._from_file(environment)

        credentials = env.get(CREDENTIALS_ENV)
        for directory in self._dirs:
            path = directory / API_KEY_FILE_NAME
            kind: KeyKind = (
                "credential" if credentials and directory == Path(credentials) else "secret"
            )
            source = ApiKeySource(kind, str(path))
            try:
                if not path.exists():
                    continue
                key = source.fetch()
            except (OSError, UnicodeDecodeError) as exc:
                problems.key_problem(
                    f"api_key: cannot read {source.describe()}: {read_failure(exc)}"
                )
                return None
            problems.remember(key)
            self.given.put("api_key", key, source.origin())
            return source

        if "api_key_file" in config.values:
            return self._from_file(config)
        return None

    def _from_file(self, given: Given) -> ApiKeySource | None:
        path = given.values["api_key_file"]
        origin = given.origins["api_key_file"]
        if not isinstance(path, Path):
            self._problems.key_reported = True  # pydantic reports the bad api_key_file value
            if path == "":
                self._problems.add(f"api_key_file: must not be empty ({origin.long()})")
            return None
        source = ApiKeySource("file", str(path))
        try:
            key = source.fetch()
        except (OSError, UnicodeDecodeError) as exc:
            self._problems.key_problem(
                f"api_key_file: cannot read {path}: {read_failure(exc)} ({origin.long()})"
            )
            return None
        self._problems.remember(key)
        self.given.put("api_key", key, source.origin())
        return source


class StateDefaultSource(PydanticBaseSettingsSource):
    """``state_path``'s default (``default_state_path``), when no source above gave one
    (nor ``state_url`` or ``state_url_file``: the state is in PostgreSQL then)."""

    def __init__(
        self, settings_cls: type[BaseSettings], env: Mapping[str, str], problems: Problems
    ) -> None:
        super().__init__(settings_cls)
        self._env, self._problems = env, problems
        self.given = Given()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.given.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.current_state.keys() & {"state_path", "state_url", "state_url_file"}:
            return {}  # what the sources above merged
        try:
            path, why = default_state_path(self._env)
        except RuntimeError:  # no HOME and no user database entry
            self._problems.add(
                "state_path: no default location (none of STATE_DIRECTORY, XDG_STATE_HOME "
                "and HOME is set); set state_path (default)"
            )
            return {}
        self.given.put("state_path", path, Origin("default", why))
        return self.given.nested()
