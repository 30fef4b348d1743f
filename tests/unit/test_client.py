"""``WasendClient``'s parts that need no answer: the mapping functions, redaction,
``safe_url`` and what the constructor refuses. Everything that goes through a request
is in ``test_client_respx.py``, against respx routes."""

from __future__ import annotations

from importlib import metadata

import httpx
import pytest
from pydantic import SecretStr

import supervisor
from supervisor.api.client import (
    EXCERPT_LIMIT,
    WasendClient,
    map_response,
    map_transport_error,
    redacted_excerpt,
    safe_url,
)
from supervisor.api.errors import ApiTimeout, ApiUnreachable

KEY = "sk-TEST-SECRET-KEY-123"
BASE = "https://api.wasend.test"
WALL = 1_700_000_000.0


# --- the mapping functions on their own -----------------------------------------------


def test_the_user_agent_carries_the_installed_version() -> None:
    assert metadata.version("wasend-supervisor") == supervisor.__version__


def test_map_transport_error_is_usable_on_its_own() -> None:
    request = httpx.Request("GET", f"{BASE}/sessions", headers={"Authorization": f"Bearer {KEY}"})
    error = map_transport_error("list", httpx.ConnectError("refused", request=request))
    assert isinstance(error, ApiUnreachable)
    assert str(error) == f"list: API unreachable at {BASE}/sessions (ConnectError: refused)"


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_map_response_is_none_for_any_2xx(status: int) -> None:
    assert map_response("get", httpx.Response(status), now=WALL) is None


def test_the_calls_own_deadline_is_a_timeout_naming_the_url_and_the_setting() -> None:
    error = map_transport_error("restart", TimeoutError(), url=f"{BASE}/sessions/s1/restart",
                                timeout=2.0)
    assert isinstance(error, ApiTimeout) and error.kind == "timeout"
    assert str(error) == (f"restart: timed out at {BASE}/sessions/s1/restart: "
                          "no complete answer within request_timeout (2s)")


def test_safe_url_drops_user_query_and_fragment_and_redacts_secrets() -> None:
    url = f"https://u:p@api.wasend.test:8443/x/{KEY}/sessions?token=abc#frag"
    assert safe_url(url, [KEY]) == "https://api.wasend.test:8443/x/[REDACTED]/sessions"


# --- redaction -----------------------------------------------------------------------


def test_excerpt_of_a_bytearray_is_the_excerpt_of_the_same_bytes() -> None:
    raw = f'{{"error": "nope", "token": "{KEY}"}}'.encode()
    assert redacted_excerpt(bytearray(raw), [KEY]) == redacted_excerpt(raw, [KEY])
    assert "nope" in redacted_excerpt(bytearray(raw), [KEY])


def test_excerpt_is_single_line_short_and_redacted() -> None:
    text = f"line one\r\n\tline two\x00\x1b[31m Authorization: Bearer abc.def {KEY} " + "z" * 500
    excerpt = redacted_excerpt(text.encode(), [KEY])
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
    excerpt = redacted_excerpt(text)
    assert "hunter2hunter2" not in excerpt
    assert "aHVudGVy" not in excerpt
    assert "[REDACTED]" in excerpt


def test_a_key_straddling_the_length_limit_is_redacted_before_the_cut() -> None:
    text = "x" * (EXCERPT_LIMIT - 8) + " " + KEY
    excerpt = redacted_excerpt(text, [KEY])
    assert excerpt.endswith(" [REDAC…")
    assert "sk-TEST" not in excerpt
    assert len(excerpt) == EXCERPT_LIMIT


def test_excerpt_does_not_end_in_the_start_of_a_key_cut_by_the_window() -> None:
    body = b" " * 4090 + KEY.encode()  # the excerpt window ends inside the key
    excerpt = redacted_excerpt(body, [KEY])
    assert "sk-TE" not in excerpt


# --- construction ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "has space", "new\nline", "ünïcode", "\t"])
def test_an_unusable_key_is_refused_without_repeating_it(bad: str) -> None:
    with pytest.raises(ValueError, match="API key") as caught:
        WasendClient(BASE, SecretStr(bad), timeout=1.0)
    assert str(caught.value) == "the API key must be non-empty printable ASCII without spaces"


@pytest.mark.parametrize("base_url", ["", "api.wasend.dev", "ftp://api.wasend.dev", "/sessions"])
def test_a_base_url_that_is_not_absolute_http_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        WasendClient(base_url, SecretStr(KEY), timeout=1.0)


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("inf"), float("nan")])
def test_a_timeout_that_is_not_positive_and_finite_is_refused(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        WasendClient(BASE, SecretStr(KEY), timeout=timeout)


def test_repr_shows_the_base_url_and_not_the_key() -> None:
    client = WasendClient(BASE, SecretStr(KEY), timeout=1.0)
    assert repr(client) == f"<WasendClient {BASE}>"
