"""Zone names (IANA, Windows as Graph sends them, junk) and provider date-times -> UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from calbot.timezones import (
    google_datetime_to_utc,
    graph_datetime_to_utc,
    iana_name,
    local_to_utc,
    parse_datetime,
    to_zoneinfo,
    utc_to_local,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("America/Los_Angeles", "America/Los_Angeles"),
        ("Europe/Berlin", "Europe/Berlin"),
        ("america/new_york", "America/New_York"),  # wrong case of an IANA name
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("pacific standard time", "America/Los_Angeles"),
        ("PACIFIC STANDARD TIME", "America/Los_Angeles"),
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("Eastern Standard Time", "America/New_York"),
        ("GMT Standard Time", "Europe/London"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("  Romance Standard Time ", "Europe/Paris"),
        ("UTC", "UTC"),
        ("Etc/UTC", "UTC"),
        ("tzone://Microsoft/Utc", "UTC"),
        ("Customized Time Zone", "UTC"),
        ("tzone://Microsoft/Custom", "UTC"),
        ("Nowhere/Special", "UTC"),
        ("Made Up Standard Time", "UTC"),
        ("../../etc/passwd", "UTC"),
        ("/etc/localtime", "UTC"),
        ("America", "UTC"),  # a directory of the tz database, not a zone
        ("", "UTC"),
        (None, "UTC"),
    ],
)
def test_zone_names(name: str | None, expected: str) -> None:
    assert iana_name(name) == expected
    zone = to_zoneinfo(name)
    assert isinstance(zone, ZoneInfo)
    assert zone.key == expected


def test_to_zoneinfo_is_cached_and_never_raises() -> None:
    assert to_zoneinfo("Pacific Standard Time") is to_zoneinfo("pacific standard time")
    for junk in (42, {"a": 1}, ["UTC"], "x" * 5000, "a\x00b"):
        assert to_zoneinfo(junk).key == "UTC"  # type: ignore[arg-type]


def test_pacific_offsets_winter_and_summer() -> None:
    winter = graph_datetime_to_utc(
        {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "Pacific Standard Time"}
    )
    summer = graph_datetime_to_utc(
        {"dateTime": "2026-07-01T09:00:00.0000000", "timeZone": "Pacific Standard Time"}
    )
    assert winter == datetime(2026, 12, 1, 17, 0, tzinfo=UTC)  # PST, UTC-8
    assert summer == datetime(2026, 7, 1, 16, 0, tzinfo=UTC)  # PDT, UTC-7
    assert winter.tzinfo is UTC and summer.tzinfo is UTC


def test_graph_datetime_variants() -> None:
    # Graph's 7 fractional digits: Python keeps 6.
    assert graph_datetime_to_utc({"dateTime": "2026-12-01T09:00:00.1234567", "timeZone": "UTC"}) == datetime(
        2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC
    )
    # Without a Prefer header Graph answers in UTC; a missing zone means the same.
    assert graph_datetime_to_utc({"dateTime": "2026-12-01T09:00:00.0000000"}) == datetime(
        2026, 12, 1, 9, tzinfo=UTC
    )
    assert graph_datetime_to_utc(
        {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "tzone://Microsoft/Utc"}
    ) == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert graph_datetime_to_utc(
        {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "W. Europe Standard Time"}
    ) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert graph_datetime_to_utc({"dateTime": "2026-12-01T09:00:00", "timeZone": "Asia/Tokyo"}) == datetime(
        2026, 12, 1, 0, tzinfo=UTC
    )
    for bad in ({}, {"dateTime": ""}, {"dateTime": "tomorrow", "timeZone": "UTC"}):
        with pytest.raises(ValueError):
            graph_datetime_to_utc(bad)


def test_google_timed_and_all_day() -> None:
    assert google_datetime_to_utc(
        {"dateTime": "2026-12-01T09:00:00-08:00", "timeZone": "America/Los_Angeles"}
    ) == (datetime(2026, 12, 1, 17, tzinfo=UTC), False)
    assert google_datetime_to_utc({"dateTime": "2026-07-01T09:00:00Z"}) == (
        datetime(2026, 7, 1, 9, tzinfo=UTC),
        False,
    )
    # No offset: timeZone says where the wall time is.
    assert google_datetime_to_utc({"dateTime": "2026-07-01T09:00:00", "timeZone": "Europe/Berlin"}) == (
        datetime(2026, 7, 1, 7, tzinfo=UTC),
        False,
    )
    # All-day: the calendar date as midnight UTC, whatever the zone.
    assert google_datetime_to_utc({"date": "2026-12-01", "timeZone": "America/Los_Angeles"}) == (
        datetime(2026, 12, 1, 0, 0, tzinfo=UTC),
        True,
    )
    for bad in ({}, {"date": ""}, {"date": "2026-13-01"}):
        with pytest.raises(ValueError):
            google_datetime_to_utc(bad)


def test_local_to_utc_gap_and_fold() -> None:
    pacific = ZoneInfo("America/Los_Angeles")
    # 2027-03-14 02:30 does not exist (02:00 -> 03:00): read with PST, i.e. 03:30 PDT.
    assert local_to_utc(datetime(2027, 3, 14, 2, 30), pacific) == datetime(2027, 3, 14, 10, 30, tzinfo=UTC)
    # 2026-11-01 01:30 happens twice: the first one (PDT).
    assert local_to_utc(datetime(2026, 11, 1, 1, 30), pacific) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    assert utc_to_local(datetime(2026, 11, 1, 9, 30, tzinfo=UTC), pacific) == datetime(2026, 11, 1, 1, 30)
    with pytest.raises(ValueError):
        utc_to_local(datetime(2026, 11, 1), pacific)


def test_parse_datetime_keeps_naive_and_offsets() -> None:
    assert parse_datetime("2026-12-01T09:00:00.0000000") == datetime(2026, 12, 1, 9)
    assert parse_datetime("2026-12-01T09:00:00.5Z") == datetime(2026, 12, 1, 9, 0, 0, 500000, tzinfo=UTC)
