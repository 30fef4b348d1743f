"""``render_settings``: the effective configuration as TOML, each value with its source."""

from __future__ import annotations

import json
from typing import Any

from supervisor.config.model import Settings, setting_keys
from supervisor.config.problems import MASK

__all__ = ["render_settings"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


def render_settings(settings: Settings) -> str:
    """The effective configuration as TOML, each value's source as a trailing comment.

    The API key is shown as ``"********"``, never its value.
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
