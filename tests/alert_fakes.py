"""Stand-ins for helper "delivery"'s ``supervisor.alerts.channels`` and
``supervisor.alerts.text``, with the contract's names and signatures, until its branch is
merged: ``install`` puts them in ``sys.modules`` only when the real modules are missing, so
the tests that use them run against the real ones once those exist."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from pydantic import SecretStr

from supervisor.domain.episodes import Change, Episode, Kind, Transition


class Message(msgspec.Struct, frozen=True):
    kind: Kind
    change: Change
    transitions: tuple[Transition, ...]
    title: str
    body: str


class DeliveryFailed(Exception):
    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel, self.reason = channel, reason


class AppriseChannel:
    def __init__(self, id: str, url: SecretStr, tags: Sequence[str] = ()) -> None:
        self.id, self.url, self.tags = id, url, tuple(tags)

    async def send(self, message: Message) -> None:
        raise DeliveryFailed(self.id, "the stand-in channel sends nothing")


class AlertmanagerChannel:
    def __init__(self, id: str, base_url: str, *, http: Any | None) -> None:
        self.id, self.base_url, self.http = id, base_url, http

    async def send(self, message: Message) -> None:
        raise DeliveryFailed(self.id, "the stand-in channel sends nothing")

    async def refresh(self, open: Sequence[Episode], now: float) -> None:
        return None


def _module(name: str, **members: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in members.items():
        setattr(module, key, value)
    return module


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-ins as ``supervisor.alerts.channels`` and ``.text``, where those are
    missing."""
    for name, members in (
        ("supervisor.alerts.text", {"Message": Message}),
        ("supervisor.alerts.channels", {"DeliveryFailed": DeliveryFailed,
                                        "AppriseChannel": AppriseChannel,
                                        "AlertmanagerChannel": AlertmanagerChannel}),
    ):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            monkeypatch.setitem(sys.modules, name, _module(name, **members))
