"""The words of an alert: what a person reads, for one session, a group, a storm."""

from __future__ import annotations

import re

import pytest

from supervisor.alerts.text import (
    BODY_LIMIT,
    LIST_LINES,
    MAX_PARTS,
    QR_MASK,
    TITLE_LIMIT,
    render,
    render_parts,
)
from supervisor.domain.episodes import Change, Episode, Kind, Transition
from supervisor.domain.secrets import Secrets

AT = 1_764_590_400.0  # 2025-12-01 12:00:00 UTC
KEY = "wsk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
QR = "2@Xb3Tj0wVAkJmYq1sQHf7,mH5bG1ZQ0cz9xvXq8mZ3Kk=,Qm9ZcWxkYXRhYmFzZQ==,AbCdEfGh=="


def opened(i: int = 0, *, kind: Kind = Kind.NEEDS_PERSON, status: str = "SCAN_QR_CODE",
           detail: str = "", name: str | None = None, at: float = AT) -> Transition:
    episode = Episode(kind, f"sess-{i:04d}", at, name if name is not None else f"Shop {i}",
                      status, detail)
    return Transition(Change.OPENED, episode, at)


def resolved(transition: Transition, after: float) -> Transition:
    return Transition(Change.RESOLVED, transition.episode, transition.episode.opened_at + after)


def test_one_session_needing_a_person_says_who_what_since_when_what_to_do_and_where() -> None:
    message = render(Kind.NEEDS_PERSON, Change.OPENED, [opened(7)], host="shop-box")
    assert message.title == "WhatsApp session 'Shop 7' (sess-0007) needs a person: SCAN_QR_CODE"
    body = message.body
    assert "Session: Shop 7 (id sess-0007)" in body
    assert "Status: SCAN_QR_CODE" in body
    assert "Since: 2025-12-01 12:00:00 UTC" in body
    assert "What the supervisor did:" in body
    assert "open the WASend dashboard and scan the QR code" in body
    assert "WhatsApp > Linked devices" in body
    assert "Host: shop-box" in body
    assert message.transitions == (opened(7),)


def test_the_status_page_replaces_the_dashboard_when_one_is_configured() -> None:
    message = render(Kind.NEEDS_PERSON, Change.OPENED, [opened()], host="h",
                     status_page_url="https://ops.example.com/status")
    assert "open the status page (https://ops.example.com/status) and scan the QR code" in (
        message.body)
    assert "WASend dashboard" not in message.body


def test_a_resolution_says_when_and_after_how_long_and_that_nothing_is_to_do() -> None:
    message = render(Kind.NEEDS_PERSON, Change.RESOLVED, [resolved(opened(1), 754)], host="h")
    assert message.title.startswith("Resolved: WhatsApp session 'Shop 1'")
    assert "Resolved: 2025-12-01 12:12:34 UTC, after 12 min" in message.body
    assert "What to do: Nothing" in message.body
    assert "What the supervisor did" not in message.body


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_opens_and_resolves_with_words_of_its_own(kind: Kind) -> None:
    subject = "" if kind in (Kind.AUTH_FAILED, Kind.API_UNREACHABLE) else "sess-1"
    episode = Episode(kind, subject, AT, "Shop" if subject else "", "FAILED" if subject else "")
    opening = render(kind, Change.OPENED, [Transition(Change.OPENED, episode, AT)], host="h")
    closing = render(kind, Change.RESOLVED, [Transition(Change.RESOLVED, episode, AT + 60)],
                     host="h")
    assert opening.title and closing.title.startswith("Resolved: ")
    assert "What to do:" in opening.body and "Host: h" in opening.body
    assert opening.body != closing.body


def test_a_small_group_lists_each_session_on_a_line() -> None:
    group = [opened(i, at=AT + i) for i in range(3)]
    message = render(Kind.NEEDS_PERSON, Change.OPENED, group, host="h")
    assert message.title == "3 WhatsApp sessions need a person"
    assert "Sessions: 3, from 2025-12-01 12:00:00 UTC to 2025-12-01 12:00:02 UTC" in (
        message.body)
    for i in range(3):
        assert f"- 'Shop {i}' (sess-{i:04d}), SCAN_QR_CODE, since" in message.body


def test_a_storm_of_a_thousand_names_every_session_compactly_and_stays_bounded() -> None:
    storm = [opened(i) for i in range(1000)]
    message = render(Kind.NEEDS_PERSON, Change.OPENED, storm, host="h")
    assert message.title == "1000 WhatsApp sessions need a person"
    assert len(message.body) <= BODY_LIMIT
    for i in range(1000):
        assert f"'Shop {i}' (sess-{i:04d})" in message.body
    assert "more" not in message.body


def test_a_group_too_large_for_one_body_says_how_many_it_left_out() -> None:
    storm = [opened(i, name="N" * 70) for i in range(5000)]
    message = render(Kind.NEEDS_PERSON, Change.OPENED, storm, host="h")
    assert len(message.body) <= BODY_LIMIT
    listed = message.body.count("(sess-")
    assert 100 < listed < 5000
    assert message.body.endswith(f"… and {5000 - listed} more")
    assert listed > LIST_LINES


def test_no_qr_payload_ever_reaches_a_message() -> None:
    sneaky = opened(2, detail=f"engine said qr={QR}", status=f"SCAN_QR_CODE {QR}", name=QR)
    for group in ([sneaky], [sneaky, opened(3)], [opened(i) for i in range(30)] + [sneaky]):
        message = render(Kind.NEEDS_PERSON, Change.OPENED, group, host="h")
        for part in QR.split(","):
            assert part not in message.title + message.body
        assert QR_MASK in message.body


def test_a_long_base64_run_in_a_detail_is_masked_too() -> None:
    blob = "iVBORw0KGgoAAAANSUhEUgAAAQAAAAEAAQMAAABmvDolAAAABlBMVEX"
    message = render(Kind.NEEDS_PERSON, Change.OPENED, [opened(detail=f"qr image {blob}")],
                     host="h")
    assert blob not in message.body


def test_no_known_secret_ever_reaches_a_message() -> None:
    # Where a cut would split it too: the name's limit falls inside the key.
    leaky = opened(4, detail=f"refused with key {KEY}", name=f"Shop {'x' * 60}{KEY}")
    for group in ([leaky], [leaky, opened(5)]):
        message = render(Kind.NEEDS_PERSON, Change.OPENED, group, host="h",
                         secrets=Secrets([KEY]))
        assert KEY not in message.title + message.body
        assert KEY[:8] not in message.title + message.body
        assert "[REDACTED]" in message.body


def test_text_from_the_api_cannot_forge_a_line_and_is_bounded() -> None:
    forged = opened(6, name="Shop\nHost: elsewhere\x1b[2J" + "x" * 500)
    message = render(Kind.NEEDS_PERSON, Change.OPENED, [forged], host="h")
    assert "\nHost: elsewhere" not in message.body
    assert "\x1b" not in message.body
    assert re.findall(r"^Host: .*$", message.body, re.M) == ["Host: h"]
    assert len(message.title) <= TITLE_LIMIT


def test_a_message_needs_a_transition() -> None:
    with pytest.raises(ValueError, match="at least one"):
        render(Kind.GONE, Change.OPENED, [], host="h")


def _storm(size: int) -> list[Transition]:
    return [opened(i) for i in range(size)]


def test_a_group_that_fits_the_channel_is_one_message_the_same_as_render() -> None:
    group = _storm(300)
    (only,) = render_parts(Kind.NEEDS_PERSON, Change.OPENED, group, host="h", limit=32_768)
    assert only == render(Kind.NEEDS_PERSON, Change.OPENED, group, host="h", limit=32_768)
    assert "more" not in only.body


def test_a_storm_longer_than_the_channel_takes_is_cut_into_parts_naming_every_session() -> None:
    group = _storm(1500)
    assert len(render(Kind.NEEDS_PERSON, Change.OPENED, group, host="h").body) > 32_768
    parts = render_parts(Kind.NEEDS_PERSON, Change.OPENED, group, host="h", limit=32_768)
    assert 1 < len(parts) <= MAX_PARTS
    assert all(len(p.body) <= 32_768 for p in parts)
    text = "\n".join(p.body for p in parts)
    assert all(f"'Shop {i}' (sess-{i:04d})" in text for i in range(1500))
    assert "more" not in text
    assert [p.title for p in parts] == [
        f"1500 WhatsApp sessions need a person (part {n} of {len(parts)})"
        for n in range(1, len(parts) + 1)]
    # every part says what it is about and what to do, and they share out the transitions
    assert all(p.body.startswith("Sessions: 1500") and "What to do:" in p.body for p in parts)
    assert sum(len(p.transitions) for p in parts) == 1500
    assert tuple(t for p in parts for t in p.transitions) == tuple(
        sorted(group, key=lambda t: (t.at, t.episode.subject)))


def test_a_storm_too_long_for_three_chat_messages_counts_only_what_the_last_cannot_hold() -> None:
    group = _storm(1000)
    parts = render_parts(Kind.NEEDS_PERSON, Change.OPENED, group, host="h", limit=3_894)
    assert len(parts) == MAX_PARTS
    assert all(len(p.body) <= 3_894 for p in parts)
    text = "\n".join(p.body for p in parts)
    named = sum(f"(sess-{i:04d})" in text for i in range(1000))
    (more,) = re.findall(r"… and (\d+) more", text)
    assert named + int(more) == 1000
    assert parts[-1].body.endswith(f"… and {more} more")
    assert "more" not in parts[0].body and "more" not in parts[1].body


def test_a_part_title_keeps_its_number_when_the_title_is_cut() -> None:
    group = [opened(i, kind=Kind.GONE) for i in range(400)]
    parts = render_parts(Kind.GONE, Change.OPENED, group, host="x" * 500, limit=4_000,
                         max_parts=2)
    assert [p.title.endswith(f"(part {n} of 2)") for n, p in enumerate(parts, 1)] == [
        True, True]
    assert all(len(p.title) <= TITLE_LIMIT for p in parts)
