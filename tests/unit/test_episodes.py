"""The episode rules (domain.episodes.reconcile), exactly: what opens and what resolves,
poll after poll, with explicit times and no I/O."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from supervisor.domain.episodes import (
    Change,
    Episode,
    Facts,
    Kind,
    SessionFacts,
    Transition,
    reconcile,
)
from supervisor.domain.models import Phase, Record

T0 = 1_700_000_000.0
AFTER = 120.0


def rec(sid: str, phase: Phase, status: str = "", *, gave_up: bool = False,
        name: str = "Shop", failures: int = 0) -> Record:
    return Record(sid, name=name, phase=phase, last_status=status or None, gave_up=gave_up,
                  failures=tuple(float(i) for i in range(failures)))


def listed(*records: Record, configured: Sequence[str] = (), refused: bool = False) -> Facts:
    return Facts.of(records, listed=True, configured=configured, key_refused=refused)


def failed(since: float | None, *, refused: bool = False, failure: str = "unreachable") -> Facts:
    return Facts(listed=False, key_refused=refused, failing_since=since, failure=failure)


class Book:
    """Keeps the open episodes as the store would, and every transition made."""

    def __init__(self) -> None:
        self.open: dict[tuple[Kind, str], Episode] = {}
        self.log: list[Transition] = []

    def poll(self, facts: Facts, now: float, after: float = AFTER) -> list[tuple[str, str, str]]:
        known = list(self.open.values())
        made = reconcile(known, facts, now, unreachable_after=after)
        # What the store's caller hands it (only the sessions that can matter) reads the same.
        slim = facts.relevant(known)
        assert reconcile(known, slim, now, unreachable_after=after) == made
        for t in made:
            if t.change is Change.OPENED:
                assert t.episode.key not in self.open
                assert t.at == t.episode.opened_at == now
                self.open[t.episode.key] = t.episode
            else:
                assert self.open.pop(t.episode.key) == t.episode
                assert t.at == now
        self.log.extend(made)
        return [(t.change.value, t.episode.kind.value, t.episode.subject) for t in made]

    def kinds(self) -> set[tuple[str, str]]:
        return {(k.value, s) for k, s in self.open}


# ----------------------------------------------------------------- needs_person


def test_needs_person_opens_once_and_resolves_when_healthy() -> None:
    book = Book()
    assert book.poll(listed(rec("a", Phase.HEALTHY, "WORKING")), T0) == []
    qr = listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE"))
    assert book.poll(qr, T0 + 30) == [("opened", "needs_person", "a")]
    episode = book.open[(Kind.NEEDS_PERSON, "a")]
    assert episode == Episode(Kind.NEEDS_PERSON, "a", T0 + 30, "Shop", "SCAN_QR_CODE",
                              episode.detail)
    assert "SCAN_QR_CODE" in episode.detail
    for i in range(100):
        assert book.poll(qr, T0 + 60 + i) == []
    assert book.poll(listed(rec("a", Phase.HEALTHY, "WORKING")), T0 + 500) == [
        ("resolved", "needs_person", "a")]
    assert book.log[-1].episode == episode  # the resolution tells of the episode opened
    assert book.poll(listed(rec("a", Phase.HEALTHY, "WORKING")), T0 + 530) == []


@pytest.mark.parametrize("phase", [Phase.UNHEALTHY, Phase.VERIFYING, Phase.STARTING,
                                   Phase.UNKNOWN])
def test_needs_person_stays_open_until_healthy(phase: Phase) -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE")), T0)
    assert book.poll(listed(rec("a", phase, "STOPPED")), T0 + 30) == []
    assert book.poll(listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE")), T0 + 60) == []
    assert book.kinds() == {("needs_person", "a")}
    assert book.poll(listed(rec("a", Phase.HEALTHY, "WORKING")), T0 + 90) == [
        ("resolved", "needs_person", "a")]


def test_needs_person_then_given_up_keeps_both_until_healthy() -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE")), T0)
    assert book.poll(listed(rec("a", Phase.GAVE_UP, "FAILED", failures=5)), T0 + 30) == [
        ("opened", "gave_up", "a")]
    assert book.kinds() == {("needs_person", "a"), ("gave_up", "a")}
    assert book.poll(listed(rec("a", Phase.HEALTHY, "WORKING")), T0 + 60) == [
        ("resolved", "needs_person", "a"), ("resolved", "gave_up", "a")]


# ---------------------------------------------------------------------- gave_up


def test_gave_up_opens_on_give_up_and_resolves_on_recovery() -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.UNHEALTHY, "FAILED")), T0)
    assert book.poll(listed(rec("a", Phase.GAVE_UP, "FAILED", failures=5)), T0 + 30) == [
        ("opened", "gave_up", "a")]
    assert "after 5 failed restarts" in book.open[(Kind.GAVE_UP, "a")].detail
    # Retried now and then (its record keeps gave_up), or retried by a person
    # (`retry ID` clears it): neither is a recovery.
    verifying = rec("a", Phase.VERIFYING, "STARTING", gave_up=True)
    assert book.poll(listed(verifying), T0 + 600) == []
    assert book.poll(listed(rec("a", Phase.UNHEALTHY, "FAILED")), T0 + 630) == []
    assert book.poll(listed(rec("a", Phase.GAVE_UP, "FAILED")), T0 + 660) == []
    assert book.poll(listed(rec("a", Phase.HEALTHY, "WORKING")), T0 + 690) == [
        ("resolved", "gave_up", "a")]
    assert [t.change for t in book.log] == [Change.OPENED, Change.RESOLVED]


# ------------------------------------------------------------------------- gone


def test_gone_opens_for_a_configured_session_and_resolves_when_known_again() -> None:
    book = Book()
    gone = listed(rec("a", Phase.GONE, "WORKING"), configured=["a"])
    assert book.poll(gone, T0) == [("opened", "gone", "a")]
    assert book.poll(gone, T0 + 30) == []
    back = listed(rec("a", Phase.HEALTHY, "WORKING"), configured=["a"])
    assert book.poll(back, T0 + 60) == [("resolved", "gone", "a")]


def test_gone_resolves_when_no_longer_configured() -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.GONE), rec("b", Phase.HEALTHY), configured=["a", "b"]), T0)
    # The setting changed (a reload): "a" is no longer supervised, its record stays.
    after = listed(rec("a", Phase.GONE), rec("b", Phase.HEALTHY), configured=["b"])
    assert book.poll(after, T0 + 30) == [("resolved", "gone", "a")]
    # Every session on the account (nothing configured): "a" is not configured either.
    book.poll(listed(rec("a", Phase.GONE), configured=["a"]), T0 + 60)
    assert book.poll(listed(rec("b", Phase.HEALTHY)), T0 + 90) == [("resolved", "gone", "a")]


def test_gone_never_opens_for_a_session_found_by_listing() -> None:
    book = Book()
    assert book.poll(listed(rec("a", Phase.GONE)), T0) == []  # nothing configured
    assert book.poll(listed(rec("a", Phase.GONE), configured=["b"]), T0) == []


def test_a_session_gone_resolves_its_other_episodes() -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE"), configured=["a"]), T0)
    book.poll(listed(rec("a", Phase.GAVE_UP, "FAILED"), configured=["a"]), T0 + 30)
    assert book.kinds() == {("needs_person", "a"), ("gave_up", "a")}
    gone = rec("a", Phase.GONE, "FAILED", gave_up=True)
    assert book.poll(listed(gone, configured=["a"]), T0 + 60) == [
        ("resolved", "needs_person", "a"), ("resolved", "gave_up", "a"), ("opened", "gone", "a")]


def test_a_session_no_longer_on_the_account_resolves_when_every_session_is_supervised() -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE"), rec("b", Phase.GAVE_UP)), T0)
    assert book.kinds() == {("needs_person", "a"), ("gave_up", "b")}
    # Listed without them: their records were forgotten.
    assert book.poll(listed(rec("c", Phase.HEALTHY)), T0 + 30) == [
        ("resolved", "needs_person", "a"), ("resolved", "gave_up", "b")]


# ---------------------------------------------------------------------- scope


def test_a_poll_leaves_the_episodes_of_sessions_it_does_not_supervise() -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE"),
                     rec("b", Phase.GAVE_UP), rec("c", Phase.GONE),
                     configured=["a", "b", "c"]), T0)
    assert len(book.open) == 3
    # A check of "x" only: it knows nothing of a and b (still on the account, maybe
    # still broken); c is no longer configured here, so its gone episode is over.
    only_x = listed(rec("a", Phase.HEALTHY), rec("x", Phase.HEALTHY), configured=["x"])
    assert only_x.sessions == (SessionFacts("x", Phase.HEALTHY, name="Shop"),)
    assert book.poll(only_x, T0 + 30) == [("resolved", "gone", "c")]
    # A configured session the poll has no record of (its lookup failed) stays as it is.
    assert book.poll(listed(configured=["a", "b"]), T0 + 60) == []


def test_a_poll_that_did_not_list_knows_nothing_new_of_sessions() -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE")), T0)
    healthy = Facts.of([rec("a", Phase.HEALTHY)], listed=False)
    broken = Facts.of([rec("b", Phase.NEEDS_PERSON)], listed=False)
    assert book.poll(healthy, T0 + 30) == []
    assert book.poll(broken, T0 + 60) == []
    assert book.kinds() == {("needs_person", "a")}


# ------------------------------------------------------------------ auth_failed


def test_auth_failed_opens_on_a_refused_key_and_resolves_when_a_listing_works() -> None:
    book = Book()
    assert book.poll(failed(None, refused=True), T0) == [("opened", "auth_failed", "")]
    assert book.open[(Kind.AUTH_FAILED, "")].status == ""
    for i in range(10):  # skipped polls while it is refused, and refusals again
        assert book.poll(failed(None, refused=True), T0 + 30 * i) == []
    # A poll that failed otherwise does not tell whether the key works.
    assert book.poll(failed(T0 + 400), T0 + 400) == []
    assert book.poll(listed(rec("a", Phase.HEALTHY)), T0 + 430) == [
        ("resolved", "auth_failed", "")]


def test_a_key_refused_in_the_middle_of_a_cycle_opens_auth_failed() -> None:
    book = Book()
    assert book.poll(listed(rec("a", Phase.HEALTHY), refused=True), T0) == [
        ("opened", "auth_failed", "")]
    assert book.poll(listed(rec("a", Phase.HEALTHY), refused=True), T0 + 30) == []
    assert book.poll(listed(rec("a", Phase.HEALTHY)), T0 + 60) == [
        ("resolved", "auth_failed", "")]


# -------------------------------------------------------------- api_unreachable


def test_api_unreachable_opens_after_the_threshold_from_the_first_failure() -> None:
    book = Book()
    first = T0 + 10
    for now in (first, first + 30, first + 60, first + 90, first + AFTER - 0.001):
        assert book.poll(failed(first), now) == []
    assert book.poll(failed(first), first + AFTER) == [("opened", "api_unreachable", "")]
    episode = book.open[(Kind.API_UNREACHABLE, "")]
    assert episode.detail == "every poll for 120 s has failed (unreachable)"
    for now in (first + 150, first + 3600):
        assert book.poll(failed(first), now) == []
    assert book.poll(listed(), first + 3630) == [("resolved", "api_unreachable", "")]
    assert book.poll(listed(), first + 3660) == []


def test_api_unreachable_needs_the_failures_to_last() -> None:
    book = Book()
    # Failures that a success interrupts start over (failing_since is the new first one).
    assert book.poll(failed(T0), T0 + 100) == []
    assert book.poll(listed(), T0 + 110) == []
    assert book.poll(failed(T0 + 140), T0 + 230) == []
    assert book.poll(failed(T0 + 140), T0 + 260) == [("opened", "api_unreachable", "")]


def test_unreachable_after_is_honoured_as_given() -> None:
    assert reconcile([], failed(T0), T0 + 5, unreachable_after=5.0)[0].episode.kind is (
        Kind.API_UNREACHABLE)
    assert reconcile([], failed(T0), T0 + 5, unreachable_after=5.5) == ()
    assert reconcile([], failed(T0), T0, unreachable_after=0.0) != ()


def test_an_unreachable_api_then_a_refused_key() -> None:
    book = Book()
    book.poll(failed(T0), T0 + 200)
    assert book.poll(failed(T0, refused=True), T0 + 230) == [("opened", "auth_failed", "")]
    assert book.poll(listed(), T0 + 600) == [
        ("resolved", "api_unreachable", ""), ("resolved", "auth_failed", "")]


# --------------------------------------------------------------------- general


def test_several_sessions_open_and_resolve_independently_in_the_facts_order() -> None:
    book = Book()
    sessions = [rec(f"s{i}", Phase.NEEDS_PERSON, "SCAN_QR_CODE") for i in range(500)]
    made = book.poll(listed(*sessions), T0)
    assert made == [("opened", "needs_person", f"s{i}") for i in range(500)]
    assert book.poll(listed(*sessions), T0 + 30) == []
    half = [rec(f"s{i}", Phase.HEALTHY) for i in range(250)] + sessions[250:]
    assert book.poll(listed(*half), T0 + 60) == [
        ("resolved", "needs_person", f"s{i}") for i in range(250)]


def test_reconcile_never_opens_what_is_open_nor_resolves_what_is_not() -> None:
    open_one = Episode(Kind.NEEDS_PERSON, "a", T0, "Shop", "SCAN_QR_CODE")
    twice = [open_one, msgspec.structs.replace(open_one, opened_at=T0 + 1)]
    qr = listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE"))
    assert reconcile(twice, qr, T0 + 60, unreachable_after=AFTER) == ()
    made = reconcile(twice, listed(rec("a", Phase.HEALTHY)), T0 + 60, unreachable_after=AFTER)
    assert made == (Transition(Change.RESOLVED, open_one, T0 + 60),)
    assert reconcile([], listed(rec("a", Phase.HEALTHY)), T0, unreachable_after=AFTER) == ()


def test_an_episode_the_store_kept_from_an_earlier_process_is_not_opened_again() -> None:
    # A restarted daemon, or a check a minute later: what the store holds is open.
    earlier = Episode(Kind.NEEDS_PERSON, "a", T0 - 3600, "Shop", "SCAN_QR_CODE", "seen")
    qr = listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE"))
    for minute in range(10):
        assert reconcile([earlier], qr, T0 + 60 * minute, unreachable_after=AFTER) == ()


def test_transitions_round_trip_through_json() -> None:
    book = Book()
    book.poll(listed(rec("a", Phase.NEEDS_PERSON, "SCAN_QR_CODE")), T0)
    made = book.log
    again = msgspec.json.decode(msgspec.json.encode(made), type=list[Transition])
    assert again == made
    assert again[0].episode.kind is Kind.NEEDS_PERSON


def test_names_and_statuses_absent_are_empty_strings() -> None:
    facts = Facts.of([Record("a", phase=Phase.NEEDS_PERSON)], listed=True)
    (made,) = reconcile([], facts, T0, unreachable_after=AFTER)
    assert (made.episode.session_name, made.episode.status) == ("", "")




def test_facts_of_the_open_episodes_keep_only_the_sessions_that_can_matter() -> None:
    records = [rec("h", Phase.HEALTHY), rec("q", Phase.NEEDS_PERSON), rec("g", Phase.GONE),
               rec("u", Phase.UNHEALTHY, gave_up=True), rec("was", Phase.HEALTHY),
               rec("x", Phase.UNHEALTHY)]
    known = [Episode(Kind.NEEDS_PERSON, "was", T0)]
    slim = Facts.of(records, listed=True, open_episodes=known)
    assert [s.session_id for s in slim.sessions] == ["q", "g", "u", "was"]
    assert slim == Facts.of(records, listed=True).relevant(known)
    scoped = Facts.of(records, listed=True, configured=["q", "h"], open_episodes=known)
    assert [s.session_id for s in scoped.sessions] == ["q"]


# ----------------------------------------------------------------------- zombie


def test_a_zombie_opens_once_while_it_is_restarted_and_resolves_when_healthy() -> None:
    book = Book()
    zombie = Record("z", name="Shop", phase=Phase.UNHEALTHY, last_status="WORKING",
                    zombie=True, disconnected_since=T0)
    assert book.poll(listed(zombie), T0 + 120) == [("opened", "zombie", "z")]
    assert "not connected" in book.open[(Kind.ZOMBIE, "z")].detail
    verifying = msgspec.structs.replace(zombie, phase=Phase.VERIFYING, last_status="STOPPED")
    assert book.poll(listed(verifying), T0 + 121) == []  # stopped, restarting: still open
    assert book.poll(listed(rec("z", Phase.HEALTHY, "WORKING")), T0 + 130) == [
        ("resolved", "zombie", "z")]


def test_a_zombie_gone_resolves() -> None:
    book = Book()
    zombie = Record("z", phase=Phase.UNHEALTHY, last_status="WORKING", zombie=True)
    book.poll(listed(zombie), T0)
    assert book.poll(listed(rec("z", Phase.GONE)), T0 + 30) == [("resolved", "zombie", "z")]
