"""The status page's application, asked as the listener asks it (``httpx.ASGITransport``):
who may see what, CSRF, the headers, the JSON shapes, paging and filters."""

from __future__ import annotations

import httpx
import pytest
from structlog.testing import capture_logs

from supervisor.domain import events as ev
from supervisor.domain.models import Phase, Record
from supervisor.web.app import CSP, SCAN_HINT
from tests.web.conftest import PAYLOAD, TOKEN, Page, Records, log_in

PROTECTED_GETS = ["/", "/sessions/scan-1", "/sessions/scan-1/qr.svg", "/api/sessions",
                  "/api/sessions/scan-1", "/api/history"]
ACTIONS = ["/sessions/scan-1/restart", "/sessions/scan-1/pause", "/sessions/scan-1/resume"]


# --- who may see what ---

@pytest.mark.parametrize("path", PROTECTED_GETS)
async def test_without_credentials_nothing_is_shown(anonymous: httpx.AsyncClient,
                                                   page: Page, path: str) -> None:
    answer = await anonymous.get(path)
    if path.startswith("/api/") or path.endswith("qr.svg"):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    else:
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login?next=")
    assert PAYLOAD not in answer.text
    assert page.fetched == []  # the QR was not even fetched


@pytest.mark.parametrize("path", ACTIONS)
async def test_without_credentials_no_action_is_taken(anonymous: httpx.AsyncClient,
                                                     page: Page, path: str) -> None:
    answer = await anonymous.post(path, data={"csrf": "anything"})
    assert answer.status_code == 401
    assert page.operator.calls == []


async def test_a_wrong_bearer_token_is_refused(page: Page) -> None:
    async with page.client(headers={"authorization": "Bearer not-the-token"}) as client:
        assert (await client.get("/api/sessions")).status_code == 401
        assert (await client.post("/sessions/scan-1/restart")).status_code == 401
    assert page.operator.calls == []


async def test_a_bearer_token_sees_the_json_and_acts_without_csrf(
        bearer: httpx.AsyncClient, page: Page) -> None:
    assert (await bearer.get("/api/sessions")).status_code == 200
    answer = await bearer.post("/sessions/scan-1/restart")
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "session_id": "scan-1", "message": "restart requested"}
    assert page.operator.calls == [("restart", "scan-1", "alice")]


async def test_the_login_sets_a_strict_http_only_cookie(anonymous: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        answer = await anonymous.post("/login", data={"name": "alice", "token": TOKEN,
                                                      "next": "/sessions/scan-1"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sessions/scan-1"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie
    assert [e for e in logs if e["event"] == ev.HTTP_LOGIN] == [
        {"event": ev.HTTP_LOGIN, "name": "alice", "peer": "192.0.2.7", "log_level": "info"}]
    assert TOKEN not in repr(logs)
    assert (await anonymous.get("/")).status_code == 200


async def test_the_cookie_is_secure_behind_https(anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.post("/login", data={"name": "alice", "token": TOKEN},
                                  headers={"x-forwarded-proto": "https"})
    assert "secure" in answer.headers["set-cookie"].lower()


async def test_a_failed_login_is_told_and_counted(anonymous: httpx.AsyncClient,
                                                  page: Page) -> None:
    with capture_logs() as logs:
        answer = await anonymous.post("/login", data={"name": "alice", "token": "wrong"})
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    assert [e["event"] for e in logs] == [ev.HTTP_LOGIN_FAILED]
    assert logs[0]["peer"] == "192.0.2.7"
    assert "wrong" not in repr(logs)
    assert (await anonymous.get("/api/sessions")).status_code == 401


async def test_logins_are_refused_while_the_peer_is_locked_out(
        anonymous: httpx.AsyncClient, page: Page) -> None:
    for _ in range(30):
        if page.limiter.blocked("192.0.2.7") is not None:
            break
        page.limiter.failed("192.0.2.7")
    assert page.limiter.blocked("192.0.2.7") is not None
    answer = await anonymous.post("/login", data={"name": "alice", "token": TOKEN})
    assert answer.status_code == 429
    assert "set-cookie" not in answer.headers


async def test_after_the_login_goes_only_to_a_path_of_this_site(
        anonymous: httpx.AsyncClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil"):
        answer = await anonymous.post("/login", data={"name": "alice", "token": TOKEN,
                                                      "next": target})
        assert answer.headers["location"] == "/"


async def test_logout_forgets_the_login(anonymous: httpx.AsyncClient) -> None:
    csrf = await log_in(anonymous)
    answer = await anonymous.post("/logout", data={"csrf": csrf})
    assert answer.status_code == 303
    anonymous.cookies.clear()  # what the browser does with the expired cookie
    assert (await anonymous.get("/api/sessions")).status_code == 401


# --- CSRF ---

@pytest.mark.parametrize("path", ACTIONS)
async def test_a_post_with_the_cookie_needs_the_csrf_token(anonymous: httpx.AsyncClient,
                                                          page: Page, path: str) -> None:
    csrf = await log_in(anonymous)
    assert (await anonymous.post(path)).status_code == 403
    assert (await anonymous.post(path, data={"csrf": "x" + csrf})).status_code == 403
    assert page.operator.calls == []
    answer = await anonymous.post(path, data={"csrf": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/sessions/scan-1?msg=")
    assert page.operator.calls == [(path.rsplit("/", 1)[1], "scan-1", "alice")]


async def test_a_refused_action_says_why(anonymous: httpx.AsyncClient, page: Page) -> None:
    csrf = await log_in(anonymous)
    page.operator.refuse = "a restart of it is in flight"
    answer = await anonymous.post("/sessions/scan-1/restart", data={"csrf": csrf},
                                  follow_redirects=True)
    assert "refused: a restart of it is in flight" in answer.text


async def test_a_refused_action_is_409_for_a_script(bearer: httpx.AsyncClient,
                                                    page: Page) -> None:
    page.operator.refuse = "not supervised"
    answer = await bearer.post("/sessions/nope/pause")
    assert answer.status_code == 409
    assert answer.json()["message"] == "refused: not supervised"


# --- headers ---

@pytest.mark.parametrize("path", [*PROTECTED_GETS, "/login", "/static/page.css"])
async def test_every_answer_has_the_security_headers(bearer: httpx.AsyncClient,
                                                     path: str) -> None:
    answer = await bearer.get(path)
    assert answer.status_code == 200, path
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    if not path.startswith("/static/"):
        assert answer.headers["cache-control"] == "no-store"


async def test_refusals_have_the_security_headers_too(anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.get("/sessions/scan-1/qr.svg")
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["cache-control"] == "no-store"


# --- the QR code ---

async def test_the_qr_code_is_an_svg_fetched_only_when_asked(bearer: httpx.AsyncClient,
                                                            page: Page) -> None:
    assert (await bearer.get("/")).status_code == 200
    assert (await bearer.get("/sessions/scan-1")).status_code == 200
    assert page.fetched == []
    answer = await bearer.get("/sessions/scan-1/qr.svg")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/svg+xml"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.content.lstrip().startswith((b"<?xml", b"<svg"))
    assert page.fetched == ["scan-1"]


async def test_the_session_page_shows_the_qr_and_the_hint_only_when_needed(
        bearer: httpx.AsyncClient) -> None:
    needing = (await bearer.get("/sessions/scan-1")).text
    assert 'src="/sessions/scan-1/qr.svg"' in needing
    assert SCAN_HINT.replace(">", "&gt;") in needing
    healthy = (await bearer.get("/sessions/s-00001")).text
    assert "qr.svg\"" not in healthy.replace('data-src="/sessions/s-00001/qr.svg"', "")
    assert 'id="qr" data-src="/sessions/s-00001/qr.svg" data-every="10" hidden' in healthy


async def test_a_healthy_session_has_no_qr_code(bearer: httpx.AsyncClient, page: Page) -> None:
    answer = await bearer.get("/sessions/s-00001/qr.svg")
    assert answer.status_code == 404
    assert page.fetched == []


async def test_the_payload_is_in_no_page_nor_json(bearer: httpx.AsyncClient) -> None:
    for path in PROTECTED_GETS[:2] + PROTECTED_GETS[3:]:
        assert PAYLOAD not in (await bearer.get(path)).text


# --- the JSON and the pages ---

async def test_api_sessions_has_the_status_json_shape(bearer: httpx.AsyncClient) -> None:
    from supervisor.domain.policy import StatusClasses
    from supervisor.state.report import session_status

    data = (await bearer.get("/api/sessions")).json()
    assert data["total"] == 5 and data["matched"] == 5
    assert data["summary"] == {"healthy": 3, "recovering": 1, "needs_person": 1,
                               "gave_up": 0, "gone": 0}
    first = data["sessions"][0]
    expected = session_status(Record("scan-1", name="front desk", phase=Phase.NEEDS_PERSON,
                                     last_status="SCAN_QR_CODE", since=1_699_999_900.0),
                              StatusClasses.of(), 1_700_000_000.0, 1_700_000_000.0)
    assert first == expected
    assert [s["id"] for s in data["sessions"]][:2] == ["scan-1", "down-1"]  # attention first


async def test_api_history_has_the_history_json_shape(bearer: httpx.AsyncClient,
                                                      page: Page) -> None:
    from supervisor.domain.models import HistoryEntry
    from supervisor.state.report import history_item

    entry = HistoryEntry(1_699_999_950.0, "down-1", "restart.requested", action="restart",
                         attempt=1)
    page.records.entries.append(entry)
    data = (await bearer.get("/api/history?session=down-1")).json()
    assert data == {"history": [history_item(entry)]}
    assert (await bearer.get("/api/history?session=s-00001")).json() == {"history": []}


async def test_a_paused_session_says_by_whom(bearer: httpx.AsyncClient, page: Page) -> None:
    from supervisor.state.store import Hold

    page.records.held["down-1"] = Hold("down-1", "alice", 1_699_999_990.0)
    one = (await bearer.get("/api/sessions/down-1")).json()["session"]
    assert (one["paused"], one["paused_by"], one["paused_at"]) == (
        True, "alice", "2023-11-14T22:13:10Z")
    assert "by alice" in (await bearer.get("/")).text


async def test_the_filters_and_the_search(bearer: httpx.AsyncClient) -> None:
    async def ids(query: str) -> list[str]:
        return [s["id"] for s in (await bearer.get(f"/api/sessions?{query}")).json()["sessions"]]

    assert await ids("class=needs_person") == ["scan-1"]
    assert await ids("class=restartable") == ["down-1"]
    assert await ids("q=FRONT") == ["scan-1"]
    assert await ids("q=s-0000") == ["s-00000", "s-00001", "s-00002"]
    assert await ids("class=healthy&q=shop 2") == ["s-00002"]
    html = (await bearer.get("/?class=needs_person")).text
    assert "front desk" in html and "shop 1" not in html


async def test_ten_thousand_sessions_are_paged(page: Page) -> None:
    many = Records(Record(f"s-{i:05d}", name=f"shop {i:05d}", last_status="WORKING")
                   for i in range(10_000))
    crowded = Page(many, page.clock)
    async with crowded.client(headers={"authorization": f"Bearer {TOKEN}"}) as client:
        html = (await client.get("/")).text
        assert html.count('<tr class="g-healthy"') == 100
        assert "page 1 of 100" in html
        data = (await client.get("/api/sessions?page=100")).json()
        assert (data["page"], data["pages"], len(data["sessions"])) == (100, 100, 100)
        assert data["sessions"][-1]["id"] == "s-09999"
        assert len((await client.get("/api/sessions")).json()["sessions"]) == 10_000


async def test_text_from_the_api_is_escaped(page: Page) -> None:
    page.records.by_id["x"] = Record("x", name="<script>alert(1)</script>",
                                     last_status="WORKING")
    async with page.client(headers={"authorization": f"Bearer {TOKEN}"}) as client:
        for path in ("/", "/sessions/x"):
            html = (await client.get(path)).text
            assert "<script>alert" not in html
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_an_unknown_session_is_404(bearer: httpx.AsyncClient) -> None:
    assert (await bearer.get("/sessions/nope")).status_code == 404
    assert (await bearer.get("/api/sessions/nope")).status_code == 404


async def test_the_page_refers_to_nothing_elsewhere(bearer: httpx.AsyncClient) -> None:
    for path in ("/", "/sessions/scan-1", "/login"):
        html = (await bearer.get(path)).text
        assert "http://" not in html and "https://" not in html and "//" not in html.replace(
            "<!doctype html>", "")


async def test_failed_logins_slow_the_next_ones_within_the_listeners_deadline(
        anonymous: httpx.AsyncClient, page: Page) -> None:
    from supervisor.web.app import LOGIN_WAIT

    for _ in range(5):
        await anonymous.post("/login", data={"name": "alice", "token": "wrong-token-0123456"})
    assert page.clock.sleeps == [0.5, 1.0, 2.0, LOGIN_WAIT]  # 4.0 asked, cut to fit
    assert LOGIN_WAIT < 5.0  # the listener's response timeout
    answer = await anonymous.post("/login", data={"name": "alice", "token": TOKEN})
    assert answer.status_code == 303
    assert page.limiter.delay("192.0.2.7") == 0.0  # a success forgets the failures


async def test_refused_bearer_tokens_count_as_failed_logins(page: Page) -> None:
    async with page.client(headers={"authorization": "Bearer wrong-token-0123456"}) as client:
        for _ in range(10):
            assert (await client.get("/api/sessions")).status_code == 401
    assert page.limiter.blocked("192.0.2.7") is not None
    async with page.client(headers={"authorization": f"Bearer {TOKEN}"}) as client:
        assert (await client.get("/api/sessions")).status_code == 401  # locked out


async def test_only_the_pages_own_outcome_messages_are_shown(
        anonymous: httpx.AsyncClient, page: Page) -> None:
    csrf = await log_in(anonymous)
    done = await anonymous.post("/sessions/scan-1/pause", data={"csrf": csrf},
                                follow_redirects=True)
    assert '<p class="message" role="status">supervision paused</p>' in done.text
    forged = await anonymous.get("/sessions/scan-1?msg=Scan+again+at+evil.example&sig=00")
    assert "evil.example" not in forged.text
    unsigned = await anonymous.get("/sessions/scan-1?msg=Scan+again+at+evil.example")
    assert "evil.example" not in unsigned.text
