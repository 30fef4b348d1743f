"""The record's own rules: what its phase implies, and the words it keeps for people."""

from __future__ import annotations

import json

from msgspec.structs import replace

from supervisor.domain.models import LastOutcome, Phase, Record
from supervisor.state.schema import decode, encode


def test_the_gave_up_phase_implies_given_up_whatever_was_passed() -> None:
    assert Record("a", phase=Phase.GAVE_UP).gave_up
    assert Record("a", phase=Phase.GAVE_UP, gave_up=False).gave_up
    assert replace(Record("a"), phase=Phase.GAVE_UP).gave_up
    assert decode("a", '{"phase": "gave_up", "gave_up": false}').gave_up
    assert not Record("a", phase=Phase.UNHEALTHY).gave_up


def test_leaving_gave_up_keeps_it_until_it_is_cleared() -> None:
    given_up = Record("a", phase=Phase.GAVE_UP)
    assert replace(given_up, phase=Phase.VERIFYING).gave_up
    assert not replace(given_up, phase=Phase.HEALTHY, gave_up=False).gave_up


def test_last_outcome_words_are_the_ones_status_has_always_shown() -> None:
    assert LastOutcome.FAILED.because("relapsed") == "failed:relapsed"
    assert LastOutcome.DEFERRED.because("rate_limited") == "deferred:rate_limited"
    record = Record("a", last_outcome=LastOutcome.STARTING_ELSEWHERE)
    assert json.loads(encode(record))["last_outcome"] == "starting_elsewhere"
    assert decode("a", encode(record)) == record
    assert f"{LastOutcome.GAVE_UP}" == "gave_up"
