"""``parse_retry_after``: RFC 9110 delay-seconds and HTTP-dates, and everything unusable."""

from __future__ import annotations

import email.utils
import time

import pytest

from supervisor.api.client import MAX_RETRY_AFTER, parse_retry_after

NOW = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC's own example date


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        ("120", 120.0),
        (" 30 ", 30.0),  # surrounding whitespace is not part of the value
        ("0007", 7.0),
        ("1.5", 1.5),  # not RFC delay-seconds, but tolerated
        ("86400", 86400.0),
    ],
)
def test_delay_seconds_are_read_as_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,  # absent
        "",
        "   ",
        "-1",  # negative
        "-0.5",
        "+5",  # delay-seconds has no sign
        "1e3",  # no exponents
        "0x10",
        "1_000",  # float() would accept this; RFC digits do not
        "1.",
        ".5",
        "5 seconds",
        "soon",  # garbage
        "NaN",
        "inf",
        "Infinity",
        "٣",  # a non-ASCII digit
        "9" * 400,  # overflows to infinity
        str(int(MAX_RETRY_AFTER) + 1),  # more than ten years: absurd
        "Sun, 32 Nov 1994 08:49:37 GMT",  # no such day
        "Nov 1994",
    ],
)
def test_unusable_values_give_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_imf_fixdate_in_the_future_is_seconds_from_now() -> None:
    assert parse_retry_after(http_date(NOW + 120), NOW) == 120.0


def test_imf_fixdate_example_from_the_rfc() -> None:
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW - 60) == 60.0


def test_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(http_date(NOW - 3600), NOW) == 0.0


def test_http_date_now_is_zero() -> None:
    assert parse_retry_after(http_date(NOW), NOW) == 0.0


def test_rfc_850_date_is_accepted() -> None:
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", NOW - 90) == 90.0


def test_asctime_date_is_read_as_gmt() -> None:
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", NOW - 45) == 45.0


def test_asctime_date_does_not_depend_on_the_local_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_retry_after("Sun Nov  6 08:49:37 1994", NOW - 45) == 45.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_http_date_more_than_ten_years_away_is_absurd() -> None:
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW) is None


def test_large_but_sane_values_are_not_capped_here() -> None:
    # The rate gate caps at max_retry_after; the parser reports what the server said.
    assert parse_retry_after("31536000", NOW) == 31_536_000.0
    assert parse_retry_after(http_date(NOW + 7 * 86400), NOW) == 7 * 86400.0
