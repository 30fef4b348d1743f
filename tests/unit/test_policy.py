"""The poll-backoff rule, a policy of its own: pure, so exact."""

from __future__ import annotations

import pytest

from supervisor.domain.policy import POLL_BACKOFF_INTERVALS, poll_backoff, poll_resume_at


@pytest.mark.parametrize(("failures", "intervals"),
                         [(0, 1), (1, 1), (2, 2), (3, 4), (4, 4), (10**9, 4)])
def test_failed_polls_back_off_one_two_then_four_intervals(failures: int,
                                                            intervals: int) -> None:
    assert poll_backoff(30.0, failures) == 30.0 * intervals
    assert intervals <= POLL_BACKOFF_INTERVALS


def test_a_backed_off_poll_resumes_half_an_interval_before_it_is_due() -> None:
    assert poll_resume_at(100.0, 30.0, 30.0) is None  # one interval: no backoff
    assert poll_resume_at(100.0, 30.0, 60.0) == 145.0
    assert poll_resume_at(100.0, 30.0, 120.0) == 205.0
