"""Logging: the rendered output, redaction, tracebacks without locals, stdlib routing."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from supervisor import logs
from supervisor.domain.secrets import Secrets
from tests.conftest import reset_logging

SECRET = "sk-LOGS-TEST-KEY-0042"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    reset_logging()


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_with_name_level_time_and_fields() -> None:
    out = io.StringIO()
    logs.configure("json", "info", out)
    structlog.get_logger("t").info("restart.requested", session_id="s1", attempt=2)
    (event,) = lines(out)
    assert event["event"] == "restart.requested"
    assert event["level"] == "info"
    assert event["session_id"] == "s1" and event["attempt"] == 2
    assert str(event["timestamp"]).endswith("Z")


def test_level_filters_events() -> None:
    out = io.StringIO()
    logs.configure("json", "warning", out)
    log = structlog.get_logger("t")
    log.info("poll.completed")
    log.warning("poll.failed")
    assert [e["event"] for e in lines(out)] == ["poll.failed"]


def test_a_known_secret_is_redacted_everywhere() -> None:
    out = io.StringIO()
    secrets = Secrets()
    logs.configure("json", "info", out, secrets=secrets)
    secrets.add(SECRET)  # known after the configuration: redacted from then on
    structlog.get_logger("t").warning(
        "poll.failed", detail=f"echo {SECRET}", nested={"k": [SECRET]}, api_key=SECRET)
    text = out.getvalue()
    assert SECRET not in text
    (event,) = lines(out)
    assert event["detail"] == "echo [REDACTED]"
    assert event["api_key"] == "[REDACTED]"


def test_the_secrets_are_those_handed_to_this_configuration_only() -> None:
    # No registry at module level: the process hands its instance to each configuration
    # (a reload configures again with the same one), and one made elsewhere is not seen.
    first = Secrets([SECRET])
    logs.configure("json", "info", io.StringIO(), secrets=first)
    out = io.StringIO()
    secrets = Secrets()
    logs.configure("json", "info", out, secrets=secrets)
    structlog.get_logger("t").warning("poll.failed", detail=SECRET)
    secrets.add("sk-OTHER-LOGS-KEY-7")
    structlog.get_logger("t").warning("poll.failed", detail="sk-OTHER-LOGS-KEY-7",
                                      password="hunter2")
    assert [(e["detail"], e.get("password")) for e in lines(out)] == [
        (SECRET, None), ("[REDACTED]", "[REDACTED]")]


def test_a_library_message_is_redacted_too() -> None:
    out = io.StringIO()
    logs.configure("json", "info", out, secrets=Secrets([SECRET]))
    logging.getLogger("httpx").warning("odd answer to %s", SECRET)
    (event,) = lines(out)
    assert event["event"] == "odd answer to [REDACTED]"


def test_tracebacks_do_not_show_frame_locals() -> None:
    out = io.StringIO()
    logs.configure("json", "info", out)

    def fails(api_key: str) -> None:
        raise RuntimeError("boom")

    try:
        fails("sk-UNREGISTERED-LOCAL-9")
    except RuntimeError:
        structlog.get_logger("t").exception("poll.crashed")
    text = out.getvalue()
    assert "boom" in text and "poll.crashed" in text
    assert "sk-UNREGISTERED-LOCAL-9" not in text


def test_console_tracebacks_do_not_show_frame_locals_either() -> None:
    out = io.StringIO()
    logs.configure("console", "info", out)
    local_secret = "sk-CONSOLE-LOCAL-7"
    try:
        raise ValueError("bad " + local_secret[:3])
    except ValueError:
        structlog.get_logger("t").exception("poll.crashed")
    assert local_secret not in out.getvalue()


def test_stdlib_loggers_use_the_same_renderer_and_httpx_is_quiet() -> None:
    out = io.StringIO()
    logs.configure("json", "debug", out)
    logging.getLogger("httpx").info("HTTP Request: GET https://x")
    logging.getLogger("httpx").warning("something odd")
    logging.getLogger("apscheduler.scheduler").warning("Execution of job skipped")
    events = lines(out)
    assert [e["event"] for e in events] == ["something odd"]
    assert events[0]["logger"] == "httpx" and events[0]["level"] == "warning"


def test_auto_is_json_when_not_a_tty() -> None:
    out = io.StringIO()
    logs.configure("auto", "info", out)
    structlog.get_logger("t").info("daemon.started")
    assert lines(out)[0]["event"] == "daemon.started"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_escapes_control_characters_in_values_and_the_event() -> None:
    out = io.StringIO()
    logs.configure("console", "info", out)
    structlog.get_logger("t").warning("session.unknown_status", session_id="x",
                                      session_name="x\nOK: all fine\x1b[2J",
                                      status="WORK\u2028ING")
    logging.getLogger("httpx").warning("odd\r\x1b[1Aanswer")
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\u2028" not in text
    first, second = text.splitlines()
    assert "session_name='x\\nOK: all fine\\x1b[2J'" in first
    assert "status='WORK\\u2028ING'" in first
    assert "odd\\r\\x1b[1Aanswer" in second


def test_console_tracebacks_keep_their_lines_and_escape_the_rest() -> None:
    out = io.StringIO()
    logs.configure("console", "info", out)
    try:
        raise ValueError("bad\x1b[2Jname")
    except ValueError:
        structlog.get_logger("t").exception("poll.crashed")
    text = out.getvalue()
    assert "\x1b" not in text and "bad\\x1b[2Jname" in text
    assert "Traceback (most recent call last):" in text.splitlines()


def test_console_colours_on_a_tty_unless_no_color_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Tty()
    logs.configure("console", "info", out)
    structlog.get_logger("t").warning("poll.failed")
    assert "\x1b[" in out.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    out = Tty()
    logs.configure("console", "info", out)
    structlog.get_logger("t").warning("poll.failed", session_name="a\x1bb")
    assert "\x1b" not in out.getvalue() and "poll.failed" in out.getvalue()
