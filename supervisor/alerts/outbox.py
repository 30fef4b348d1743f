"""The outbox: alert transitions waiting to be sent, one row per channel, kept in the state
store so that a restart neither loses nor repeats them. This module holds only the
protocol and its row; the store implements it (``state/``), the sender uses it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import msgspec

from supervisor.domain.episodes import Transition

_T = TypeVar("_T")


class Pending(msgspec.Struct, frozen=True):
    id: int
    channel: str  # a channel's stable id, e.g. "apprise-1", "alertmanager"; never a URL
    transition: Transition
    created_at: float
    attempts: int = 0
    next_try_at: float = 0.0


class Outbox(Protocol):
    async def run(self, work: Callable[[], _T]) -> _T:  # the store's worker thread (Store.run)
        ...

    def enqueue(
        self, channels: Sequence[str], transitions: Sequence[Transition], now: float
    ) -> None: ...

    # next_try_at <= now, oldest first
    def due(self, channel: str, now: float, limit: int) -> list[Pending]: ...

    def delivered(self, ids: Sequence[int]) -> None: ...

    def retry(self, ids: Sequence[int], next_try_at: float) -> None: ...  # attempts += 1

    def expire(self, created_before: float) -> int: ...  # drops, returns how many

    def trim(self, keep: int) -> int: ...  # drops the oldest beyond keep rows; how many

    def pending_count(self) -> int: ...
