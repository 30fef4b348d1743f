"""``render_settings``: the effective configuration as TOML, each value with its source."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from supervisor.config.model import Settings, setting_keys
from supervisor.config.problems import MASK
from supervisor.state.store import describe_dsn

__all__ = ["render_settings"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


_ALERT_KEYS = frozenset({"alerts.urls", "alerts.urls_file", "alerts.routes",
                         "alerts.alertmanager_url"})


def _masked_url(url: str) -> str:
    """The Alertmanager URL as ``config`` shows it: its user name and password masked."""
    parts = urlsplit(url)
    userinfo, at, _host = parts.netloc.rpartition("@")
    return url if not at else url.replace(f"{userinfo}@", f"{MASK}@", 1)


def _alert_line(settings: Settings, key: str, name: str, value: Any) -> tuple[str, str]:
    """A line of the ``[alerts]`` table: the URLs as masks, with their count; the file's
    path with the number of URLs read from it; the routes as a table."""
    source = settings.source_of(key)
    if key == "alerts.urls":
        count = f"; {len(value)} URL{'s' * (len(value) != 1)}" if value else ""
        return f"{name} = {_toml_value([MASK] * len(value))}", source + count
    if key == "alerts.urls_file":
        read = settings.alerts.urls_file_read()
        if value is None:
            return f"# {name} = (not set)", source
        count = "" if read is None else f"; {len(read.urls)} URL{'s' * (len(read.urls) != 1)}"
        return f"{name} = {_toml_value(value)}", source + count
    if key == "alerts.routes":
        pairs = ", ".join(f"{kind} = {_toml_value(tags)}" for kind, tags in value)
        return f"{name} = {{{pairs}}}", source
    if value is None:
        return f"# {name} = (not set)", source
    return f"{name} = {_toml_value(_masked_url(value.get_secret_value()))}", source


def render_settings(settings: Settings) -> str:
    """The effective configuration as TOML, each value's source as a trailing comment.

    The API key is shown as ``"********"``, never its value; so is each alert URL, with
    their count, and the user name and password in the Alertmanager URL; ``state_url``
    as its host, port and database only.
    """
    head = ["# wasend-supervisor: effective configuration (source of each value at its right)"]
    where = settings.config_file_origin()
    if where is None:
        head.append("# config file: none")
    else:
        path, origin = where
        head.append(f"# config file: {path} ({origin.long()})")

    sections: dict[str, list[tuple[str, str]]] = {"": []}
    for key in setting_keys():
        table, _, name = key.rpartition(".")
        value: Any = settings
        for part in key.split("."):
            value = getattr(value, part)
        if key == "api_key" and value is not None:
            source = settings.api_key_source()
            comment = settings.source_of(key) if source is None else source.origin().short()
            line = (f'{name} = "{MASK}"', comment)
        elif key == "state_url" and value is not None:
            # The host, port and database only: never the user's password or the query.
            line = (f"{name} = {_toml_value(describe_dsn(value.get_secret_value()))}",
                    settings.source_of(key) + "; password and options not shown")
        elif key in _ALERT_KEYS:
            line = _alert_line(settings, key, name, value)
        elif key == "ha.enabled" and value is None:  # it follows where the state is
            on = "on: the state is in PostgreSQL" if settings.ha_enabled() else (
                "off: the state is in SQLite")
            line = (f"# {name} = (not set)", f"{settings.source_of(key)}; {on}")
        elif value is None:
            line = (f"# {name} = (not set)", settings.source_of(key))
        else:
            line = (f"{name} = {_toml_value(value)}", settings.source_of(key))
        sections.setdefault(table, []).append(line)

    out = [*head]
    for table, lines in sections.items():
        out.append("")
        if table:
            out.append(f"[{table}]")
        width = max(len(text) for text, _ in lines)
        out.extend(f"{text.ljust(width)}  # {comment}" for text, comment in lines)
    return "\n".join(out) + "\n"
