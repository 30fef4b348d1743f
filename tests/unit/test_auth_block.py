"""The refused key's rule, a domain value of its own: pure, so exact."""

from __future__ import annotations

from supervisor.domain.auth import OPEN, AuthBlock


def test_a_working_key_never_waits_and_is_not_retried() -> None:
    assert not OPEN.blocked
    for now in (0.0, 1e9):
        assert not OPEN.waiting(now) and not OPEN.due(now) and OPEN.retry_in(now) == 0.0


def test_a_401_blocks_polls_for_the_retry_interval_then_tries_the_key_again() -> None:
    block = OPEN.refused(100.0, 300.0)
    assert block == AuthBlock(400.0) and block.blocked
    assert block.waiting(100.0) and block.waiting(399.999)
    assert block.retry_in(100.0) == 300.0 and block.retry_in(250.0) == 150.0
    assert not block.due(399.999)
    assert not block.waiting(400.0) and block.due(400.0) and block.retry_in(400.0) == 0.0
    assert block.due(1e9)  # still blocked (retried, not yet working) until a success


def test_a_401_while_blocked_starts_the_wait_again_from_now() -> None:
    block = OPEN.refused(100.0, 300.0).refused(400.0, 300.0)
    assert block == AuthBlock(700.0)


def test_a_success_lifts_the_block() -> None:
    assert OPEN.refused(100.0, 300.0).accepted() == OPEN
    assert OPEN.accepted() == OPEN


def test_a_new_key_ends_the_wait_and_changes_nothing_for_a_working_key() -> None:
    block = OPEN.refused(100.0, 300.0).new_key(150.0)
    assert block == AuthBlock(150.0) and block.blocked
    assert not block.waiting(150.0) and block.due(150.0)
    assert OPEN.new_key(150.0) == OPEN
