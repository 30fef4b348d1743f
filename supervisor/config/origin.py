"""Where a setting's value came from, and what one source gave.

Every source (the command line, the environment, the key's own source, the config file,
the state file's default) keeps a ``Given``: the raw values it gave, by dotted key
(``poll_interval``, ``backoff.initial``), and the ``Origin`` of each. Problem lines name
a value's origin with ``long()``, ``render_settings`` with ``short()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

__all__ = ["DEFAULT", "Given", "Origin", "origin_of"]


class Origin(msgspec.Struct, frozen=True):
    kind: Literal["default", "code", "cli", "env", "config", "credential", "secret", "file"]
    where: str = ""

    def long(self) -> str:
        """For problem lines: ``from environment variable X``, or ``default``."""
        return {
            "default": f"default, {self.where}" if self.where else "default",
            "code": "set in code",
            "cli": f"from command line {self.where}",
            "env": f"from environment variable {self.where}",
            "config": f"from {self.where}",
            "credential": f"from credential {self.where}",
            "secret": f"from secret file {self.where}",
            "file": f"from file {self.where}",
        }[self.kind]

    def short(self) -> str:
        """For ``render_settings`` comments: ``env X``, ``default``, a path..."""
        return {
            "default": "default",
            "code": "set in code",
            "cli": f"command line {self.where}",
            "env": f"env {self.where}",
            "config": self.where,
            "credential": f"credential {self.where}",
            "secret": f"secret file {self.where}",
            "file": f"file {self.where}",
        }[self.kind]


DEFAULT = Origin("default")


def origin_of(origins: Mapping[str, Origin], key: str) -> Origin:
    """Where a key's value came from: ``DEFAULT`` when no source gave it."""
    return origins.get(key, DEFAULT)


class Given(msgspec.Struct):
    """What one source gave: raw values by dotted key, and where each came from."""

    values: dict[str, Any] = msgspec.field(default_factory=dict)
    origins: dict[str, Origin] = msgspec.field(default_factory=dict)

    def put(self, key: str, value: Any, origin: Origin) -> None:
        self.values[key] = value
        self.origins[key] = origin

    def nested(self) -> dict[str, Any]:
        """The values as pydantic takes them: dotted keys as tables."""
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            head, _, tail = key.partition(".")
            if tail:
                out.setdefault(head, {})[tail] = value
            else:
                out[head] = value
        return out
