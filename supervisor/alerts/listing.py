"""``alerts list``: the open alert episodes from the state file, as a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from supervisor.domain.episodes import Episode
from supervisor.printable import printable, table
from supervisor.state.report import iso, span

__all__ = ["episode_item", "render_episodes"]


def episode_item(episode: Episode, now: float) -> dict[str, Any]:
    """One open episode as ``--json`` shows it."""
    return {
        "kind": episode.kind.value,
        "session_id": episode.subject or None,
        "session_name": episode.session_name or None,
        "status": episode.status or None,
        "opened_at": iso(episode.opened_at),
        "open_for_s": round(max(0.0, now - episode.opened_at), 3),
        "detail": episode.detail or None,
    }


def render_episodes(episodes: Sequence[Episode], now: float, *, as_json: bool,
                    location: str) -> str:
    """The open episodes, oldest first: ``KIND SESSION NAME STATUS OPENED FOR DETAIL``,
    and a line saying how many, from which file."""
    ordered = sorted(episodes, key=lambda e: (e.opened_at, e.kind.value, e.subject))
    if as_json:
        return json.dumps(
            {"state_path": location, "episodes": [episode_item(e, now) for e in ordered]},
            indent=2,
        )
    rows = [
        (e.kind.value, e.subject, e.session_name, e.status, iso(e.opened_at),
         span(now - e.opened_at), e.detail)
        for e in ordered
    ]
    header = ("KIND", "SESSION", "NAME", "STATUS", "OPENED", "FOR", "DETAIL")
    summary = printable(f"{len(ordered)} open episode(s) in {location}")
    return f"{table(header, rows)}\n{summary}" if rows else summary
