"""Whether a webhook is believed: its HMAC (sha512 or sha256) in constant time, its
timestamp within max_skew, its id once; unsigned only from loopback or allow_from."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from supervisor.webhooks.signature import Checker, Refusal
from tests.fakes import FakeClock

KEY = "whk-9f8e7d6c5b4a3928-secret"
NOW = 1_764_590_400.0
BODY = b'{"event":"session.status","session":"s1","payload":{"status":"FAILED"}}'


def signed(body: bytes = BODY, *, algorithm: str = "sha512", at: float = NOW,
           key: str = KEY) -> dict[str, str]:
    digest = hmac.new(key.encode(), body, getattr(hashlib, algorithm)).hexdigest()
    return {"x-webhook-hmac": digest, "x-webhook-hmac-algorithm": algorithm,
            "x-webhook-timestamp": str(int(at * 1000))}


def checker(**kwargs: object) -> Checker:
    return Checker(SecretStr(KEY), FakeClock(NOW), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["sha512", "sha256"])
def test_a_body_signed_with_the_key_is_believed(algorithm: str) -> None:
    checker().check(signed(algorithm=algorithm), BODY, "203.0.113.9")


def test_no_algorithm_header_means_sha512() -> None:
    headers = signed()
    del headers["x-webhook-hmac-algorithm"]
    checker().check(headers, BODY, "203.0.113.9")


@pytest.mark.parametrize("change", [
    "other key", "other body", "no signature", "md5", "truncated", "upper hex"])
def test_anything_but_the_right_signature_is_refused(change: str) -> None:
    headers, body = signed(), BODY
    if change == "other key":
        headers = signed(key="whk-another-key-0000000")
    elif change == "other body":
        body = BODY.replace(b"FAILED", b"WORKING")
    elif change == "no signature":
        del headers["x-webhook-hmac"]
    elif change == "md5":
        headers["x-webhook-hmac-algorithm"] = "md5"
    elif change == "truncated":
        headers["x-webhook-hmac"] = headers["x-webhook-hmac"][:-2]
    if change == "upper hex":  # hex is hex, whatever its case
        headers["x-webhook-hmac"] = headers["x-webhook-hmac"].upper()
        checker().check(headers, body, "203.0.113.9")
        return
    with pytest.raises(Refusal) as caught:
        checker().check(headers, body, "203.0.113.9")
    assert caught.value.reason == "signature"


@pytest.mark.parametrize("at", [NOW - 301, NOW + 301])
def test_a_timestamp_beyond_max_skew_is_refused(at: float) -> None:
    with pytest.raises(Refusal) as caught:
        checker().check(signed(at=at), BODY, "203.0.113.9")
    assert caught.value.reason == "skew"
    checker().check(signed(at=NOW - 299), BODY, "203.0.113.9")


def test_a_signed_event_without_a_timestamp_is_refused() -> None:
    headers = signed()
    del headers["x-webhook-timestamp"]
    with pytest.raises(Refusal) as caught:
        checker().check(headers, BODY, "203.0.113.9")
    assert caught.value.reason == "skew"


def test_an_event_id_is_accepted_once_within_the_window_and_forgotten_after() -> None:
    clock = FakeClock(NOW)
    check = Checker(SecretStr(KEY), clock, max_skew=300.0)
    assert not check.duplicate("evt_1")
    check.remember("evt_1")
    assert check.duplicate("evt_1")
    clock.advance(599)
    assert check.duplicate("evt_1")
    clock.advance(2)
    assert not check.duplicate("evt_1")  # past twice the skew: a replay would be too old


def test_the_ids_remembered_are_bounded() -> None:
    check = Checker(SecretStr(KEY), FakeClock(NOW), remembered=100)
    for i in range(1000):
        check.remember(f"evt_{i}")
        check.duplicate("probe")  # a look forgets what is beyond the bound, oldest first
    assert check.duplicate("evt_999")
    assert not any(check.duplicate(f"evt_{i}") for i in range(800))


@pytest.mark.parametrize(("peer", "allowed"), [
    ("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True), ("10.1.2.3", True),
    ("10.200.0.1", False), ("203.0.113.9", False), ("not an address", False)])
def test_unsigned_events_only_from_loopback_or_allow_from(peer: str, allowed: bool) -> None:
    check = Checker(None, FakeClock(NOW), allow_from=["10.1.0.0/16"])
    if allowed:
        check.check({}, BODY, peer)
    else:
        with pytest.raises(Refusal) as caught:
            check.check({}, BODY, peer)
        assert caught.value.reason == "peer"


def test_the_key_appears_in_no_repr_and_no_refusal() -> None:
    check = checker()
    assert KEY not in repr(check)
    with pytest.raises(Refusal) as caught:
        check.check({}, BODY, "203.0.113.9")
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
