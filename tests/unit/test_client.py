"""``WasendClient``'s parts that need no answer: the mapping functions, ``safe_url``,
what the constructor refuses and the secrets it is handed. Everything that goes through
a request is in ``test_client_respx.py``, against respx routes; the excerpt rules are
in ``test_secrets.py``."""

from __future__ import annotations

from importlib import metadata

import httpx
import pytest
from pydantic import SecretStr

import supervisor
from supervisor.api.client import WasendClient, map_response, map_transport_error, safe_url
from supervisor.api.errors import ApiTimeout, ApiUnreachable
from supervisor.domain.secrets import Secrets

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
    assert safe_url(url, Secrets([KEY])) == "https://api.wasend.test:8443/x/[REDACTED]/sessions"


def test_map_response_cleans_the_excerpt_of_the_secrets_it_is_given() -> None:
    body = f"key {KEY} refused".encode()
    error = map_response("get", httpx.Response(500), now=WALL, body=body,
                         secrets=Secrets([KEY]))
    assert error is not None
    assert str(error) == "get: HTTP 500: server error: key [REDACTED] refused"


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


def test_the_client_adds_its_key_and_every_key_set_later_to_the_secrets_it_is_handed() -> None:
    secrets = Secrets()
    client = WasendClient(BASE, SecretStr(KEY), timeout=1.0, secrets=secrets)
    assert secrets.holds(f"x{KEY}x")
    client.set_api_key(SecretStr("sk-NEXT-KEY-456"))
    assert secrets.holds("sk-NEXT-KEY-456") and secrets.holds(KEY)  # the old one stays one
    assert KEY not in repr(secrets) and "sk-NEXT" not in repr(secrets)
