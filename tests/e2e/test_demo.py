"""The README's main job: the demo runs the real daemon against the simulator."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from supervisor.demo import run_demo
from tests.conftest import reset_logging

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def test_demo_restarts_a_stopped_session_and_prints_a_summary() -> None:
    out = io.StringIO()
    assert run_demo(duration=8.0, out=out) == 0
    text = out.getvalue()
    assert "--- t=   3s  shop-paris stops" in text
    succeeded = [line for line in text.splitlines() if "restart.succeeded" in line]
    assert any("shop-paris" in line for line in succeeded)
    summary = text.split("\nSummary\n", 1)[1]
    assert "restarts verified healthy    1" in summary
    assert "requests sent too early      0" in summary
    assert "poll.completed" not in "\n".join(
        line for line in text.splitlines() if "actions=0" in line)


def test_demo_serves_the_status_page_with_the_qr_code_to_scan() -> None:
    import re
    import threading

    import httpx

    from tests.waiting import wait_for

    out = io.StringIO()
    statuses: list[int] = []
    thread = threading.Thread(target=lambda: statuses.append(run_demo(duration=14.0, out=out)))
    thread.start()
    try:
        wait_for(lambda: "The status page: " in out.getvalue(), timeout=30)
        found = re.search(r"The status page: (http://\S+/) \(log in as demo, token (\S+)\);",
                          out.getvalue())
        assert found is not None, out.getvalue()
        url, token = found.groups()
        with httpx.Client(base_url=url, trust_env=False, timeout=5,
                          headers={"authorization": f"Bearer {token}"}) as http:
            def needs_person() -> bool:
                answer = http.get("/api/sessions/marketing")
                return answer.status_code == 200 and (
                    answer.json()["session"]["phase"] == "needs_person")

            wait_for(needs_person, timeout=20)
            qr = http.get("/sessions/marketing/qr.svg")
            assert qr.status_code == 200 and qr.headers["content-type"] == "image/svg+xml"
            assert httpx.get(url, trust_env=False).status_code == 303  # to the login
    finally:
        thread.join(60)
    assert statuses == [0]
    assert token not in out.getvalue().split("The status page: ", 1)[1].split("\n", 1)[1]
