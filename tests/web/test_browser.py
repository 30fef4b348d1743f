"""The status page in a real browser: Debian's chromium driven by Playwright, against a
real ``run`` process and the simulator over real HTTP on 127.0.0.1.

One daemon and one browser serve the module; each test works on sessions of its own.
What is asserted is what a person sees and does: the table following the simulator with
no reload, the QR code that zbar reads back as the simulator's payload (and that goes
once the session is linked), the buttons' effects in the simulator's request log, the
refusals without a login, and no sideways scroll at a phone's width. With
``WRITE_SCREENSHOTS=1`` it also writes the README's screenshots to docs/.

A missing chromium or zbarimg skips these tests on a developer's machine and fails them
under CI (``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from supervisor.simulator import SimulatorServer, parse_scenario
from tests.alerts.receivers import free_port
from tests.e2e.conftest import API_KEY, ROOT
from tests.e2e.test_alerts_run import events, named, polls, stop
from tests.faults.conftest import start_run
from tests.qrcodes import chromium, decode_png
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TOKEN = "browser-token-6f2d9a41c7e3b805"
QR = "SCAN_QR_CODE"
SHOPS = [f"shop-{i:02d}" for i in range(1, 9)]
OWN = ["desk", "live", "restart-me", "hold-me", "csrf-me"]  # one test's each
DOCS = ROOT / "docs"


@dataclass
class Stack:
    server: SimulatorServer
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    seen: list[str]  # the QR payloads the tests saw

    def url(self, path: str) -> str:
        return self.base + path

    def payload(self, session_id: str) -> str:
        """The QR payload the simulator hands out for the session now."""
        data = self.server.simulator.qr_payload(session_id)
        assert data is not None, f"{session_id} has no QR code"
        self.seen.append(data)
        return data

    def restarts(self, session_id: str) -> int:
        return sum(1 for r in self.server.simulator.requests()
                   if r.kind == "restart" and r.session == session_id)

    def more_polls(self, count: int) -> None:
        start = polls(self.log)
        wait_for(lambda: polls(self.log) >= start + count,
                 describe=lambda: self.log.read_text()[-2000:])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    chromium()
    work = tmp_path_factory.mktemp("page")
    auth = work / "auth"
    auth.write_text(f"# the page's logins\nalice:{TOKEN}\n")
    auth.chmod(0o600)
    sessions = [{"id": s, "session_name": f"Shop {s[-2:]}"} for s in SHOPS]
    sessions += [{"id": "desk", "session_name": "Front desk"},
                 {"id": "live", "session_name": "Reception"},
                 {"id": "restart-me", "session_name": "Warehouse"},
                 {"id": "hold-me", "session_name": "Billing"},
                 {"id": "csrf-me", "session_name": "Marketing"}]
    server = SimulatorServer(scenario=parse_scenario(
        {"sessions": sessions, "session_count": 0, "start_delay": 0.2, "seed": 1,
         "qr_rotate": 600}, "page"),  # one code per test: the one decoded is the current
        api_key=API_KEY).start()
    port = free_port()
    log = work / "run.log"
    process = start_run(server, work / "state.db", log, HTTP_LISTEN=f"127.0.0.1:{port}",
                        HTTP_AUTH_FILE=str(auth), BACKOFF__INITIAL="0.2", BACKOFF__MAX="0.5")
    base = f"http://127.0.0.1:{port}"
    running = Stack(server, process, base, log, [])
    try:
        def ready() -> bool:
            try:
                return httpx.get(base + "/readyz", trust_env=False, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=30, describe=lambda: log.read_text()[-3000:])
        yield running
    finally:
        stop(process)
        server.stop()
    # Whatever the tests did, the QR payloads are in no line the daemon logged.
    text = log.read_text()
    assert not [seen for seen in running.seen if seen in text]
    assert TOKEN not in text


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(),
                                              args=["--no-sandbox"])
        yield launched
        launched.close()


def logged_in(browser: Any, stack: Stack, *, width: int = 1280, height: int = 860) -> Any:
    """A new browser page, logged in through the form, on the sessions' list."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(stack.url("/"))
    assert page.url.startswith(stack.url("/login"))  # sent to the login first
    page.fill("input[name=name]", "alice")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(stack.url("/"))
    return page


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    opened = logged_in(browser, stack)
    yield opened
    opened.context.close()


def shows(page: Any, session_id: str, label: str, text: str) -> None:
    """Wait until the table's cell of that session and column says ``text``."""
    page.wait_for_function(
        """([id, label, text]) => {
            const td = document.querySelector(
                `#rows tr[data-id="${id}"] td[data-label="${label}"]`);
            return td !== null && td.textContent === text; }""", arg=[session_id, label, text])


def row(page: Any, session_id: str) -> Any:
    return page.locator(f'#rows tr[data-id="{session_id}"]')


def cell(page: Any, session_id: str, label: str) -> Any:
    return row(page, session_id).locator(f'td[data-label="{label}"]')


def test_the_page_lists_the_sessions_and_follows_the_simulator_without_a_reload(
        page: Any, stack: Stack) -> None:
    for session_id in [*SHOPS, *OWN]:
        assert row(page, session_id).count() == 1, session_id
    assert cell(page, "live", "Status").inner_text() == "WORKING"
    page.evaluate("window.notReloaded = true")
    stack.server.simulator.set_status("live", "UPGRADING")  # a status nobody acts on
    shows(page, "live", "Status", "UPGRADING")
    assert cell(page, "live", "Phase").inner_text() == "unknown"
    assert page.evaluate("window.notReloaded") is True
    stack.server.simulator.set_status("live", "WORKING")


def test_a_session_to_scan_shows_the_qr_code_until_it_is_linked(
        page: Any, stack: Stack, tmp_path: Path) -> None:
    stack.server.simulator.set_status("desk", QR)
    shows(page, "desk", "Phase", "needs_person")
    page.click('#rows tr[data-id="desk"] a')
    page.wait_for_url(stack.url("/sessions/desk"))
    image = page.locator("#qr-image")
    image.wait_for(state="visible")
    page.wait_for_function("() => { const i = document.getElementById('qr-image');"
                           " return i.complete && i.naturalWidth > 0; }")
    assert "Linked devices > Link a device" in page.locator("#qr .hint").inner_text()
    shot = image.screenshot()
    first = stack.payload("desk")
    assert decode_png(shot, tmp_path) == [first]
    # WhatsApp rotates the code: the page follows, with no reload.
    handed_out = {first}
    stack.server.simulator.update_faults(qr_rotate=1.0)
    try:
        shown = image.get_attribute("src")

        def refreshed() -> bool:
            handed_out.add(stack.payload("desk"))
            return bool(image.get_attribute("src") != shown)

        wait_for(refreshed, timeout=20, step=0.2)
        page.wait_for_function("() => { const i = document.getElementById('qr-image');"
                               " return i.complete && i.naturalWidth > 0; }")
        (again,) = decode_png(image.screenshot(), tmp_path)
        handed_out.add(stack.payload("desk"))
        assert again != first and again in handed_out
    finally:
        stack.server.simulator.update_faults(qr_rotate=600.0)
    stack.server.simulator.set_status("desk", "WORKING")  # the phone linked it
    page.wait_for_function("() => document.getElementById('qr').hidden")
    assert image.get_attribute("src") is None
    assert page.locator('#facts [data-key="phase"]').inner_text() == "healthy"


def test_restart_now_makes_exactly_one_restart_request(page: Any, stack: Stack) -> None:
    page.goto(stack.url("/sessions/restart-me"))
    before = stack.restarts("restart-me")
    page.click("button[value=restart]")
    page.wait_for_url("**/sessions/restart-me?msg=*")
    assert page.locator(".message").inner_text() == "restart requested"
    assert stack.restarts("restart-me") == before + 1
    stack.more_polls(10)  # it comes up again: nothing more is sent
    assert stack.restarts("restart-me") == before + 1
    found = named(events(stack.log), "operator.restart_requested")
    assert [(e["session_id"], e["by"]) for e in found] == [("restart-me", "alice")]


def test_a_paused_session_is_left_alone_and_restarted_once_resumed(
        page: Any, stack: Stack) -> None:
    page.goto(stack.url("/sessions/hold-me"))
    assert page.locator("button[value=resume]").is_hidden()  # only what applies is offered
    page.click("button[value=pause]")
    page.wait_for_url("**/sessions/hold-me?msg=*")
    assert page.locator(".message").inner_text() == "supervision paused"
    assert page.locator("button[value=pause]").is_hidden()
    assert page.locator('#facts [data-key="paused"]').inner_text().startswith("by alice")
    stack.server.simulator.set_status("hold-me", "STOPPED")
    stack.more_polls(10)
    assert stack.restarts("hold-me") == 0
    page.click("button[value=resume]")
    page.wait_for_url("**/sessions/hold-me?msg=*")
    assert page.locator(".message").inner_text() == "supervision resumed"
    wait_for(lambda: stack.restarts("hold-me") >= 1)
    assert stack.restarts("hold-me") == 1
    names = [(e["event"], e["by"]) for e in named(events(stack.log), "operator.paused",
                                                  "operator.resumed")]
    assert names == [("operator.paused", "alice"), ("operator.resumed", "alice")]


def test_without_a_login_nothing_is_shown_nor_done(stack: Stack) -> None:
    stack.server.simulator.set_status("csrf-me", QR)
    stack.more_polls(2)
    payload = stack.payload("csrf-me")
    with httpx.Client(base_url=stack.base, trust_env=False, timeout=5) as anonymous:
        assert anonymous.get("/livez").status_code == 200  # the probes stay open
        for path in ("/", "/sessions/csrf-me"):
            answer = anonymous.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/login")
            assert payload not in answer.text
        for path in ("/sessions/csrf-me/qr.svg", "/api/sessions", "/api/sessions/csrf-me",
                     "/api/history"):
            answer = anonymous.get(path)
            assert answer.status_code == 401, path
            assert payload not in answer.text
        for action in ("restart", "pause", "resume"):
            answer = anonymous.post(f"/sessions/csrf-me/{action}")
            assert answer.status_code == 401
            assert payload not in answer.text
        wrong = anonymous.get("/api/sessions", headers={"authorization": "Bearer nope-" * 3})
        assert wrong.status_code == 401
    with httpx.Client(base_url=stack.base, trust_env=False, timeout=5) as person:
        login = person.post("/login", data={"name": "alice", "token": TOKEN})
        assert login.status_code == 303
        assert person.post("/sessions/csrf-me/pause").status_code == 403  # no CSRF token
        assert person.post("/sessions/csrf-me/pause",
                           data={"csrf": "guessed"}).status_code == 403
        svg = person.get("/sessions/csrf-me/qr.svg")
        assert svg.status_code == 200 and svg.headers["cache-control"] == "no-store"
    with httpx.Client(base_url=stack.base, trust_env=False, timeout=5) as script:
        listed = script.get("/api/sessions", headers={"authorization": f"Bearer {TOKEN}"})
        assert listed.status_code == 200
        assert not any(s["paused"] for s in listed.json()["sessions"] if s["id"] == "csrf-me")
    assert payload not in stack.log.read_text()
    stack.server.simulator.set_status("csrf-me", "WORKING")


def test_a_phone_never_scrolls_sideways(browser: Any, stack: Stack) -> None:
    phone = logged_in(browser, stack, width=390, height=844)
    try:
        for path in ("/", "/sessions/shop-01", "/login"):
            phone.goto(stack.url(path))
            assert phone.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth"), path
    finally:
        phone.context.close()


def test_the_screenshots_show_a_session_to_scan_among_healthy_ones(
        browser: Any, stack: Stack, tmp_path: Path) -> None:
    """Made by every run (so the README's pictures can always be made again), written to
    docs/ only with WRITE_SCREENSHOTS=1."""
    where = DOCS if os.environ.get("WRITE_SCREENSHOTS") == "1" else tmp_path
    stack.server.simulator.set_status("desk", QR)
    stack.server.simulator.set_status("shop-03", "STOPPED")
    stack.more_polls(3)
    for name, width, height in (("desktop", 1280, 800), ("phone", 390, 844)):
        shown = logged_in(browser, stack, width=width, height=height)
        try:
            shows(shown, "desk", "Phase", "needs_person")
            shown.screenshot(path=str(where / f"status-page-{name}.png"),
                             full_page=name == "desktop")
            if name == "phone":  # and the session to scan, as its person sees it
                shown.goto(stack.url("/sessions/desk"))
                shown.wait_for_function("() => { const i = document.getElementById('qr-image');"
                                        " return i.complete && i.naturalWidth > 0; }")
                shown.screenshot(path=str(where / "status-page-qr.png"), full_page=True)
        finally:
            shown.context.close()
    for name, width in (("desktop", 1280), ("phone", 390), ("qr", 390)):
        png = (where / f"status-page-{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(png[16:20], "big") == width  # the IHDR's width
    stack.server.simulator.set_status("desk", "WORKING")
