"""The API key: where it came from (``ApiKeySource``), and reading it from its file again.

The key is a ``SecretStr`` from the moment it is read; it never appears in a repr or a
problem line. Which place the key is taken from is the key's own settings source, in
``supervisor.config.sources``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from supervisor.config.files import read_failure, read_regular_file, readable_by_others
from supervisor.config.origin import Origin
from supervisor.config.problems import ConfigError
from supervisor.domain.api_key import key_problem

__all__ = [
    "API_KEY_ENV",
    "API_KEY_FILE_NAME",
    "CONTAINER_SECRETS_DIR",
    "CREDENTIALS_ENV",
    "KEY_FILE_MAX_BYTES",
    "ApiKeySource",
    "KeyKind",
]

API_KEY_ENV = "WASEND_API_KEY"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
API_KEY_FILE_NAME = "wasend_api_key"
CONTAINER_SECRETS_DIR = Path("/run/secrets")

KEY_FILE_MAX_BYTES = 64 * 1024
"""A key file longer than this is not a key file: it is refused, not read on."""

KeyKind = Literal["env", "credential", "secret", "file", "code"]


def _read_key(path: Path) -> tuple[SecretStr, os.stat_result]:
    """The stripped content of a key file, and its status (for its permissions); raises
    OSError or UnicodeDecodeError, never blocks (``read_regular_file``)."""
    data, info = read_regular_file(path, KEY_FILE_MAX_BYTES, "a key file")
    return SecretStr(data.decode("utf-8").strip()), info


class ApiKeySource:
    """Where the API key came from; ``read()`` fetches it again from that same place.

    Files (an ``api_key_file``, a systemd credential, a container secret) are re-read on every
    call, so a rotated key is picked up. A key from the environment cannot change inside a
    running process: ``read()`` returns the value seen at load.
    """

    __slots__ = ("_exposure", "_kind", "_location", "_reported", "_value")

    def __init__(self, kind: KeyKind, location: str, value: SecretStr | None = None) -> None:
        if kind in ("env", "code") and value is None:
            raise ValueError(f"an ApiKeySource of kind {kind!r} needs its value")
        self._kind: KeyKind = kind
        self._location = location
        self._value = value if kind in ("env", "code") else None
        self._exposure: tuple[int, str] | None = None  # (mode, who) at the last read
        self._reported: tuple[int, str] | None = None

    @property
    def kind(self) -> KeyKind:
        """``env``, ``credential``, ``secret``, ``file`` (api_key_file) or ``code``."""
        return self._kind

    @property
    def path(self) -> Path | None:
        """The file the key is read from, or None for a key from the environment or code."""
        return None if self._kind in ("env", "code") else Path(self._location)

    def describe(self) -> str:
        """E.g. ``environment variable WASEND_API_KEY`` or ``file /etc/wasend/key``."""
        return {
            "env": f"environment variable {self._location}",
            "credential": f"credential {self._location}",
            "secret": f"secret file {self._location}",
            "file": f"file {self._location}",
            "code": "value given in code",
        }[self._kind]

    def origin(self) -> Origin:
        """The key's origin, as problem lines and ``render_settings`` name it."""
        return Origin(self._kind, self._location)

    def fetch(self) -> SecretStr:
        """Read the key file (raises OSError or UnicodeDecodeError), noting who else may
        read it. A systemd credential is not checked: systemd keeps it in a directory
        only the service can open, whatever the file's own mode (0400 or 0440)."""
        key, info = _read_key(Path(self._location))
        who = None if self._kind == "credential" else readable_by_others(info)
        self._exposure = None if who is None else (stat.S_IMODE(info.st_mode), who)
        return key

    def exposure(self) -> tuple[int, str] | None:
        """``(mode, who)`` when the key file, at its last read, was readable by someone
        other than the supervisor (``who``: ``other users`` or ``group NAME``)."""
        return self._exposure

    def unreported_exposure(self) -> tuple[int, str] | None:
        """``exposure()``, once: None again until it changes (so that re-reading the key
        every ``auth_retry_interval`` does not repeat the warning)."""
        if self._exposure == self._reported:
            return None
        self._reported = self._exposure
        return self._exposure

    def read(self) -> SecretStr:
        """The key, read again. Raises ConfigError (one problem) if it is gone or unusable."""
        if self._value is not None:
            return self._value
        path = Path(self._location)
        try:
            key = self.fetch()
        except (OSError, UnicodeDecodeError) as exc:
            if self._kind == "file":
                problem = f"api_key_file: cannot read {path}: {read_failure(exc)}"
            else:
                problem = f"api_key: cannot read {self.describe()}: {read_failure(exc)}"
            raise ConfigError([problem]) from None
        reason = key_problem(key.get_secret_value())
        if reason is not None:
            raise ConfigError([f"api_key: {reason} (from {self.describe()})"])
        return key

    def __repr__(self) -> str:
        return f"ApiKeySource({self.describe()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiKeySource):
            return NotImplemented
        return (self._kind, self._location, self._value) == (
            other._kind,
            other._location,
            other._value,
        )

    def __hash__(self) -> int:
        return hash((self._kind, self._location))
