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
