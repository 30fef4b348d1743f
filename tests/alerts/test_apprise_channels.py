"""Apprise's channels against real receivers on 127.0.0.1: e-mail to an SMTP server, json://
and ntfy:// to an HTTP receiver; a receiver that is down, then back; nothing of a URL in
the log, even at debug."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import logging

import pytest
import structlog
from pydantic import SecretStr

from supervisor.alerts.channels import (
    APPRISE_LOGGERS,
    AppriseChannel,
    DeliveryFailed,
    body_limit,
    parts_for,
)
from supervisor.alerts.sender import Sender
from supervisor.alerts.text import MAX_PARTS, TITLE_LIMIT, Message, render
from supervisor.domain import events as ev
from supervisor.domain.episodes import Change, Episode, Kind, Transition
from supervisor.domain.policy import Backoff
from tests.alerts.conftest import SmtpServer
from tests.alerts.receivers import Hanging, HttpReceiver, free_port
from tests.fakes import FakeClock, MaxRandom, MemoryOutbox
from tests.waiting import until

AT = 1_764_590_400.0
TOKEN = "T0K3N-9f8e7d6c5b4a3928"


def needs_person(subject: str = "sess-7", name: str = "Shop 7") -> Transition:
    return Transition(Change.OPENED, Episode(Kind.NEEDS_PERSON, subject, AT, name,
                                             "SCAN_QR_CODE"), AT)


def message(*transitions: Transition) -> Message:
    group = transitions or (needs_person(),)
    return render(Kind.NEEDS_PERSON, Change.OPENED, group, host="shop-box")


async def test_an_email_alert_reaches_a_real_smtp_server(smtp: SmtpServer) -> None:
    url = f"mailto://127.0.0.1:{smtp.port}?from=supervisor@example.com&to=ops@example.com"
    sent = message()
    await AppriseChannel("apprise-1", SecretStr(url)).send(sent)
    (envelope,) = smtp.mailbox.envelopes
    assert envelope.rcpt_tos == ["ops@example.com"]
    assert isinstance(envelope.content, bytes)
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert mail["Subject"] == sent.title
    text = mail.get_content()
    assert "Session: Shop 7 (id sess-7)" in text
    assert "WhatsApp > Linked devices" in text and "Host: shop-box" in text


async def test_a_json_webhook_gets_the_title_the_body_and_the_kind_of_notice(
        receiver: HttpReceiver) -> None:
    sent = message()
    await AppriseChannel("apprise-1", SecretStr(f"json://{receiver.url}/hooks/alerts")).send(
        sent)
    (request,) = receiver.requests
    assert request.method == "POST" and request.path == "/hooks/alerts"
    payload = request.json()
    assert payload["title"] == sent.title and payload["message"] == sent.body
    assert payload["type"] == "failure"


async def test_a_resolution_is_a_success_notice(receiver: HttpReceiver) -> None:
    closing = Transition(Change.RESOLVED, needs_person().episode, AT + 60)
    sent = render(Kind.NEEDS_PERSON, Change.RESOLVED, [closing], host="h")
    await AppriseChannel("apprise-1", SecretStr(f"json://{receiver.url}/")).send(sent)
    assert receiver.requests[0].json()["type"] == "success"


async def test_an_ntfy_topic_gets_the_alert(receiver: HttpReceiver) -> None:
    sent = message()
    await AppriseChannel("apprise-2", SecretStr(f"ntfy://{receiver.url}/wasend-alerts")).send(
        sent)
    (request,) = receiver.requests
    payload = request.json()
    assert payload["topic"] == "wasend-alerts"
    assert payload["title"] == sent.title and payload["message"] == sent.body


async def test_a_failure_names_the_channel_and_never_its_url() -> None:
    url = f"json://admin:{TOKEN}@127.0.0.1:{free_port()}/hooks/{TOKEN}"
    channel = AppriseChannel("apprise-3", SecretStr(url))
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(message())
    assert str(caught.value).startswith("apprise-3: ")
    assert TOKEN not in str(caught.value) and TOKEN not in repr(channel)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


async def test_a_url_apprise_does_not_know_is_a_failure_without_the_url() -> None:
    channel = AppriseChannel("apprise-4", SecretStr(f"nosuchscheme://{TOKEN}@host"))
    with pytest.raises(DeliveryFailed, match=r"^apprise-4: Apprise does not accept") as caught:
        await channel.send(message())
    assert TOKEN not in str(caught.value)


async def test_nothing_apprise_or_its_http_library_logs_reaches_the_log(
        log_buffer: io.StringIO, receiver: HttpReceiver) -> None:
    """At debug level, Apprise logs the URL it posts to and urllib3 the path (a Slack or
    Discord token is in the path): none of it reaches the supervisor's log."""
    up = AppriseChannel("apprise-1", SecretStr(f"json://admin:{TOKEN}@{receiver.url}/{TOKEN}"))
    down = AppriseChannel("apprise-2", SecretStr(
        f"json://admin:{TOKEN}@127.0.0.1:{free_port()}/{TOKEN}"))
    await up.send(message())
    with pytest.raises(DeliveryFailed):
        await down.send(message())
    assert receiver.requests[0].path == f"/{TOKEN}"  # it was there to be logged
    logging.getLogger("apprise").error("a direct line %s", TOKEN)
    assert TOKEN not in log_buffer.getvalue()
    for name in APPRISE_LOGGERS:
        assert not logging.getLogger(name).propagate


async def test_a_receiver_that_is_down_is_retried_and_gets_the_message_once_it_is_back(
        log_buffer: io.StringIO) -> None:
    clock, outbox = FakeClock(AT), MemoryOutbox()
    later = HttpReceiver()  # its port, with nothing listening yet
    channel = AppriseChannel("apprise-1", SecretStr(f"json://{later.url}/hook/{TOKEN}"))
    send = Sender(outbox, [channel], clock, group_window=10.0, max_age=3600.0,
                  queue_max=100, send_timeout=10.0,
                  rng=MaxRandom(), backoff=Backoff(initial=5.0, max=60.0), host="h")
    outbox.enqueue(["apprise-1"], [needs_person()], AT)
    clock.advance(10.0)
    first = await send.run_once(clock.now())
    assert first.failed == 1 and first.next_at == clock.now() + 5.0
    clock.advance(5.0)
    assert (await send.run_once(clock.now())).failed == 1  # still down: 10 s more
    later.start()
    try:
        clock.advance(9.0)
        assert (await send.run_once(clock.now())).sent == 0  # waiting out its backoff
        clock.advance(1.0)
        assert (await send.run_once(clock.now())).sent == 1
        await until(lambda: later.requests)
        assert len(later.requests) == 1
        assert later.requests[0].json()["title"].startswith("WhatsApp session 'Shop 7'")
    finally:
        later.stop()
    events = [json.loads(line) for line in log_buffer.getvalue().splitlines()]
    assert [e["event"] for e in events if e["event"].startswith("alert.")] == [
        ev.ALERT_FAILED, ev.ALERT_FAILED, ev.ALERT_SENT]
    assert [e["attempt"] for e in events if e["event"].startswith("alert.")] == [1, 2, 3]
    assert TOKEN not in log_buffer.getvalue()
    assert outbox.pending_count() == 0


async def test_a_tagged_url_gets_the_messages_routed_to_it(receiver: HttpReceiver) -> None:
    channel = AppriseChannel("apprise-1", SecretStr(f"json://{receiver.url}/"), tags=["ops"])
    await channel.send(message())
    assert len(receiver.requests) == 1


async def test_a_storm_longer_than_an_ntfy_message_is_cut_to_its_limit_not_refused(
        receiver: HttpReceiver) -> None:
    storm = [needs_person(f"sess-{i:04d}", f"Shop {i}") for i in range(1000)]
    sent = message(*storm)
    assert len(sent.body) > 7800  # ntfy's limit, as Apprise knows it
    await AppriseChannel("apprise-2", SecretStr(f"ntfy://{receiver.url}/alerts")).send(sent)
    (request,) = receiver.requests
    text = request.json()["message"]
    assert len(text) <= 7800 and text.startswith("Sessions: 1000")


async def test_overflow_split_in_the_url_sends_every_name_in_several_messages(
        receiver: HttpReceiver) -> None:
    storm = [needs_person(f"sess-{i:04d}", f"Shop {i}") for i in range(1500)]
    sent = message(*storm)
    assert len(sent.body) > 32768  # json://'s limit, as Apprise knows it
    await AppriseChannel("apprise-2", SecretStr(
        f"json://{receiver.url}/alerts?overflow=split")).send(sent)
    texts = "".join(r.json()["message"] for r in receiver.requests)
    assert len(receiver.requests) > 1
    assert all(f"(sess-{i:04d})" in texts for i in range(1500))


async def test_a_channel_that_never_answers_is_cut_off_and_holds_no_other(
        receiver: HttpReceiver) -> None:
    hanging = Hanging()
    try:
        stuck = AppriseChannel("apprise-1", SecretStr(f"json://{hanging.url}/hook"))
        fine = AppriseChannel("apprise-2", SecretStr(f"json://{receiver.url}/hook"))
        clock, outbox = FakeClock(AT), MemoryOutbox()
        send = Sender(outbox, [stuck, fine], clock, group_window=0.0, max_age=3600.0,
                      queue_max=100, send_timeout=0.3, rng=MaxRandom(), host="h")
        outbox.enqueue(["apprise-1", "apprise-2"], [needs_person()], AT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with structlog.testing.capture_logs() as logs:
            report = await asyncio.wait_for(send.run_once(AT), 10.0)
        assert loop.time() - started < 2.0
        assert report.sent == 1 and report.failed == 1 and len(receiver.requests) == 1
        (failed,) = [e for e in logs if e["event"] == ev.ALERT_FAILED]
        assert failed["channel"] == "apprise-1"
        assert failed["error"] == "apprise-1: no answer within 0.3 s"
    finally:
        hanging.close()


async def test_a_storm_of_500_is_one_email_naming_every_session(smtp: SmtpServer) -> None:
    url = f"mailto://127.0.0.1:{smtp.port}?from=supervisor@example.com&to=ops@example.com"
    clock, outbox = FakeClock(AT), MemoryOutbox()
    send = Sender(outbox, [AppriseChannel("apprise-1", SecretStr(url))], clock,
                  group_window=10.0, max_age=3600.0, queue_max=10_000, host="shop-box")
    outbox.enqueue(["apprise-1"], [needs_person(f"sess-{i:04d}", f"Shop {i}")
                                   for i in range(500)], AT)
    assert (await send.run_once(AT + 9.0)).sent == 0  # the window has not passed
    assert (await send.run_once(AT + 10.0)).sent == 1
    (envelope,) = smtp.mailbox.envelopes
    assert isinstance(envelope.content, bytes)
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert mail["Subject"] == "500 WhatsApp sessions need a person"
    text = mail.get_content()
    assert all(f"'Shop {i}' (sess-{i:04d})" in text for i in range(500))


def test_a_channels_limit_is_its_services_less_a_title_put_in_the_body() -> None:
    assert body_limit(AppriseChannel("a", SecretStr("json://127.0.0.1:1/hook"))) == 32_768
    telegram = AppriseChannel("t", SecretStr(
        "tgram://123456789:abcdefghijklmnopqrstuvwxyzABCDEFGHI/12345"))
    assert body_limit(telegram) == 4_096 - TITLE_LIMIT - 2  # Telegram has no title field
    chosen = AppriseChannel("s", SecretStr("json://127.0.0.1:1/hook?overflow=split"))
    assert body_limit(chosen) is None  # the URL chose Apprise's own handling


def test_a_storm_is_cut_into_no_more_parts_than_the_services_spacing_lets_a_send_finish() -> None:
    webhook = AppriseChannel("a", SecretStr("json://127.0.0.1:1/hook"))
    ntfy = AppriseChannel("n", SecretStr("ntfy://127.0.0.1:1/alerts"))  # 5.5 s apart
    assert webhook.spacing() == 0 and ntfy.spacing() == 5.5
    assert parts_for(webhook, 30.0) == MAX_PARTS
    assert parts_for(ntfy, 30.0) == 3  # 2 waits of 5.5 s within half of 30 s
    assert parts_for(ntfy, 20.0) == 2
    assert parts_for(ntfy, 5.0) == 1
    chosen = AppriseChannel("s", SecretStr("json://127.0.0.1:1/hook?overflow=split"))
    assert parts_for(chosen, 30.0) == 1


async def test_a_storm_longer_than_a_webhook_takes_is_sent_in_parts_each_whole_all_named(
        receiver: HttpReceiver, log_buffer: io.StringIO) -> None:
    clock, outbox = FakeClock(AT), MemoryOutbox()
    channel = AppriseChannel("apprise-1", SecretStr(f"json://{receiver.url}/hook"))
    send = Sender(outbox, [channel], clock, group_window=10.0, max_age=3600.0,
                  queue_max=10_000, host="shop-box")
    outbox.enqueue(["apprise-1"], [needs_person(f"sess-{i:04d}", f"Shop {i}")
                                   for i in range(1500)], AT)
    assert (await send.run_once(AT + 10.0)).sent == 1
    posts = [r.json() for r in receiver.requests]
    assert 1 < len(posts) <= MAX_PARTS
    assert all(len(p["message"]) <= 32_768 for p in posts)  # none cut by Apprise
    assert [p["title"] for p in posts] == [
        f"1500 WhatsApp sessions need a person (part {n} of {len(posts)})"
        for n in range(1, len(posts) + 1)]
    joined = "\n".join(p["message"] for p in posts)
    assert all(f"'Shop {i}' (sess-{i:04d})" in joined for i in range(1500))
    assert "more" not in joined
    (sent,) = [json.loads(line) for line in log_buffer.getvalue().splitlines()
               if json.loads(line)["event"] == ev.ALERT_SENT]
    assert sent["sessions"] == 1500 and sent["parts"] == len(posts)
    assert outbox.pending_count() == 0
