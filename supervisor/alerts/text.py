"""The words of an alert: one message for a group of transitions of one kind and change,
written for the person who has to act on it.

A message says which sessions (name and id), their status and since when, what the
supervisor did, what the person should do, and the host it came from. A group lists every
session: one per line while it is small, compactly (``name (id)``, comma-separated) when it
is large, and never more than ``BODY_LIMIT`` characters (the rest counted: "and N more").
``render_parts`` cuts a group to what one channel takes (its service's limit) in at most
``MAX_PARTS`` messages, each naming the next sessions.

What a message never holds: a secret (every value of the ``Secrets`` handed in is
replaced) and a QR payload (anything shaped like WhatsApp's pairing string is replaced by
``[QR code]``). Text from the API (names, statuses) is made ``printable``, so that a name
cannot end a line and forge another.

Pure: times are arguments (wall-clock epoch seconds), nothing is read from a clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import msgspec

from supervisor.domain.episodes import KEY_WIDE, Change, Kind, Transition
from supervisor.domain.secrets import Secrets
from supervisor.printable import printable

__all__ = ["BODY_LIMIT", "LIST_LINES", "MAX_PARTS", "QR_MASK", "TITLE_LIMIT", "Message",
           "advice", "headline", "render", "render_parts"]

BODY_LIMIT: Final = 60_000
"""The longest body: enough to name a storm of 1,000 sessions, small enough for any
channel (Apprise splits or truncates further where a service needs it)."""

TITLE_LIMIT: Final = 200
"""The longest title (an e-mail subject, a chat message's first line)."""

MAX_PARTS: Final = 3
"""The most messages one group is cut into for a channel that takes less than it needs."""

LIST_LINES: Final = 20
"""Up to this many sessions, one line each; beyond, the compact list."""

NAME_LIMIT: Final = 80
"""The longest session name or status shown (API text is not ours to bound)."""

QR_MASK: Final = "[QR code]"

# WhatsApp's pairing string: "2@" (a ref) then comma-separated base64 keys.
_QR = re.compile(r"\b\d@[A-Za-z0-9+/=_-]{8,}(?:,[A-Za-z0-9+/=_-]+)*")
# In free text (an episode's detail), also any long base64 run: no line for people needs one.
_BLOB = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
DETAIL_LIMIT: Final = 300


class Message(msgspec.Struct, frozen=True):
    """One alert as sent: a group of transitions of one kind and change, and its words."""

    kind: Kind
    change: Change
    transitions: tuple[Transition, ...]
    title: str
    body: str


# What each kind is called, in a title (one session / several).
_OPENED_TITLE: Final = {
    Kind.NEEDS_PERSON: ("WhatsApp session {name} needs a person: {status}",
                        "{count} WhatsApp sessions need a person"),
    Kind.GAVE_UP: ("Gave up restarting WhatsApp session {name}",
                   "Gave up restarting {count} WhatsApp sessions"),
    Kind.GONE: ("WhatsApp session {name} is gone from the WASend account",
                "{count} WhatsApp sessions are gone from the WASend account"),
    Kind.ZOMBIE: ("WhatsApp session {name} says {status} but its engine is not connected",
                  "{count} WhatsApp sessions say they work but their engine is not "
                  "connected"),
    Kind.AUTH_FAILED: ("The WASend API key was refused", "The WASend API key was refused"),
    Kind.API_UNREACHABLE: ("The WASend API is unreachable", "The WASend API is unreachable"),
    Kind.SUPERVISION_STOPPED: ("Supervision stopped: replica {name} cannot reach its database",
                               "Supervision stopped: replicas cannot reach their database"),
}
_RESOLVED_TITLE: Final = {
    Kind.NEEDS_PERSON: ("Resolved: WhatsApp session {name} no longer needs a person",
                        "Resolved: {count} WhatsApp sessions no longer need a person"),
    Kind.GAVE_UP: ("Resolved: WhatsApp session {name} is supervised again",
                   "Resolved: {count} WhatsApp sessions are supervised again"),
    Kind.GONE: ("Resolved: WhatsApp session {name} is back",
                "Resolved: {count} WhatsApp sessions are back"),
    Kind.ZOMBIE: ("Resolved: WhatsApp session {name} is connected again",
                  "Resolved: {count} WhatsApp sessions are connected again"),
    Kind.AUTH_FAILED: ("Resolved: the WASend API key works again",
                       "Resolved: the WASend API key works again"),
    Kind.API_UNREACHABLE: ("Resolved: the WASend API is reachable again",
                           "Resolved: the WASend API is reachable again"),
    Kind.SUPERVISION_STOPPED: ("Resolved: replica {name} reaches its database again",
                               "Resolved: replicas reach their database again"),
}
# What the supervisor did, when the episode does not say (its ``detail``).
_DID: Final = {
    Kind.NEEDS_PERSON: "A restart cannot fix this, so the supervisor leaves the session "
                       "alone and waits for a person.",
    Kind.GAVE_UP: "The supervisor stopped restarting it after repeated failed restarts; "
                  "it still tries again now and then.",
    Kind.GONE: "The WASend API no longer knows this session; the supervisor does nothing "
               "with it until it is back.",
    Kind.ZOMBIE: "Its status said it worked while its engine had lost the connection, so "
                 "no message could flow: the supervisor stops and restarts it, with the "
                 "usual backoff.",
    Kind.AUTH_FAILED: "The supervisor stopped calling the API; it re-reads the key and "
                      "tries it again now and then.",
    Kind.API_UNREACHABLE: "Polls of the WASend API keep failing; the supervisor keeps "
                          "trying, with backoff.",
    Kind.SUPERVISION_STOPPED: "The leading replica could not renew its lease in the "
                              "PostgreSQL database, so it stopped polling and restarting "
                              "before another could take over; it keeps trying, and "
                              "supervision resumes by itself when the database answers.",
}
_TODO: Final = {
    Kind.GAVE_UP: "Look at the session in the WASend dashboard. Once it can start, "
                  "`wasend-supervisor retry ID` has the supervisor restart it at once.",
    Kind.GONE: "If the session was deleted or renamed on purpose, remove it from the "
               "supervisor's sessions; otherwise create it again in the WASend dashboard.",
    Kind.ZOMBIE: "Usually nothing: the restart reconnects it, and a resolved message "
                 "follows. If it keeps coming back, look at the session in the WASend "
                 "dashboard (its phone may be offline, or logged out).",
    Kind.AUTH_FAILED: "Check the API key in the WASend dashboard and put the valid one "
                      "where the supervisor reads it (a reload or a key-file change is "
                      "picked up).",
    Kind.API_UNREACHABLE: "Check this host's network and DNS, and WASend's own status; "
                          "nothing needs restarting.",
    Kind.SUPERVISION_STOPPED: "Check the PostgreSQL server (state_url) and the network to "
                              "it: until it answers, no session is restarted.",
}
_KEY_WIDE: Final = KEY_WIDE


def advice(kind: Kind, change: Change, status_page_url: str = "") -> str:
    """What the person should do (a sentence)."""
    if change is Change.RESOLVED:
        return "Nothing: the supervisor has taken over again."
    if kind is Kind.NEEDS_PERSON:
        where = (f"open the status page ({clean(status_page_url)})" if status_page_url
                 else "open the WASend dashboard")
        return (f"For a QR code: {where} and scan the QR code with WhatsApp on the phone, "
                "under WhatsApp > Linked devices > Link a device. It expires within "
                "minutes; a new one is shown after it does.")
    return _TODO[kind]


def clean(text: str, limit: int = NAME_LIMIT) -> str:
    """Text from outside made safe to show: printable, no QR payload, at most ``limit``."""
    text = _QR.sub(QR_MASK, printable(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail(text: str) -> str:
    """An episode's line for people, as ``clean``, long base64 runs masked too."""
    return clean(_BLOB.sub(QR_MASK, text), DETAIL_LIMIT)


def when(at: float) -> str:
    """A wall-clock time for people: ``2026-12-01 11:02:03 UTC``."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _who(transition: Transition) -> str:
    episode = transition.episode
    name = clean(episode.session_name) or clean(episode.subject)
    return f"'{name}' ({clean(episode.subject)})" if episode.subject else f"'{name}'"


def headline(transition: Transition) -> str:
    """One transition in one line: the title of a message of one."""
    opened, _ = (_OPENED_TITLE if transition.change is Change.OPENED
                 else _RESOLVED_TITLE)[transition.episode.kind]
    return opened.format(name=_who(transition),
                         status=clean(transition.episode.status) or "unknown status")


def _line(transition: Transition) -> str:
    episode = transition.episode
    parts = [f"- {_who(transition)}" if episode.subject else "-"]
    if episode.status:
        parts.append(clean(episode.status))
    if transition.change is Change.OPENED:
        parts.append(f"since {when(episode.opened_at)}")
    else:
        parts.append(f"resolved {when(transition.at)}, after "
                     f"{_span(transition.at - episode.opened_at)}")
    if episode.detail and transition.change is Change.OPENED:
        parts.append(_detail(episode.detail))
    return ", ".join(parts) if episode.subject else " ".join(parts)


def _fitting(items: Sequence[str], sep: str, room: int) -> int:
    """How many of ``items``, from the first, fit in ``room`` characters joined by ``sep``."""
    used = 0
    for index, item in enumerate(items):
        used += len(item) + (len(sep) if index else 0)
        if used > room:
            return index
    return len(items)


def _bounded_list(items: Sequence[str], sep: str, room: int) -> str:
    """``items`` joined by ``sep`` within ``room`` characters; what does not fit counted."""
    if _fitting(items, sep, room) == len(items):
        return sep.join(items)
    out: list[str] = []
    used = 0
    for index, item in enumerate(items):
        rest = len(items) - index - 1
        tail = f"{sep}… and {rest} more" if rest else ""
        if used + len(item) + len(sep) + len(tail) > room:
            out.append(f"… and {len(items) - index} more")
            break
        out.append(item)
        used += len(item) + len(sep)
    return sep.join(out)


class _Draft(msgspec.Struct, frozen=True):
    """A group's words before they are cut to a channel's size: the title, the head (what
    every part repeats) and the list of sessions, joined by ``sep``."""

    ordered: tuple[Transition, ...]  # as given, in order
    title: str
    head: str
    items: tuple[str, ...]
    sep: str


def _draft(kind: Kind, change: Change, transitions: Sequence[Transition], host: str,
           status_page_url: str, secrets: Secrets | None) -> _Draft:
    if not transitions:
        raise ValueError("a message needs at least one transition")
    ordered = tuple(sorted(transitions, key=lambda t: (t.at, t.episode.subject)))
    # The words are made from copies with the secrets taken out before anything is cut
    # short (a cut could leave part of one); the message keeps the transitions as given.
    group = ordered if secrets is None else tuple(_redacted(t, secrets) for t in ordered)
    count = len(group)
    _, many = (_OPENED_TITLE if change is Change.OPENED else _RESOLVED_TITLE)[kind]
    title = headline(group[0]) if count == 1 else many.format(count=count)

    lines: list[str] = []
    if kind in _KEY_WIDE:
        first = group[0]
        if change is Change.OPENED:
            lines.append(f"Since: {when(first.episode.opened_at)}")
        else:
            lines.append(f"Resolved: {when(first.at)}, after "
                         f"{_span(first.at - first.episode.opened_at)}")
        if first.episode.detail and change is Change.OPENED:
            lines.append(f"Seen: {_detail(first.episode.detail)}")
    elif count == 1:
        first = group[0]
        episode = first.episode
        lines.append(f"Session: {clean(episode.session_name) or '-'} "
                     f"(id {clean(episode.subject)})")
        if episode.status:
            label = "Status" if change is Change.OPENED else "Status then"
            lines.append(f"{label}: {clean(episode.status)}")
        lines.append(f"Since: {when(episode.opened_at)}")
        if change is Change.RESOLVED:
            lines.append(f"Resolved: {when(first.at)}, after "
                         f"{_span(first.at - episode.opened_at)}")
        if episode.detail and change is Change.OPENED:
            lines.append(f"Seen: {_detail(episode.detail)}")
    else:
        start, end = when(group[0].at), when(group[-1].at)
        lines.append(f"Sessions: {count}, " + (f"at {start}" if start == end
                                                 else f"from {start} to {end}"))
    if change is Change.OPENED:
        lines.append(f"What the supervisor did: {_DID[kind]}")
    lines.append(f"What to do: {advice(kind, change, status_page_url)}")
    lines.append(f"Host: {clean(host)}")
    items: tuple[str, ...] = ()
    sep = "\n"
    if count > 1 and kind not in _KEY_WIDE:
        if count <= LIST_LINES:
            items = tuple(_line(t) for t in group)
        else:
            items, sep = tuple(_who(t) for t in group), ", "
    return _Draft(ordered, title, "\n".join(lines), items, sep)


def _finish(kind: Kind, change: Change, transitions: tuple[Transition, ...],
            title: str, body: str, limit: int, secrets: Secrets | None) -> Message:
    if secrets is not None:
        title, body = secrets.redact(title), secrets.redact(body)
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 1] + "…"
    if len(body) > limit:  # redaction may lengthen it
        body = body[: limit - 1] + "…"
    return Message(kind=kind, change=change, transitions=transitions, title=title, body=body)


def render(
    kind: Kind,
    change: Change,
    transitions: Sequence[Transition],
    *,
    host: str,
    status_page_url: str = "",
    secrets: Secrets | None = None,
    limit: int = BODY_LIMIT,
) -> Message:
    """The message for one group (transitions of ``kind`` and ``change``, at least one),
    its body at most ``limit`` characters (the sessions that do not fit counted).
    ``secrets``: values never to show, replaced wherever they would appear."""
    return _whole(_draft(kind, change, transitions, host, status_page_url, secrets),
                  kind, change, limit, secrets)


def _whole(draft: _Draft, kind: Kind, change: Change, limit: int,
           secrets: Secrets | None) -> Message:
    body = draft.head
    if draft.items:
        body += "\n\n" + _bounded_list(draft.items, draft.sep, limit - len(draft.head) - 2)
    return _finish(kind, change, draft.ordered, draft.title, body, limit, secrets)


def render_parts(
    kind: Kind,
    change: Change,
    transitions: Sequence[Transition],
    *,
    host: str,
    limit: int,
    status_page_url: str = "",
    secrets: Secrets | None = None,
    max_parts: int = MAX_PARTS,
) -> tuple[Message, ...]:
    """The group's message cut to a channel that takes at most ``limit`` characters a
    body: one message when it fits, else up to ``max_parts``, each repeating the head and
    naming the next sessions, its title ending "(part 2 of 3)". Only what does not fit in
    the last part is counted ("… and N more"), so a storm of 1,000 is named in full on a
    webhook (32,768 characters a body) and in three chat messages on Telegram (4,096),
    never in dozens that the service would throttle."""
    draft = _draft(kind, change, transitions, host, status_page_url, secrets)
    room = limit - len(draft.head) - 2
    if _fitting(draft.items, draft.sep, room) == len(draft.items):
        return (_whole(draft, kind, change, limit, secrets),)
    chunks: list[tuple[int, int]] = []
    first = 0
    while first < len(draft.items) and len(chunks) < max_parts - 1:
        taken = max(1, _fitting(draft.items[first:], draft.sep, room))
        chunks.append((first, first + taken))
        first += taken
    if first < len(draft.items):
        chunks.append((first, len(draft.items)))  # the last: named as far as it goes
    parts = []
    for number, (begin, end) in enumerate(chunks, start=1):
        listed = _bounded_list(draft.items[begin:end], draft.sep, room)
        suffix = f" (part {number} of {len(chunks)})"
        title = draft.title[: TITLE_LIMIT - len(suffix)] + suffix
        parts.append(_finish(kind, change, draft.ordered[begin:end], title,
                             f"{draft.head}\n\n{listed}", limit, secrets))
    return tuple(parts)


def _redacted(transition: Transition, secrets: Secrets) -> Transition:
    episode = transition.episode
    return msgspec.structs.replace(transition, episode=msgspec.structs.replace(
        episode, subject=secrets.redact(episode.subject),
        session_name=secrets.redact(episode.session_name),
        status=secrets.redact(episode.status), detail=secrets.redact(episode.detail)))
