"""The secrets the process knows (``supervisor.domain.secrets``): what is redacted, from
a text, a structured record and an excerpt, and what an instance shows of itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from supervisor.config.model import Settings
from supervisor.domain.secrets import EXCERPT_LIMIT, REDACTED, Secrets
from supervisor.runtime.wiring import build, rebuild

KEY = "sk-TEST-SECRET-KEY-123"


# --- the values known ----------------------------------------------------------------


def test_known_values_are_redacted_and_held() -> None:
    secrets = Secrets([KEY])
    assert secrets.redact(f"a {KEY} b {KEY}") == f"a {REDACTED} b {REDACTED}"
    assert secrets.holds(f"x{KEY}") and not secrets.holds("sk-TEST")


def test_a_value_added_later_is_redacted_from_then_on() -> None:
    secrets = Secrets()
    assert secrets.redact(KEY) == KEY
    secrets.add(KEY)
    assert secrets.redact(KEY) == REDACTED


def test_values_too_short_to_be_secrets_are_not_matched() -> None:
    secrets = Secrets(["", "abc"])
    assert secrets.redact("abcabc") == "abcabc"
    assert not secrets.holds("abc")


def test_a_value_inside_another_does_not_split_the_longer_one() -> None:
    secrets = Secrets(["TEST-SECRET", KEY])  # the shorter first: the longer still goes whole
    assert secrets.redact(f"[{KEY}] [TEST-SECRET]") == f"[{REDACTED}] [{REDACTED}]"


def test_the_repr_shows_how_many_and_no_value() -> None:
    secrets = Secrets([KEY, "sk-OTHER-KEY-9"])
    assert repr(secrets) == "<Secrets: 2 known>"


def test_a_record_loses_its_secret_fields_and_known_values_at_any_depth() -> None:
    record = {"event": "poll.failed", "detail": f"echo {KEY}", "nested": {"k": [KEY, (KEY,)]},
              "Authorization": "Bearer abc", "token": "t0k3n", "attempt": 2}
    Secrets([KEY]).redact_fields(record)
    assert record == {"event": "poll.failed", "detail": f"echo {REDACTED}",
                      "nested": {"k": [REDACTED, (REDACTED,)]}, "Authorization": REDACTED,
                      "token": REDACTED, "attempt": 2}


def test_secret_fields_go_even_when_no_value_is_known() -> None:
    record = {"api_key": KEY, "password": "hunter2", "detail": KEY}
    Secrets().redact_fields(record)
    assert record == {"api_key": REDACTED, "password": REDACTED, "detail": KEY}


# --- excerpts ------------------------------------------------------------------------


def test_excerpt_of_a_bytearray_is_the_excerpt_of_the_same_bytes() -> None:
    raw = f'{{"error": "nope", "token": "{KEY}"}}'.encode()
    secrets = Secrets([KEY])
    assert secrets.excerpt(bytearray(raw)) == secrets.excerpt(raw)
    assert "nope" in secrets.excerpt(bytearray(raw))


def test_excerpt_is_single_line_short_and_redacted() -> None:
    text = f"line one\r\n\tline two\x00\x1b[31m Authorization: Bearer abc.def {KEY} " + "z" * 500
    excerpt = Secrets([KEY]).excerpt(text.encode())
    assert len(excerpt) <= EXCERPT_LIMIT
    assert excerpt.isprintable()
    assert excerpt.startswith("line one line two")
    assert "abc.def" not in excerpt
    assert KEY not in excerpt


@pytest.mark.parametrize(
    "text",
    [
        '{"api_key": "hunter2hunter2"}',
        "apiKey=hunter2hunter2&x=1",
        "password: hunter2hunter2",
        "Basic aHVudGVyMmh1bnRlcjI=",
    ],
)
def test_excerpt_redacts_things_that_look_like_credentials(text: str) -> None:
    excerpt = Secrets().excerpt(text)
    assert "hunter2hunter2" not in excerpt
    assert "aHVudGVy" not in excerpt
    assert REDACTED in excerpt


def test_a_key_straddling_the_length_limit_is_redacted_before_the_cut() -> None:
    text = "x" * (EXCERPT_LIMIT - 8) + " " + KEY
    excerpt = Secrets([KEY]).excerpt(text)
    assert excerpt.endswith(" [REDAC…")
    assert "sk-TEST" not in excerpt
    assert len(excerpt) == EXCERPT_LIMIT


def test_excerpt_does_not_end_in_the_start_of_a_key_cut_by_the_window() -> None:
    body = b" " * 4090 + KEY.encode()  # the excerpt window ends inside the key
    excerpt = Secrets([KEY]).excerpt(body)
    assert "sk-TE" not in excerpt


def test_an_excerpt_is_as_short_as_asked() -> None:
    assert Secrets().excerpt("abcdefghij", limit=5) == "abcd…"


# --- the process's instance ------------------------------------------------------------


async def test_the_runtime_hands_the_process_secrets_to_its_client() -> None:
    secrets = Secrets()
    settings = Settings(api_key=SecretStr(KEY), base_url="http://127.0.0.1:9",
                        state_path=Path(":memory:"))
    runtime = build(settings, secrets=secrets)
    try:
        assert secrets.holds(KEY)
        runtime.client.set_api_key(SecretStr("sk-RE-READ-KEY-789"))  # as a key re-read does
        assert secrets.holds("sk-RE-READ-KEY-789")
    finally:
        await runtime.aclose()


async def test_a_rebuilt_runtime_hands_its_new_key_to_the_same_process_secrets() -> None:
    secrets = Secrets()
    settings = Settings(api_key=SecretStr(KEY), base_url="http://127.0.0.1:9",
                        state_path=Path(":memory:"))
    first = build(settings, secrets=secrets)
    rotated = settings.model_copy(update={"api_key": SecretStr("sk-ROTATED-BY-RELOAD-456")})
    second = rebuild(first, rotated)
    try:
        assert secrets.holds(KEY) and secrets.holds("sk-ROTATED-BY-RELOAD-456")
    finally:
        await first.client.aclose()
        await second.aclose()


def test_values_added_from_many_threads_at_once_are_all_kept() -> None:
    """A hashed login token is verified (and added) in a worker thread while the loop adds
    QR payloads: no add may undo another."""
    import threading

    from supervisor.domain.secrets import Secrets

    secrets = Secrets()
    start = threading.Barrier(8)

    def add(n: int) -> None:
        start.wait()
        for i in range(2000):
            secrets.add(f"thread-{n}-value-{i:05d}")

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(secrets) == 16_000
    assert all(f"thread-{n}-value-01999" in secrets for n in range(8))
