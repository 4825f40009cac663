"""RFC 3339 parsing: exactly the date-time production with a mandatory offset, nothing Python adds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.rfc3339 import parse_rfc3339
from tests.strategies import aware_datetimes

PLUS_1 = timezone(timedelta(hours=1))
NOT_RFC3339 = "must be an RFC 3339 time with an offset, e.g. 2026-11-29T07:30:00Z"
NOT_A_CALENDAR_TIME = "must be a real calendar time (RFC 3339)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T07:30:00Z", datetime(2026, 11, 29, 7, 30, tzinfo=UTC)),
        ("2026-11-29t07:30:00z", datetime(2026, 11, 29, 7, 30, tzinfo=UTC)),
        ("2026-11-29T07:30:00+00:00", datetime(2026, 11, 29, 7, 30, tzinfo=UTC)),
        # -00:00 is RFC 3339's "offset unknown"; the instant is still UTC.
        ("2026-11-29T07:30:00-00:00", datetime(2026, 11, 29, 7, 30, tzinfo=UTC)),
        ("2026-11-29T08:30:00+01:00", datetime(2026, 11, 29, 8, 30, tzinfo=PLUS_1)),
        (
            "2026-11-29T02:00:00-05:30",
            datetime(2026, 11, 29, 2, 0, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        ),
        ("2026-11-29T07:30:00.5Z", datetime(2026, 11, 29, 7, 30, 0, 500_000, tzinfo=UTC)),
        ("2026-11-29T07:30:00.000001Z", datetime(2026, 11, 29, 7, 30, 0, 1, tzinfo=UTC)),
        # Beyond microseconds the fraction is truncated, never rounded up into the next second.
        ("2026-11-29T07:30:00.9999999Z", datetime(2026, 11, 29, 7, 30, 0, 999_999, tzinfo=UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        (
            "9999-12-31T23:59:59+23:59",
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(minutes=1439))),
        ),
    ],
)
def test_parses_rfc3339_date_times_keeping_the_offset(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-29T07:30:00",  # no offset
        "2026-11-29 07:30:00Z",  # space instead of T
        "2026-11-29",
        "07:30:00Z",
        "2026-11-29T07:30Z",  # no seconds
        "2026-11-29T07:30:00+0100",  # offset without colon
        "2026-11-29T07:30:00+01",
        "2026-11-29T07:30:00.Z",  # fraction point without digits
        "2026-11-29T07:30:00,5Z",  # comma fraction (ISO 8601, not RFC 3339)
        "2026-W48-7T07:30:00Z",  # week date
        "2026-333T07:30:00Z",  # ordinal date
        "20261129T073000Z",  # basic format
        "2026-11-29T07:30:00Z\n",  # `$` alone would let a trailing newline through
        " 2026-11-29T07:30:00Z",
        "2026-11-29T07:30:00Z ",
        "\uff12\uff10\uff12\uff16-11-29T07:30:00Z",  # fullwidth digits
        "٢٠٢٦-11-29T07:30:00Z",  # Arabic-Indic digits
        "+2026-11-29T07:30:00Z",
        "2026-11-29T07:30:00UTC",
        "",
    ],
)
def test_refuses_what_is_not_the_rfc3339_shape(text: str) -> None:
    # One fixed message, whatever the text: nothing of the input comes back.
    with pytest.raises(ValueError, match=f"^{re.escape(NOT_RFC3339)}$"):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-11-29T24:00:00Z",
        "2026-11-29T07:60:00Z",
        # Leap seconds are RFC 3339 but Python cannot hold them; they are refused, not moved.
        "2026-12-31T23:59:60Z",
        "2026-11-29T07:30:00+24:00",
        "2026-11-29T07:30:00+23:60",
        "0000-01-01T00:00:00Z",
    ],
)
def test_refuses_impossible_calendar_times(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(NOT_A_CALENDAR_TIME)}$") as caught:
        parse_rfc3339(text)
    # The ValueError from datetime (which may quote the text) is not chained in.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@given(aware_datetimes)
def test_round_trips_every_whole_minute_offset_datetime(moment: datetime) -> None:
    parsed = parse_rfc3339(moment.isoformat())
    assert parsed == moment
    assert parsed.utcoffset() == moment.utcoffset()


@given(st.text(max_size=40))
def test_any_text_either_parses_to_an_aware_datetime_or_raises_value_error(text: str) -> None:
    try:
        parsed = parse_rfc3339(text)
    except ValueError:
        return
    assert parsed.utcoffset() is not None


@given(
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})",
        fullmatch=True,
    )
)
def test_anything_of_the_right_shape_is_a_time_or_an_impossible_calendar_time(text: str) -> None:
    outcome: datetime | str
    try:
        outcome = parse_rfc3339(text)
    except ValueError as error:
        outcome = str(error)
    if isinstance(outcome, str):
        assert outcome == NOT_A_CALENDAR_TIME
    else:
        assert outcome.year == int(text[:4])
        assert outcome.utcoffset() is not None
