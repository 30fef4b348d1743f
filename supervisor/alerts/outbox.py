"""The outbox: alert transitions waiting to be sent, one row per channel, kept in the state
store so that a restart neither loses nor repeats them. This module holds only the
protocol and its row; the store implements it (``state/``), the sender uses it.

Two senders on one store (a ``check`` beside another, or beside a daemon whose heartbeat it
could not see) never send one row twice: before sending a group, a sender *claims* its
rows (``claim``), moving their ``next_try_at`` past the send's timeout in one write
transaction, all or none; the other sees them as waiting. A sender that dies holding a
claim delays the rows by that lease, never loses them.

``Pending`` is defined in ``supervisor.domain.episodes`` (the store returns it, and
``state/`` may import only the domain) and is re-exported here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from supervisor.domain.episodes import Pending, Transition

__all__ = ["Outbox", "Pending"]

_T = TypeVar("_T")


class Outbox(Protocol):
    async def run(self, work: Callable[[], _T]) -> _T:  # the store's worker thread (Store.run)
        ...

    def enqueue(
        self, channels: Sequence[str], transitions: Sequence[Transition], now: float
    ) -> None: ...

    # next_try_at <= now, oldest first
    def due(self, channel: str, now: float, limit: int) -> list[Pending]: ...

    # Marks the rows taken by this sender until ``until`` (their next_try_at), if every
    # one is still due at ``now``; False, marking none, when another sender has one.
    def claim(self, ids: Sequence[int], now: float, until: float) -> bool: ...

    def delivered(self, ids: Sequence[int]) -> None: ...

    def retry(self, ids: Sequence[int], next_try_at: float) -> None: ...  # attempts += 1

    def expire(self, created_before: float) -> int: ...  # drops, returns how many

    def trim(self, keep: int) -> int: ...  # drops the oldest beyond keep rows; how many

    def pending_count(self) -> int: ...
