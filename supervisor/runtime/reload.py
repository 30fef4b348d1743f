"""Reloading the configuration on SIGHUP, without losing supervision state.

``Reloader.reload`` loads the settings again exactly as at start (the same command-line
overrides and config path; the environment, the config file and the key read afresh).
An invalid result is one ``config.reload_failed`` event (level error) with the one-line
problems, and the settings in force stay as they were. A valid one is applied by the
``apply`` callback and reported as ``config.reloaded`` with the keys that changed. Keys
that need a restart (``RESTART_ONLY``) keep their old value; the event names them in
``restart_required``.

Applying is a rebuild: ``wiring.rebuild`` builds the running parts again from the new
settings, handed what must survive (the store with the records, backoff and give-ups in
it, the rate gate's pause, the supervisor's auth block and last success), and the
service swaps them in between two polls (see ``supervisor.service``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from supervisor.config.model import Settings, setting_keys
from supervisor.config.problems import ConfigError
from supervisor.domain import events as ev

log = structlog.get_logger("supervisor.reload")

RESTART_ONLY = ("http_listen", "http_auth_file", "http_metrics_auth", "alerts", "webhooks",
                "state_url", "state_url_file", "ha")
"""Settings a running daemon cannot change; a new value waits for the next start."""


def _value(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    if key == "api_key" and value is not None:
        return value.get_secret_value()
    if key == "alerts":  # what the channels are made of, not who could read the URLs file
        return value.model_dump(), [(u.url, u.tags) for u in value.channel_urls()]
    return value


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The setting keys whose value differs, in reference order (``api_key``: by value)."""
    return [key for key in setting_keys() if _value(old, key) != _value(new, key)]


class Reloader:
    def __init__(
        self,
        load: Callable[[], Settings],
        settings: Settings,
        apply: Callable[[Settings, Settings], Awaitable[None]],
        *,
        reported: Callable[[bool], None] | None = None,
    ) -> None:
        self._load = load
        self._apply = apply
        self._reported = reported
        self.settings = settings

    async def reload(self) -> bool:
        """Load, validate and apply the configuration; False if it was refused."""
        old = self.settings
        try:
            new = self._load()
        except ConfigError as exc:
            log.error(ev.CONFIG_RELOAD_FAILED, problems=exc.problems, kept="previous")
            self._report(ok=False)
            return False
        restart_required = [key for key in RESTART_ONLY if _value(old, key) != _value(new, key)]
        if restart_required:
            new = new.model_copy(update={key: getattr(old, key) for key in restart_required})
        changed = changed_keys(old, new)
        await self._apply(old, new)
        self.settings = new
        log.info(
            ev.CONFIG_RELOADED,
            changed=changed,
            restart_required=restart_required,
            config_file=None if new.config_file is None else str(new.config_file),
        )
        self._report(ok=True)
        return True

    def _report(self, *, ok: bool) -> None:
        if self._reported is not None:
            self._reported(ok)
