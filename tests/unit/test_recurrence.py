"""Recurrence expansion against dates checked by hand (weekdays and DST dates from a calendar).

2026: Dec 1 is a Tuesday; Europe ends DST on Oct 25; the US ends DST on Nov 1.
2027: the US starts DST on Mar 14; 2028 is a leap year, 2027 and 2029-2031 are not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from calbot.recurrence import (
    Series,
    apply_instances,
    describe,
    from_google,
    from_graph,
    next_occurrence,
    occurrences,
)

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def graph(
    pattern: dict[str, Any],
    range_: dict[str, Any],
    *,
    start: str = "09:00:00",
    zone: str = "UTC",
    minutes: int = 30,
) -> Series:
    """A Graph series whose master starts on range.startDate at `start` in `zone`."""
    day = range_["startDate"]
    begin = datetime.fromisoformat(f"{day}T{start}")
    finish = begin + timedelta(minutes=minutes)
    return from_graph(
        {"pattern": pattern, "range": {"recurrenceTimeZone": zone, **range_}},
        start={"dateTime": begin.isoformat() + ".0000000", "timeZone": zone},
        end={"dateTime": finish.isoformat() + ".0000000", "timeZone": zone},
    )


def google(lines: list[str], start: dict[str, Any], end: dict[str, Any]) -> Series:
    return from_google(lines, start=start, end=end)


def all_of(series: Series) -> list[datetime]:
    return occurrences(series, after=EPOCH, before=utc(2040, 1, 1))


# --- Graph pattern types and ranges ------------------------------------------------------------------


def test_daily_interval_2_numbered_5() -> None:
    series = graph(
        {"type": "daily", "interval": 2},
        {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 5},
        zone="W. Europe Standard Time",
    )
    assert series.rrule_text == "RRULE:FREQ=DAILY;INTERVAL=2;COUNT=5"
    assert series.tz == ZoneInfo("Europe/Berlin")
    assert series.dtstart_local == datetime(2026, 12, 1, 9, 0)
    assert series.duration == timedelta(minutes=30)
    # 09:00 CET = 08:00Z
    assert all_of(series) == [
        utc(2026, 12, 1, 8),
        utc(2026, 12, 3, 8),
        utc(2026, 12, 5, 8),
        utc(2026, 12, 7, 8),
        utc(2026, 12, 9, 8),
    ]


def test_weekly_mon_wed_end_date_is_inclusive() -> None:
    series = graph(
        {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"], "firstDayOfWeek": "sunday"},
        {"type": "endDate", "startDate": "2026-12-02", "endDate": "2026-12-21"},
    )
    assert series.rrule_text == "RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO,WE;UNTIL=20261221T235959Z"
    assert all_of(series) == [
        utc(2026, 12, 2, 9),
        utc(2026, 12, 7, 9),
        utc(2026, 12, 9, 9),
        utc(2026, 12, 14, 9),
        utc(2026, 12, 16, 9),
        utc(2026, 12, 21, 9),  # on endDate itself
    ]


def test_end_date_is_inclusive_in_the_series_zone() -> None:
    # Mondays 17:00 Pacific = 01:00Z on Tuesday; the Monday 2026-12-14 endDate still counts.
    series = graph(
        {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
        {"type": "endDate", "startDate": "2026-11-30", "endDate": "2026-12-14"},
        start="17:00:00",
        zone="Pacific Standard Time",
    )
    assert series.rrule_text == "RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO;UNTIL=20261215T075959Z"
    assert all_of(series) == [utc(2026, 12, 1, 1), utc(2026, 12, 8, 1), utc(2026, 12, 15, 1)]


def test_weekly_interval_2_first_day_of_week_matters() -> None:
    # The series starts on Sunday 2026-12-06. A Sunday-first week (Dec 6-12) holds Tue 8 and Thu 10;
    # a Monday-first week puts that Sunday at the end of Nov 30-Dec 6, so the next period is Dec 14-20.
    pattern = {"type": "weekly", "interval": 2, "daysOfWeek": ["tuesday", "thursday"]}
    range_ = {"type": "numbered", "startDate": "2026-12-06", "numberOfOccurrences": 4}
    sunday = graph({**pattern, "firstDayOfWeek": "sunday"}, range_)
    monday = graph({**pattern, "firstDayOfWeek": "monday"}, range_)
    assert sunday.rrule_text == "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;WKST=SU;COUNT=4"
    assert monday.rrule_text == "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;WKST=MO;COUNT=4"
    assert all_of(sunday) == [
        utc(2026, 12, 8, 9),
        utc(2026, 12, 10, 9),
        utc(2026, 12, 22, 9),
        utc(2026, 12, 24, 9),
    ]
    assert all_of(monday) == [
        utc(2026, 12, 15, 9),
        utc(2026, 12, 17, 9),
        utc(2026, 12, 29, 9),
        utc(2026, 12, 31, 9),
    ]


def test_absolute_monthly_day_31_falls_on_last_day_of_shorter_months() -> None:
    # Exchange: "If for a particular month this value is larger than the number of days in the month,
    # the last day of the month is assumed." (RFC 5545 would skip those months; see the Google test.)
    series = graph(
        {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
        {"type": "numbered", "startDate": "2027-01-31", "numberOfOccurrences": 6},
    )
    assert series.rrule_text == "RRULE:FREQ=MONTHLY;INTERVAL=1;BYMONTHDAY=-1;COUNT=6"
    assert all_of(series) == [
        utc(2027, 1, 31, 9),
        utc(2027, 2, 28, 9),
        utc(2027, 3, 31, 9),
        utc(2027, 4, 30, 9),
        utc(2027, 5, 31, 9),
        utc(2027, 6, 30, 9),
    ]


def test_absolute_monthly_day_30_and_interval() -> None:
    series = graph(
        {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 30},
        {"type": "numbered", "startDate": "2027-01-30", "numberOfOccurrences": 3},
    )
    assert series.rrule_text == "RRULE:FREQ=MONTHLY;INTERVAL=1;BYMONTHDAY=28,29,30;BYSETPOS=-1;COUNT=3"
    assert all_of(series) == [utc(2027, 1, 30, 9), utc(2027, 2, 28, 9), utc(2027, 3, 30, 9)]
    quarterly = graph(
        {"type": "absoluteMonthly", "interval": 3, "dayOfMonth": 15},
        {"type": "numbered", "startDate": "2026-11-15", "numberOfOccurrences": 3},
    )
    assert all_of(quarterly) == [utc(2026, 11, 15, 9), utc(2027, 2, 15, 9), utc(2027, 5, 15, 9)]


def test_relative_monthly_last_friday_no_end() -> None:
    series = graph(
        {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"},
        {"type": "noEnd", "startDate": "2026-12-01"},
    )
    assert series.rrule_text == "RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=-1FR"
    assert occurrences(series, after=EPOCH, limit=4) == [
        utc(2026, 12, 25, 9),
        utc(2027, 1, 29, 9),
        utc(2027, 2, 26, 9),
        utc(2027, 3, 26, 9),
    ]


def test_relative_monthly_second_tuesday() -> None:
    series = graph(
        {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["tuesday"], "index": "second"},
        {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 3},
    )
    assert series.rrule_text == "RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=2TU;COUNT=3"
    assert all_of(series) == [utc(2026, 12, 8, 9), utc(2027, 1, 12, 9), utc(2027, 2, 9, 9)]


def test_relative_monthly_last_weekday() -> None:
    weekdays = ["monday", "tuesday", "wednesday", "thursday", "friday"]
    series = graph(
        {"type": "relativeMonthly", "interval": 1, "daysOfWeek": weekdays, "index": "last"},
        {"type": "numbered", "startDate": "2027-01-01", "numberOfOccurrences": 2},
    )
    assert series.rrule_text == "RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=2"
    # Jan 31 2027 is a Sunday, Feb 28 a Sunday.
    assert all_of(series) == [utc(2027, 1, 29, 9), utc(2027, 2, 26, 9)]


def test_absolute_yearly_feb_29() -> None:
    # Outlook/CDO: a yearly Feb 29 falls on Feb 28 in common years (the last day of February).
    series = graph(
        {"type": "absoluteYearly", "interval": 1, "month": 2, "dayOfMonth": 29},
        {"type": "numbered", "startDate": "2028-02-29", "numberOfOccurrences": 5},
    )
    assert series.rrule_text == "RRULE:FREQ=YEARLY;INTERVAL=1;BYMONTH=2;BYMONTHDAY=-1;COUNT=5"
    assert all_of(series) == [
        utc(2028, 2, 29, 9),
        utc(2029, 2, 28, 9),
        utc(2030, 2, 28, 9),
        utc(2031, 2, 28, 9),
        utc(2032, 2, 29, 9),
    ]
    plain = graph(
        {"type": "absoluteYearly", "interval": 2, "month": 7, "dayOfMonth": 4},
        {"type": "numbered", "startDate": "2026-07-04", "numberOfOccurrences": 2},
    )
    assert plain.rrule_text == "RRULE:FREQ=YEARLY;INTERVAL=2;BYMONTH=7;BYMONTHDAY=4;COUNT=2"
    assert all_of(plain) == [utc(2026, 7, 4, 9), utc(2028, 7, 4, 9)]


def test_relative_yearly_first_monday_of_september() -> None:
    series = graph(
        {"type": "relativeYearly", "interval": 1, "month": 9, "daysOfWeek": ["monday"], "index": "first"},
        {"type": "numbered", "startDate": "2026-09-01", "numberOfOccurrences": 3},
    )
    assert series.rrule_text == "RRULE:FREQ=YEARLY;INTERVAL=1;BYMONTH=9;BYDAY=1MO;COUNT=3"
    assert all_of(series) == [utc(2026, 9, 7, 9), utc(2027, 9, 6, 9), utc(2028, 9, 4, 9)]


def test_numbered_counts_from_start_date_only_matching_days() -> None:
    # startDate Tuesday, pattern Mon/Wed: the Tuesday is not an occurrence and is not counted.
    series = graph(
        {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"]},
        {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 3},
    )
    assert all_of(series) == [utc(2026, 12, 2, 9), utc(2026, 12, 7, 9), utc(2026, 12, 9, 9)]


def test_no_end_needs_a_bound_and_honours_limit() -> None:
    series = graph({"type": "daily", "interval": 1}, {"type": "noEnd", "startDate": "2026-12-01"})
    with pytest.raises(ValueError):
        occurrences(series, after=EPOCH)
    assert occurrences(series, after=utc(2026, 12, 10, 9), limit=3) == [
        utc(2026, 12, 11, 9),
        utc(2026, 12, 12, 9),
        utc(2026, 12, 13, 9),
    ]
    assert occurrences(series, after=utc(2026, 12, 10, 9), limit=2, inclusive=True) == [
        utc(2026, 12, 10, 9),
        utc(2026, 12, 11, 9),
    ]
    assert occurrences(series, after=utc(2026, 12, 10), before=utc(2026, 12, 12, 9)) == [
        utc(2026, 12, 10, 9),
        utc(2026, 12, 11, 9),
    ]
    assert occurrences(series, after=utc(2026, 12, 10), limit=0) == []
    # Years into an endless series: still the right day (expansion restarts near `after`).
    assert next_occurrence(series, utc(2036, 2, 28, 12)) == utc(2036, 2, 29, 9)


def test_unknown_pattern_or_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        graph({"type": "hourly", "interval": 1}, {"type": "noEnd", "startDate": "2026-12-01"})
    with pytest.raises(ValueError):
        graph({"type": "daily", "interval": 1}, {"type": "forever", "startDate": "2026-12-01"})
    with pytest.raises(ValueError):
        graph({"type": "daily"}, {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 0})
    with pytest.raises(ValueError):
        graph({"type": "weekly", "daysOfWeek": ["funday"]}, {"type": "noEnd", "startDate": "2026-12-01"})


# --- DST ---------------------------------------------------------------------------------------------


def test_berlin_weekly_0900_across_dst_end() -> None:
    series = graph(
        {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "monday"},
        {"type": "noEnd", "startDate": "2026-10-12"},
        zone="W. Europe Standard Time",
    )
    assert occurrences(series, after=EPOCH, limit=4) == [
        utc(2026, 10, 12, 7),  # 09:00 CEST
        utc(2026, 10, 19, 7),
        utc(2026, 10, 26, 8),  # 09:00 CET after Oct 25
        utc(2026, 11, 2, 8),
    ]


def test_pacific_weekly_0900_across_both_dst_changes() -> None:
    series = graph(
        {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
        {"type": "noEnd", "startDate": "2026-10-19"},
        zone="Pacific Standard Time",
    )
    assert occurrences(series, after=utc(2026, 10, 20), before=utc(2026, 11, 10)) == [
        utc(2026, 10, 26, 16),  # PDT
        utc(2026, 11, 2, 17),  # PST after Nov 1
        utc(2026, 11, 9, 17),
    ]
    assert occurrences(series, after=utc(2027, 3, 1), before=utc(2027, 3, 20)) == [
        utc(2027, 3, 1, 17),
        utc(2027, 3, 8, 17),
        utc(2027, 3, 15, 16),  # PDT after Mar 14
    ]


def test_master_start_in_utc_with_eastern_recurrence_zone() -> None:
    # Graph without a Prefer header: start in UTC, the pattern lives in Eastern time (09:00 EDT).
    series = from_graph(
        {
            "pattern": {
                "type": "weekly",
                "interval": 1,
                "daysOfWeek": ["monday"],
                "firstDayOfWeek": "sunday",
            },
            "range": {
                "type": "numbered",
                "startDate": "2026-10-26",
                "numberOfOccurrences": 3,
                "recurrenceTimeZone": "Eastern Standard Time",
            },
        },
        start={"dateTime": "2026-10-26T13:00:00.0000000", "timeZone": "UTC"},
        end={"dateTime": "2026-10-26T14:00:00.0000000", "timeZone": "UTC"},
    )
    assert series.tz_name == "America/New_York"
    assert series.dtstart_local == datetime(2026, 10, 26, 9, 0)
    assert series.duration == timedelta(hours=1)
    assert all_of(series) == [utc(2026, 10, 26, 13), utc(2026, 11, 2, 14), utc(2026, 11, 9, 14)]


def test_original_start_time_zone_is_used_without_recurrence_zone() -> None:
    series = from_graph(
        {
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-10-31", "numberOfOccurrences": 2},
        },
        start={"dateTime": "2026-10-31T16:00:00.0000000", "timeZone": "UTC"},
        end={"dateTime": "2026-10-31T16:30:00.0000000", "timeZone": "UTC"},
        original_start_tz="Pacific Standard Time",
    )
    assert all_of(series) == [utc(2026, 10, 31, 16), utc(2026, 11, 1, 17)]


def test_nonexistent_and_ambiguous_local_times() -> None:
    gap = google(
        ["RRULE:FREQ=DAILY;COUNT=3"],
        {"dateTime": "2027-03-13T02:30:00-08:00", "timeZone": "America/Los_Angeles"},
        {"dateTime": "2027-03-13T03:00:00-08:00", "timeZone": "America/Los_Angeles"},
    )
    # Mar 14 02:30 does not exist: it becomes 03:30 PDT (10:30Z), as calendar apps show it.
    assert all_of(gap) == [utc(2027, 3, 13, 10, 30), utc(2027, 3, 14, 10, 30), utc(2027, 3, 15, 9, 30)]
    fold = google(
        ["RRULE:FREQ=DAILY;COUNT=3"],
        {"dateTime": "2026-10-31T01:30:00-07:00", "timeZone": "America/Los_Angeles"},
        {"dateTime": "2026-10-31T02:00:00-07:00", "timeZone": "America/Los_Angeles"},
    )
    # Nov 1 01:30 happens twice: the first (PDT) is taken.
    assert all_of(fold) == [utc(2026, 10, 31, 8, 30), utc(2026, 11, 1, 8, 30), utc(2026, 11, 2, 9, 30)]


# --- Google ------------------------------------------------------------------------------------------

NY_START = {"dateTime": "2026-12-01T09:00:00-05:00", "timeZone": "America/New_York"}
NY_END = {"dateTime": "2026-12-01T09:45:00-05:00", "timeZone": "America/New_York"}


def test_google_rrule_with_exdates_and_rdate() -> None:
    series = google(
        [
            "RRULE:FREQ=WEEKLY;BYDAY=TU;COUNT=5",
            "EXDATE;TZID=America/New_York:20261208T090000",
            "EXDATE;VALUE=DATE:20261222",
            "RDATE;TZID=America/New_York:20261210T110000",
        ],
        NY_START,
        NY_END,
    )
    assert series.rrule_text == "RRULE:FREQ=WEEKLY;BYDAY=TU;COUNT=5"
    assert series.exdates == frozenset({utc(2026, 12, 8, 14), utc(2026, 12, 22, 14)})
    assert series.rdates == frozenset({utc(2026, 12, 10, 16)})
    assert series.duration == timedelta(minutes=45)
    assert all_of(series) == [
        utc(2026, 12, 1, 14),
        utc(2026, 12, 10, 16),
        utc(2026, 12, 15, 14),
        utc(2026, 12, 29, 14),
    ]


def test_google_exdate_in_utc_and_several_values() -> None:
    series = google(
        ["RRULE:FREQ=DAILY;COUNT=4", "EXDATE:20261202T140000Z,20261203T140000Z"], NY_START, NY_END
    )
    assert all_of(series) == [utc(2026, 12, 1, 14), utc(2026, 12, 4, 14)]


def test_google_until_utc_and_date() -> None:
    until_utc = google(["RRULE:FREQ=DAILY;UNTIL=20261203T140000Z"], NY_START, NY_END)
    assert all_of(until_utc) == [utc(2026, 12, 1, 14), utc(2026, 12, 2, 14), utc(2026, 12, 3, 14)]
    until_date = google(["RRULE:FREQ=DAILY;UNTIL=20261203"], NY_START, NY_END)
    assert all_of(until_date) == [utc(2026, 12, 1, 14), utc(2026, 12, 2, 14), utc(2026, 12, 3, 14)]


def test_google_month_day_31_skips_short_months() -> None:
    # RFC 5545: an invalid date is ignored, so Google's BYMONTHDAY=31 skips 30-day months and February.
    series = google(
        ["RRULE:FREQ=MONTHLY;BYMONTHDAY=31;COUNT=4"],
        {"dateTime": "2027-01-31T10:00:00Z", "timeZone": "UTC"},
        {"dateTime": "2027-01-31T11:00:00Z", "timeZone": "UTC"},
    )
    assert all_of(series) == [
        utc(2027, 1, 31, 10),
        utc(2027, 3, 31, 10),
        utc(2027, 5, 31, 10),
        utc(2027, 7, 31, 10),
    ]
    leap = google(
        ["RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29"],
        {"dateTime": "2028-02-29T10:00:00Z", "timeZone": "UTC"},
        {"dateTime": "2028-02-29T11:00:00Z", "timeZone": "UTC"},
    )
    assert occurrences(leap, after=EPOCH, limit=3) == [
        utc(2028, 2, 29, 10),
        utc(2032, 2, 29, 10),
        utc(2036, 2, 29, 10),
    ]


def test_google_all_day_series() -> None:
    series = google(
        ["RRULE:FREQ=YEARLY", "EXDATE;VALUE=DATE:20271224"],
        {"date": "2026-12-24"},
        {"date": "2026-12-25"},
    )
    assert series.all_day and series.duration == timedelta(days=1)
    assert occurrences(series, after=EPOCH, limit=3) == [
        utc(2026, 12, 24),
        utc(2028, 12, 24),
        utc(2029, 12, 24),
    ]


def test_google_dtstart_always_counts() -> None:
    # RFC 5545: DTSTART is the first occurrence even if the rule would not produce it, and counts.
    series = google(["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=3"], NY_START, NY_END)  # starts on a Tuesday
    assert all_of(series) == [utc(2026, 12, 1, 14), utc(2026, 12, 7, 14), utc(2026, 12, 14, 14)]


def test_google_exrule_and_ignored_lines() -> None:
    series = google(
        ["RRULE:FREQ=DAILY;COUNT=7", "EXRULE:FREQ=WEEKLY;BYDAY=SA,SU", "X-SOMETHING:else"],
        NY_START,
        NY_END,
    )
    # Dec 5 and 6 2026 are the weekend.
    assert all_of(series) == [
        utc(2026, 12, 1, 14),
        utc(2026, 12, 2, 14),
        utc(2026, 12, 3, 14),
        utc(2026, 12, 4, 14),
        utc(2026, 12, 7, 14),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "RRULE:INTERVAL=2",
        "RRULE:FREQ=FORTNIGHTLY",
        "RRULE:FREQ=DAILY;COUNT=2;UNTIL=20270101",
        "RRULE:FREQ=DAILY;BYDAY=XX",
    ],
)
def test_bad_google_rules_are_rejected(line: str) -> None:
    with pytest.raises(ValueError):
        google([line], NY_START, NY_END)


def test_impossible_rule_ends_at_once() -> None:
    series = google(["RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"], NY_START, NY_END)
    assert occurrences(series, after=utc(2026, 12, 2), limit=5) == []


# --- Long-running series: expansion starts near `after` -----------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=DAILY;INTERVAL=3",
        "FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,FR;WKST=SU",
        "FREQ=WEEKLY;INTERVAL=2",
        "FREQ=MONTHLY;INTERVAL=5;BYDAY=-1FR",
        "FREQ=MONTHLY;INTERVAL=2",
        "FREQ=YEARLY;INTERVAL=3;BYMONTH=3;BYDAY=2SU",
        "FREQ=YEARLY",
        "FREQ=HOURLY;INTERVAL=7",
        "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
    ],
)
def test_restarting_near_after_matches_plain_dateutil(rule: str) -> None:
    from dateutil.rrule import rrulestr

    # In UTC so that plain dateutil (the reference) needs no zone handling; 2019-01-31 is a Thursday.
    start = datetime(2019, 1, 31, 10, 15)
    series = Series(tz=ZoneInfo("UTC"), dtstart_local=start, duration=timedelta(hours=1), rrule_text=rule)
    after = utc(2026, 6, 3, 12)
    reference = [
        d.replace(tzinfo=UTC) for d in rrulestr(rule, dtstart=start).xafter(after.replace(tzinfo=None), 6)
    ]
    assert occurrences(series, after=after, limit=6) == reference


def test_weekly_restart_literal() -> None:
    series = Series(
        tz=ZoneInfo("Europe/Berlin"),
        dtstart_local=datetime(2020, 1, 7, 9, 0),  # a Tuesday
        duration=timedelta(hours=1),
        rrule_text="RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TU",
    )
    # 2026-12-01 is 360 weeks after 2020-01-07, so it is in phase.
    assert occurrences(series, after=utc(2026, 11, 20), limit=2) == [
        utc(2026, 12, 1, 8),
        utc(2026, 12, 15, 8),
    ]


# --- Instances, next occurrence, description ---------------------------------------------------------


def test_apply_instances_moved_and_cancelled() -> None:
    starts = [utc(2026, 12, 1, 14), utc(2026, 12, 8, 14), utc(2026, 12, 15, 14), utc(2026, 12, 22, 14)]
    result = apply_instances(
        starts,
        cancelled={utc(2026, 12, 8, 14)},
        # keys are original starts; any zone compares by instant
        moved={
            datetime(2026, 12, 1, 9, tzinfo=ZoneInfo("America/New_York")): utc(2026, 12, 16, 18),
            utc(2026, 12, 22, 14): utc(2026, 12, 21, 15),
        },
    )
    assert result == [utc(2026, 12, 15, 14), utc(2026, 12, 16, 18), utc(2026, 12, 21, 15)]
    assert all(item.tzinfo is UTC for item in result)
    assert apply_instances(starts, cancelled=set(), moved={}) == starts


def test_next_occurrence_and_end_of_series() -> None:
    series = graph(
        {"type": "daily", "interval": 1},
        {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 2},
    )
    assert next_occurrence(series, utc(2026, 11, 1)) == utc(2026, 12, 1, 9)
    assert next_occurrence(series, utc(2026, 12, 1, 9)) == utc(2026, 12, 2, 9)
    assert next_occurrence(series, utc(2026, 12, 2, 9)) is None
    with pytest.raises(ValueError):
        next_occurrence(series, datetime(2026, 11, 1))  # naive


def test_series_normalises_aware_inputs() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    series = Series(
        tz=berlin,
        dtstart_local=datetime(2026, 12, 1, 8, tzinfo=UTC),
        duration=timedelta(minutes=30),
        rrule_text="RRULE:FREQ=DAILY;COUNT=2",
        exdates=frozenset({datetime(2026, 12, 2, 9, tzinfo=berlin)}),
    )
    assert series.dtstart_local == datetime(2026, 12, 1, 9, 0)
    assert series.dtstart_utc == utc(2026, 12, 1, 8)
    assert series.exdates == frozenset({utc(2026, 12, 2, 8)})
    assert all_of(series) == [utc(2026, 12, 1, 8)]
    with pytest.raises(ValueError):
        Series(
            tz=berlin,
            dtstart_local=datetime(2026, 12, 1, 9),
            duration=timedelta(0),
            rrule_text="RRULE:FREQ=NEVER",
        )


def test_describe() -> None:
    series = graph(
        {"type": "weekly", "interval": 2, "daysOfWeek": ["tuesday", "thursday"], "firstDayOfWeek": "sunday"},
        {"type": "numbered", "startDate": "2026-12-06", "numberOfOccurrences": 4},
        zone="Eastern Standard Time",
    )
    assert describe(series) == "Every 2 weeks on Tuesday, Thursday at 09:00 (America/New_York) 4 times"
    last_friday = graph(
        {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"},
        {"type": "endDate", "startDate": "2026-12-01", "endDate": "2027-06-30"},
    )
    assert describe(last_friday) == "Every month on the last Friday at 09:00 (UTC) until 2027-06-30"


# --- Graph series whose recurrence zone names no zone (issue 16) -------------------------------------

NO_ZONE_NAMES = ["Customized Time Zone", "", "tzone://Microsoft/Custom", "Made Up Standard Time"]


@pytest.mark.parametrize("no_zone", NO_ZONE_NAMES)
@pytest.mark.parametrize("written", ["original_start_tz", "start_zone"])
def test_series_without_a_named_recurrence_zone_expands_in_the_events_zone(
    no_zone: str, written: str
) -> None:
    # Tuesday 09:00 in Sydney (UTC+11 in December) is Monday 22:00 UTC: expanded in UTC, the series
    # would land on Tuesday 22:00 UTC, Wednesday in Sydney: a day off.
    recurrence = {
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"], "firstDayOfWeek": "sunday"},
        "range": {
            "type": "numbered",
            "startDate": "2026-12-01",
            "numberOfOccurrences": 3,
            "recurrenceTimeZone": no_zone,
        },
    }
    if written == "original_start_tz":  # Graph without a Prefer header: times in UTC
        series = from_graph(
            recurrence,
            start={"dateTime": "2026-11-30T22:00:00.0000000", "timeZone": "UTC"},
            end={"dateTime": "2026-11-30T23:00:00.0000000", "timeZone": "UTC"},
            original_start_tz="AUS Eastern Standard Time",
        )
    else:  # times written in the event's own zone
        series = from_graph(
            recurrence,
            start={"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "AUS Eastern Standard Time"},
            end={"dateTime": "2026-12-01T10:00:00.0000000", "timeZone": "AUS Eastern Standard Time"},
        )
    assert series.tz_name == "Australia/Sydney"
    assert all_of(series) == [utc(2026, 11, 30, 22), utc(2026, 12, 7, 22), utc(2026, 12, 14, 22)]


@pytest.mark.parametrize("no_zone", NO_ZONE_NAMES)
def test_series_without_a_named_recurrence_zone_never_starts_before_its_master(no_zone: str) -> None:
    # 20:00 in Los Angeles on Dec 1 is 04:00 UTC on Dec 2; in UTC the series would start on Dec 1 04:00.
    series = from_graph(
        {
            "pattern": {"type": "daily", "interval": 1},
            "range": {
                "type": "endDate",
                "startDate": "2026-12-01",
                "endDate": "2026-12-02",
                "recurrenceTimeZone": no_zone,
            },
        },
        start={"dateTime": "2026-12-02T04:00:00.0000000", "timeZone": "UTC"},
        end={"dateTime": "2026-12-02T05:00:00.0000000", "timeZone": "UTC"},
        original_start_tz="Pacific Standard Time",
    )
    assert all_of(series) == [utc(2026, 12, 2, 4), utc(2026, 12, 3, 4)]


def test_unknown_windows_zone_is_logged_and_the_events_zone_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from calbot import timezones
    from calbot.log import logger

    warnings: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logger, "warning", lambda msg, extra: warnings.append((msg, extra)))
    timezones._zone_key.cache_clear()
    series = from_graph(
        {
            "pattern": {"type": "daily", "interval": 1},
            "range": {
                "type": "numbered",
                "startDate": "2026-12-01",
                "numberOfOccurrences": 1,
                "recurrenceTimeZone": "Mars Standard Time",
            },
        },
        start={"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "Tokyo Standard Time"},
        end={"dateTime": "2026-12-01T10:00:00.0000000", "timeZone": "Tokyo Standard Time"},
    )
    assert series.tz_name == "Asia/Tokyo"
    assert all_of(series) == [utc(2026, 12, 1, 0)]
    assert ("unknown time zone name", {"time_zone": "Mars Standard Time"}) in warnings


def _outlook_occurrence(master: dict[str, Any]) -> Any:
    from calbot.providers.outlook import normalize_graph_event

    item = {
        "id": "occ-1",
        "type": "occurrence",
        "seriesMasterId": master["id"],
        "start": master["start"],
        "end": master["end"],
    }
    return normalize_graph_event("cal-1", item, master=master)


def test_outlook_expands_a_customized_zone_series_in_the_events_original_zone() -> None:
    event = _outlook_occurrence(
        {
            "id": "master-1",
            "type": "seriesMaster",
            "subject": "Standup",
            "originalStartTimeZone": "AUS Eastern Standard Time",
            "start": {"dateTime": "2026-11-30T22:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-30T23:00:00.0000000", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
                "range": {
                    "type": "endDate",
                    "startDate": "2026-12-01",
                    "endDate": "2026-12-15",
                    "recurrenceTimeZone": "Customized Time Zone",
                },
            },
        }
    )
    # endDate is inclusive in Sydney: 23:59:59 AEDT on Dec 15 is 12:59:59 UTC.
    assert event.recurrence_rule is not None and "UNTIL=20261215T125959Z" in event.recurrence_rule


def test_outlook_passes_all_day_series_as_all_day() -> None:
    event = _outlook_occurrence(
        {
            "id": "master-2",
            "type": "seriesMaster",
            "subject": "Holiday",
            "isAllDay": True,
            "originalStartTimeZone": "Pacific Standard Time",
            "start": {"dateTime": "2026-12-01T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-02T00:00:00.0000000", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
                "range": {
                    "type": "endDate",
                    "startDate": "2026-12-01",
                    "endDate": "2026-12-15",
                    "recurrenceTimeZone": "Pacific Standard Time",
                },
            },
        }
    )
    # All-day series live on their dates (midnight UTC): the last day ends 23:59:59 on Dec 15, not in
    # Los Angeles time (which would be Dec 16 07:59:59 UTC).
    assert event.is_all_day
    assert event.recurrence_rule is not None and "UNTIL=20261215T235959Z" in event.recurrence_rule


# --- UNTIL is an instant; a start in a spring-forward gap keeps its wall time --------------------------


def test_until_is_compared_as_an_instant_in_a_spring_forward_gap() -> None:
    # Mar 14 2027 02:30 does not exist in Los Angeles: that occurrence is 03:30 PDT (10:30Z), after an
    # UNTIL of 10:00Z (03:00 PDT), although its wall time 02:30 is before 03:00.
    series = google(
        ["RRULE:FREQ=DAILY;UNTIL=20270314T100000Z"],
        {"dateTime": "2027-03-12T02:30:00-08:00", "timeZone": "America/Los_Angeles"},
        {"dateTime": "2027-03-12T03:00:00-08:00", "timeZone": "America/Los_Angeles"},
    )
    assert all_of(series) == [utc(2027, 3, 12, 10, 30), utc(2027, 3, 13, 10, 30)]


def test_until_is_compared_as_an_instant_in_a_fall_back_overlap() -> None:
    # Nov 1 2026 01:30 happens twice in Los Angeles; the occurrence is the first (PDT, 08:30Z), which is
    # before an UNTIL of 09:15Z (the second 01:15, PST), although 01:30 is after 01:15 on the wall.
    series = google(
        ["RRULE:FREQ=DAILY;UNTIL=20261101T091500Z"],
        {"dateTime": "2026-10-30T01:30:00-07:00", "timeZone": "America/Los_Angeles"},
        {"dateTime": "2026-10-30T02:00:00-07:00", "timeZone": "America/Los_Angeles"},
    )
    assert all_of(series) == [utc(2026, 10, 30, 8, 30), utc(2026, 10, 31, 8, 30), utc(2026, 11, 1, 8, 30)]


def test_until_instant_with_a_floating_until_in_an_overlap() -> None:
    # A floating UNTIL is a wall time in the series zone (the first instant when it is ambiguous):
    # 01:45 on Nov 1 is 08:45Z, so the 01:30 occurrence (08:30Z) is in and nothing after it.
    series = google(
        ["RRULE:FREQ=HOURLY;INTERVAL=1;UNTIL=20261101T014500"],
        {"dateTime": "2026-11-01T00:30:00-07:00", "timeZone": "America/Los_Angeles"},
        {"dateTime": "2026-11-01T00:45:00-07:00", "timeZone": "America/Los_Angeles"},
    )
    assert all_of(series) == [utc(2026, 11, 1, 7, 30), utc(2026, 11, 1, 8, 30)]


def test_google_series_starting_in_a_gap_keeps_its_wall_time() -> None:
    # RFC 5545 3.3.5: 02:30 on Mar 14 is read with the offset before the gap (03:30 PDT) for that
    # occurrence only; the next days are at 02:30 PDT again.
    series = google(
        ["RRULE:FREQ=DAILY;COUNT=3"],
        {"dateTime": "2027-03-14T02:30:00", "timeZone": "America/Los_Angeles"},
        {"dateTime": "2027-03-14T04:00:00", "timeZone": "America/Los_Angeles"},
    )
    assert series.dtstart_local == datetime(2027, 3, 14, 2, 30)
    assert all_of(series) == [utc(2027, 3, 14, 10, 30), utc(2027, 3, 15, 9, 30), utc(2027, 3, 16, 9, 30)]


@pytest.mark.parametrize("zone", ["Pacific Standard Time", "America/Los_Angeles"])
def test_graph_series_starting_in_a_gap_keeps_its_wall_time(zone: str) -> None:
    series = graph(
        {"type": "weekly", "interval": 1, "daysOfWeek": ["sunday"]},
        {"type": "numbered", "startDate": "2027-03-14", "numberOfOccurrences": 3},
        start="02:30:00",
        zone=zone,
    )
    assert all_of(series) == [utc(2027, 3, 14, 10, 30), utc(2027, 3, 21, 9, 30), utc(2027, 3, 28, 9, 30)]


# --- Rules that can never match end at once ------------------------------------------------------------

NEVER = [
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=MONTHLY;BYMONTH=4;BYMONTHDAY=31",
    "FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=-31",
    "FREQ=DAILY;BYYEARDAY=100;BYMONTH=1",
    "FREQ=YEARLY;BYYEARDAY=-1;BYMONTH=6",
    "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6",
    "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6;COUNT=3",
    "FREQ=MONTHLY;BYDAY=5FR;BYMONTH=2;BYSETPOS=2",
    "FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29",  # from 2027: 2031, 2035, ... are never leap years
    "FREQ=YEARLY;INTERVAL=2;BYMONTH=2;BYMONTHDAY=29;UNTIL=21000101T000000Z",
    "FREQ=WEEKLY;BYWEEKNO=20;BYMONTH=1",
    "FREQ=MONTHLY;BYWEEKNO=30;BYMONTH=12;BYDAY=MO",
    "FREQ=HOURLY;INTERVAL=2;BYHOUR=2",  # from 09:00 every 2 hours: odd hours only (dateutil: ValueError)
]


@pytest.mark.parametrize("rule", NEVER)
def test_rule_that_never_matches_ends_without_scanning_to_year_9999(
    rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dateutil import rrule as dateutil_rrule

    from calbot import recurrence

    if hasattr(recurrence, "_matches_nothing"):  # each rule's verdict is cached once found
        recurrence._matches_nothing.cache_clear()
    months_scanned = 0
    rebuild = dateutil_rrule._iterinfo.rebuild

    def counting(self: Any, year: int, month: int) -> None:
        nonlocal months_scanned
        months_scanned += 1
        rebuild(self, year, month)

    monkeypatch.setattr(dateutil_rrule._iterinfo, "rebuild", counting)
    series = Series(
        tz=ZoneInfo("Europe/Berlin"),
        dtstart_local=datetime(2027, 1, 5, 9, 0),
        duration=timedelta(hours=1),
        rrule_text=f"RRULE:{rule}",
    )
    assert occurrences(series, after=utc(2026, 12, 1), limit=3) == []
    assert occurrences(series, after=utc(2026, 12, 1), before=utc(2030, 1, 1)) == []
    assert next_occurrence(series, utc(2026, 12, 1)) is None
    # dateutil rebuilds its tables once per month (or year) it visits: two 400-year cycles at most,
    # where scanning to year 9999 would visit ~8,000 years.
    interval = int(rule.split("INTERVAL=")[1].split(";")[0]) if "INTERVAL=" in rule else 1
    assert months_scanned <= 2 * 400 * interval * 13
    assert months_scanned <= 8_000 * 13 // 3
