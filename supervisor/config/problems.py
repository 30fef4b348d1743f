"""Problems: what is wrong with a configuration, one line each, naming the key and its source.

``Problems`` collects the lines of one load in the order they are found (while the sources
are read, then pydantic's validation errors, turned into lines by ``validation_problems``),
and every key value it has seen, so that no line ever shows one. ``ConfigError`` carries
them all at once. A rejected value is shown as a short excerpt, and never when it is, holds
or looks like a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from supervisor.config.origin import Origin, origin_of
from supervisor.domain.secrets import Secrets

__all__ = ["MASK", "TOKEN_LIKE", "ConfigError", "Problems", "validation_problems"]

MASK = "********"
_EXCERPT_MAX = 24  # characters of a rejected input shown in a problem line


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` holds one line per problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Problems:
    """The problem lines of one load, and every key value seen (kept secret even in a
    traceback's locals), so that no line shows one."""

    __slots__ = ("key_reported", "known", "lines")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.known = Secrets()  # the key values seen; Secrets keeps them out of its repr
        self.key_reported = False  # a problem about the key is already in ``lines``

    def add(self, line: str) -> None:
        self.lines.append(line)

    def key_problem(self, line: str) -> None:
        self.lines.append(line)
        self.key_reported = True

    def remember(self, value: Any) -> None:
        """Note a value that is, or may be, a key: no problem line will show it."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            self.known.add(value.strip())


# --- excerpts of rejected values ---------------------------------------------------------


# A bare run of 16 or more letters, digits, "_" and "-", with letters and digits both:
# what an API key or a token looks like. Such a value is never echoed, even where it was
# not given as a key (``config --base-url "$KEY"``, a key pasted into the wrong flag).
TOKEN_LIKE = re.compile(r"(?=[^0-9]*[0-9])(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9_-]{16,}")


def _excerpt(value: Any, known: Secrets) -> str:
    """A rejected value as a problem line shows it: at most ``_EXCERPT_MAX`` characters,
    and never a secret: a known key, or anything that looks like one, is not shown."""
    if isinstance(value, SecretStr):
        return MASK
    text = value if isinstance(value, str) else repr(value)
    if known.holds(text):
        return MASK
    if isinstance(value, str) and TOKEN_LIKE.fullmatch(text.strip()):
        return f"a value of {len(text)} characters, not shown"
    if isinstance(value, str) and (
        not text or not text.isprintable() or any(ch in text for ch in " ,;()'\"")
    ):
        text = repr(text)  # quoted where bare text would blur into the message
    if len(text) > _EXCERPT_MAX:
        text = text[: _EXCERPT_MAX - 3] + "..."
    return text


def _url_excerpt(value: str, known: Secrets) -> str:
    """A rejected URL (``base_url``, ``alerts.alertmanager_url``...) as a problem line
    shows it: its scheme and host (and port) only, when it has them, and otherwise not at
    all: a path, a query or a user name can hold anything, and a value that is no URL may
    be a key given in the wrong place (with no key configured, there is none to compare
    it to)."""
    text = value.strip()
    parts = urlsplit(text)
    where = parts.netloc.rpartition("@")[2]  # never a user name or password
    if "://" not in text or not parts.scheme or not where or not where.isprintable():
        return f"a value that is not a URL ({len(text)} characters)"
    shown = f"{parts.scheme}://{where}"
    if known.holds(shown):
        return MASK
    return shown if len(shown) <= 80 else shown[:77] + "..."


# --- pydantic's errors as problem lines ---------------------------------------------------

# Keys whose rejected value is a URL: shown as its scheme and host only.
_URL_KEYS = frozenset({"base_url", "alerts.alertmanager_url", "alerts.status_page_url"})
# Keys whose rejected value is never shown: the key, the alert URLs (their line says which
# item, and of what scheme), the webhooks' HMAC key, the database's URL.
_UNSHOWN = frozenset({"api_key", "alerts.urls", "webhooks.hmac_key", "state_url"})

_MESSAGES: dict[str, str] = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "path_type": "must be a path",
    "literal_error": "must be one of {expected}",
    "extra_forbidden": "unknown key",
    "model_type": "must be a table",
    "dict_type": "must be a table",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
}


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _message(error: Mapping[str, Any]) -> str:
    template = _MESSAGES.get(error["type"])
    if template is None:
        return str(error["msg"])  # our own PydanticCustomError text, or pydantic's wording
    ctx = {k: _number(v) for k, v in (error.get("ctx") or {}).items()}
    try:
        return template.format(**ctx)
    except KeyError:
        return str(error["msg"])


def validation_problems(
    exc: ValidationError, origins: Mapping[str, Origin], known: Secrets
) -> list[str]:
    """One line per validation error: the key, what is wrong, the value (an excerpt) and
    where it came from."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        names = [part for part in error["loc"] if isinstance(part, str)]
        if error["type"] == "status_overlap":
            for status, first, second in ctx["overlaps"]:
                a, b = f"statuses.{first}", f"statuses.{second}"
                lines.append(
                    f"statuses: {status} is in both {a} ({origin_of(origins, a).long()}) "
                    f"and {b} ({origin_of(origins, b).long()})"
                )
            continue
        if "field" in ctx:
            names.append(str(ctx["field"]))
        key = ".".join(names) or "settings"
        origin = origin_of(origins, key)
        detail: list[str] = []
        given = ctx["value"] if "value" in ctx else error.get("input")
        if key in _URL_KEYS and isinstance(given, str):
            detail.append(f"got {_url_excerpt(given, known)}")
        elif (key not in _UNSHOWN and not isinstance(given, Mapping)
              and error["type"] != "missing"):
            detail.append(f"got {_excerpt(given, known)}")
        where = origin.long()
        if "other" in ctx:
            other = str(ctx["other"])
            other_origin = origin_of(origins, other)
            where += f"; {other} " + (
                "is the default" if other_origin.kind == "default" else other_origin.long()
            )
        detail.append(where)
        lines.append(f"{key}: {_message(error)} ({', '.join(detail)})")
    return lines
