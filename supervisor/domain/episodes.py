"""Alert episodes: a problem a person should hear of, from when it opens until it is over.

One poll leaves facts behind (``Facts``: the records after it, the sessions it
supervises, whether the key is refused, since when polls have failed); ``reconcile``
compares them with the episodes open now and says what opened and what resolved. It is
pure: no clock (``now`` is an argument, wall-clock epoch seconds), no I/O. The store
keeps the open episodes (so a restarted daemon, or a ``check`` a minute later, neither
repeats nor forgets them) and applies each transition at most once across processes.

The kinds, and the rules (at most one open episode per kind and subject; the subject is
the session id, ``""`` for the key-wide kinds):

- ``needs_person`` opens when a session's phase is ``needs_person`` (e.g.
  ``SCAN_QR_CODE``); resolves when it is healthy again, or gone.
- ``gave_up`` opens when a session was given up on (its record's ``gave_up``, kept
  while it is retried now and then); resolves when it is healthy again (a retry alone,
  by the supervisor or by ``retry ID``, is not a recovery), or gone.
- ``gone`` opens when a configured session is one the API does not know (its phase is
  ``gone``); resolves when it is known again, or no longer configured.
- ``zombie`` opens when a session is failed as a zombie (its status said healthy while its
  engine was not connected for ``zombie_after``); resolves when it is healthy again (seen
  connected), or gone.
- ``auth_failed`` opens when the key is refused (a 401); resolves when a poll listed the
  sessions with a key that was not refused.
- ``api_unreachable`` opens when polls have failed for ``unreachable_after`` seconds or
  more, counted from the first failure; resolves when a poll listed the sessions.
- ``supervision_stopped`` is not a poll's: a leading replica sends it itself, at once,
  when it stops for want of its PostgreSQL database (where the outbox is), and its
  resolution when it reaches the database again (``runtime.leadership``).

How they meet:

- A session that leaves ``needs_person`` for anything but healthy (stopped, restarted,
  starting, unknown) keeps its episode open: nobody has fixed it yet. If it is then given
  up on, ``gave_up`` opens beside it; both resolve when it is healthy.
- A session that is gone (or, when every session on the account is supervised, no
  longer listed) has its ``needs_person`` and ``gave_up`` episodes resolved: there is
  nothing left for a person to scan or restart. A configured one opens ``gone`` instead.
- A poll speaks only for the sessions it supervises: with ``sessions`` configured, those
  ids; otherwise every session on the account. The episodes of a session it does not
  supervise are left as they are (another process on the state file may supervise it),
  except ``gone``, which resolves once the session is no longer configured. Processes
  sharing one state file should therefore supervise the same sessions.
- Session episodes change only on a poll that listed the sessions: a failed or skipped
  poll knows nothing new of them. The key-wide ones open on any poll (a skipped one
  too) and resolve only on one that listed.
- A session on hold (a person paused its supervision) opens no episode of its own:
  whoever paused it knows. An episode already open when it was put on hold stays open
  (the problem is not fixed by pausing) and resolves by the rules above (healthy again,
  or gone); a resolution needs no release.
- ``api_unreachable`` counts polls that could not reach the API or read its answer
  (unreachable, timed out, server errors, unreadable answers); a refused key
  (``auth_failed`` says so) or a 429 neither starts nor ends the count.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from enum import StrEnum
from typing import Final

import msgspec

from supervisor.domain.models import Phase, Record


class Kind(StrEnum):
    NEEDS_PERSON = "needs_person"
    GAVE_UP = "gave_up"
    AUTH_FAILED = "auth_failed"
    API_UNREACHABLE = "api_unreachable"
    GONE = "gone"
    ZOMBIE = "zombie"
    # A leading replica stopped for want of its PostgreSQL database: sent at once, by
    # that replica (its outbox is in the database); never an episode in the store.
    SUPERVISION_STOPPED = "supervision_stopped"


class Change(StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"


# The kinds that speak of the whole key rather than one session (their subject is "").
KEY_WIDE = frozenset({Kind.AUTH_FAILED, Kind.API_UNREACHABLE, Kind.SUPERVISION_STOPPED})
# The poll failures that count towards ``api_unreachable`` (``ApiError.kind``).
UNREACHABLE_FAILURES = frozenset({"unreachable", "timeout", "server_error",
                                  "unexpected_response"})


class Episode(msgspec.Struct, frozen=True):
    kind: Kind
    subject: str  # the session id; "" for the key-wide kinds (auth_failed, api_unreachable)
    opened_at: float
    session_name: str = ""
    status: str = ""  # the session's status when it opened ("" for key-wide kinds)
    detail: str = ""  # one line for people: what the supervisor did/saw (never a secret)

    @property
    def key(self) -> tuple[Kind, str]:
        return (self.kind, self.subject)


class Transition(msgspec.Struct, frozen=True):
    change: Change
    episode: Episode
    at: float  # when it opened (== episode.opened_at) or resolved


class Pending(msgspec.Struct, frozen=True):
    """One transition waiting to be delivered to one channel (the outbox's row; the
    ``supervisor.alerts.outbox.Outbox`` protocol hands these out)."""

    id: int
    channel: str  # a channel's stable id, e.g. "apprise-1", "alertmanager"; never a URL
    transition: Transition
    created_at: float
    attempts: int = 0
    next_try_at: float = 0.0


class SessionFacts(msgspec.Struct, frozen=True):
    """What a poll left of one session it supervises: its record's steering fields."""

    session_id: str
    phase: Phase
    gave_up: bool = False
    status: str = ""
    name: str = ""
    failures: int = 0  # failed restart attempts inside the window
    held: bool = False  # a person paused its supervision: it opens no episode
    zombie: bool = False

    @classmethod
    def of(cls, record: Record, *, held: bool = False) -> SessionFacts:
        return cls(record.session_id, record.phase, record.gave_up, record.last_status or "",
                   record.name or "", len(record.failures), held, record.zombie)


class Facts(msgspec.Struct, frozen=True):
    """What one poll leaves behind, for ``reconcile``.

    ``listed``: the poll read the list, so ``sessions`` are current; ``sessions``: the
    records after it of the sessions it supervises; ``configured``: the ids it
    supervises (empty: every session on the account); ``held``: the sessions on hold
    (``Facts.of``; each session's ``held`` says it); ``key_refused``: the key was
    refused and has not worked since; ``failing_since``: since when (epoch seconds)
    polls have failed to reach the API (None: the last poll that could tell reached it);
    ``failure``: the first such failure's kind, for people.
    """

    listed: bool = False
    sessions: tuple[SessionFacts, ...] = ()
    configured: tuple[str, ...] = ()
    key_refused: bool = False
    failing_since: float | None = None
    failure: str = ""

    @classmethod
    def of(
        cls,
        records: Iterable[Record],
        *,
        listed: bool,
        configured: Sequence[str] = (),
        key_refused: bool = False,
        failing_since: float | None = None,
        failure: str = "",
        open_episodes: Iterable[Episode] | None = None,
        held: Collection[str] = (),
    ) -> Facts:
        """The facts of a poll from the records after it (of the sessions it supervises).
        Given the ``open_episodes``, only the records that can matter are kept (see
        ``relevant``)."""
        wanted = frozenset(configured)
        subjects = None if open_episodes is None else _subjects(open_episodes)
        sessions = tuple(
            SessionFacts.of(record, held=record.session_id in held) for record in records
            if (not wanted or record.session_id in wanted)
            and (subjects is None or _matters(record.session_id, record.phase,
                                              record.gave_up or record.zombie, subjects))
        )
        return cls(listed, sessions, tuple(configured), key_refused, failing_since, failure)

    def relevant(self, open_episodes: Iterable[Episode]) -> Facts:
        """These facts without the sessions that cannot matter to ``reconcile`` against
        ``open_episodes``: it reads the same from what is left (a poll of thousands of
        healthy sessions hands it a few). Kept: the sessions that may open an episode
        (needing a person, given up, gone) and the open episodes' subjects."""
        subjects = _subjects(open_episodes)
        return msgspec.structs.replace(self, sessions=tuple(
            s for s in self.sessions
            if _matters(s.session_id, s.phase, s.gave_up or s.zombie, subjects)))


def _subjects(open_episodes: Iterable[Episode]) -> frozenset[str]:
    return frozenset(episode.subject for episode in open_episodes)


def _matters(session_id: str, phase: Phase, flagged: bool, subjects: frozenset[str]) -> bool:
    """``flagged``: given up on, or failed as a zombie (either opens an episode)."""
    return phase in _MAY_OPEN or flagged or session_id in subjects


# The phases in which a session may open an episode (``gave_up`` is read from its flag).
_MAY_OPEN: Final = frozenset({Phase.NEEDS_PERSON, Phase.GONE, Phase.GAVE_UP})


def reconcile(
    open_episodes: Iterable[Episode],
    facts: Facts,
    now: float,
    *,
    unreachable_after: float,
) -> tuple[Transition, ...]:
    """The episodes that resolve and those that open, given the open ones and what a poll
    left behind: resolutions first (in the order given), then openings (key-wide first,
    then by session in the facts' order). Never opens what is open, never resolves what
    is not."""
    known: dict[tuple[Kind, str], Episode] = {}
    for episode in open_episodes:
        known.setdefault(episode.key, episode)
    wanted = _wanted(facts, now, unreachable_after)
    sessions = {session.session_id: session for session in facts.sessions}
    configured = frozenset(facts.configured)
    resolved = tuple(
        Transition(Change.RESOLVED, episode, now)
        for key, episode in known.items()
        if key not in wanted and _over(episode, facts, sessions, configured)
    )
    opened = tuple(
        Transition(Change.OPENED, episode, now)
        for key, episode in wanted.items()
        if key not in known
    )
    return resolved + opened


def _wanted(facts: Facts, now: float, unreachable_after: float) -> dict[tuple[Kind, str], Episode]:
    """The episodes the facts say are open now (session ones only from a listing)."""
    found: dict[tuple[Kind, str], Episode] = {}

    def want(episode: Episode) -> None:
        found.setdefault(episode.key, episode)

    if facts.key_refused:
        want(Episode(Kind.AUTH_FAILED, "", now,
                     detail="the API refused the key (401); it is re-read and tried again"
                            " every auth_retry_interval"))
    since = facts.failing_since
    if since is not None and now - since >= unreachable_after:
        failure = f" ({facts.failure})" if facts.failure else ""
        want(Episode(Kind.API_UNREACHABLE, "", now,
                     detail=f"every poll for {round(now - since)} s has failed{failure}"))
    if not facts.listed:
        return found
    configured = set(facts.configured)
    for session in facts.sessions:
        if session.held:
            continue  # on hold: whoever paused it knows (an open episode stays open)
        name, status = session.name, session.status
        if session.phase is Phase.GONE:
            if session.session_id in configured:
                want(Episode(Kind.GONE, session.session_id, now, name, status,
                             "the API does not know this configured session (404); it is"
                             " looked up again every gave_up_retry_interval"))
            continue
        if session.phase is Phase.NEEDS_PERSON:
            want(Episode(Kind.NEEDS_PERSON, session.session_id, now, name, status,
                         f"status {status or '?'}: a restart cannot help, so it is not"
                         " restarted; a person must act (for a QR code: scan it)"))
        if session.gave_up:
            tried = f" after {session.failures} failed restarts" if session.failures else ""
            want(Episode(Kind.GAVE_UP, session.session_id, now, name, status,
                         f"given up on{tried}; tried again every gave_up_retry_interval"))
        if session.zombie:
            want(Episode(Kind.ZOMBIE, session.session_id, now, name, status,
                         f"status {status or '?'} while its engine was not connected for"
                         " zombie_after; it is stopped and restarted"))
    return found


def _over(
    episode: Episode,
    facts: Facts,
    sessions: dict[str, SessionFacts],
    configured: frozenset[str],
) -> bool:
    """Whether an open episode has resolved, by what the poll knows now (the module's
    rules). A poll that did not list knows nothing new: what is over waits for one."""
    if not facts.listed:
        return False
    kind, subject = episode.key
    if kind is Kind.AUTH_FAILED:
        return not facts.key_refused
    if kind is Kind.API_UNREACHABLE:
        return True
    session = sessions.get(subject)
    if kind is Kind.GONE:
        if subject not in configured:
            return True  # no longer configured (here)
        return session is not None and session.phase is not Phase.GONE  # known again
    if session is None:
        # Every session on the account is supervised here and it is not among them: it
        # is no longer on the account. Otherwise it is not supervised here: left alone.
        return not configured
    return session.phase in (Phase.HEALTHY, Phase.GONE)
