"""Provider recurrence -> RFC 5545 rules, expanded in the series' own time zone.

A series is expanded in local wall time and each wall time is then placed in the series' zone, so a
weekly 09:00 meeting stays at 09:00 local across DST while its UTC instant moves by an hour.

Semantic choices (all covered by tests):
- Graph absoluteMonthly/absoluteYearly: a dayOfMonth the month lacks falls on the month's last day,
  as Exchange does ("If for a particular month this value is larger than the number of days in the
  month, the last day of the month is assumed", EWS AbsoluteMonthlyRecurrence; Outlook puts a yearly
  Feb 29 on Feb 28 in other years). RFC 5545 (so dateutil and Google) skips such months instead, so
  the RRULE we write says it explicitly: day 31 -> BYMONTHDAY=-1, day 29/30 ->
  BYMONTHDAY=28,..,d;BYSETPOS=-1. Google RRULEs keep RFC semantics (BYMONTHDAY=31 skips months).
- Graph endDate is inclusive in the series zone: UNTIL is 23:59:59 local on endDate, written in UTC.
- Graph numbered: numberOfOccurrences counts actual occurrences from range.startDate (startDate
  itself counts only if it matches the pattern, as Outlook's first occurrence "may be this date or
  later"). Google follows RFC 5545: DTSTART is always an occurrence and counts towards COUNT.
- DST: see `timezones.local_to_utc` (gap -> later by the gap length, for that occurrence only;
  ambiguous -> first instant). A start written as a wall time in the series zone keeps that wall time
  even inside a gap (RFC 5545 3.3.5). UNTIL is an instant (RFC 5545 3.3.10) and is compared as one.
- Zones: Graph's recurrenceTimeZone "Customized Time Zone" / "" / an unknown Windows name (logged)
  falls back to the event's own zone (originalStartTimeZone, then start.timeZone), never to UTC unless
  nothing better is named.
- A rule that matches nothing returns no occurrence after scanning at most two 400-year calendar
  cycles, never to year 9999 (`_matches_nothing`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from calbot.timezones import (
    google_datetime_to_utc,
    graph_datetime_to_utc,
    local_to_utc,
    parse_datetime,
    to_zoneinfo,
    utc_to_local,
    zone_key,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from zoneinfo import ZoneInfo

    from dateutil.rrule import rrule, rruleset

# dateutil's frequency constants (YEARLY=0 .. SECONDLY=6), kept here so importing this module does not
# import dateutil (~20 ms): Lambda handlers that never expand a series should not pay for it.
YEARLY, MONTHLY, WEEKLY, DAILY, HOURLY, MINUTELY, SECONDLY = range(7)
_FREQ_NAMES = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY")
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MAX_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MIN_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_GRAPH_DAYS = {name.lower(): i for i, name in enumerate(_DAY_NAMES)}
_GRAPH_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}

_BYDAY = re.compile(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_ICAL_DATETIME = re.compile(r"(\d{8})T(\d{6})(Z?)")
_ICAL_DATE = re.compile(r"\d{8}")
# BY* parts that take integers: (field, smallest |value|, largest |value|, may be negative)
_INT_PARTS: dict[str, tuple[str, int, int, bool]] = {
    "BYMONTH": ("bymonth", 1, 12, False),
    "BYMONTHDAY": ("bymonthday", 1, 31, True),
    "BYYEARDAY": ("byyearday", 1, 366, True),
    "BYWEEKNO": ("byweekno", 1, 53, True),
    "BYSETPOS": ("bysetpos", 1, 366, True),
    "BYHOUR": ("byhour", 0, 23, False),
    "BYMINUTE": ("byminute", 0, 59, False),
    "BYSECOND": ("bysecond", 0, 59, False),
}
_END_OF_DAY = time(23, 59, 59)
# UTC instants of consecutive wall times can run backwards by at most a DST gap (1 h, historically 2 h)
_SLACK = timedelta(hours=3)
# How far before `after` (in wall time) expansion restarts, so a DST offset never hides an occurrence.
_MARGIN = timedelta(days=2)


@dataclass(frozen=True)
class Series:
    """Everything needed to expand a recurring event; rebuildable from stored fields.

    dtstart_local is the wall time of the first occurrence in `tz` (naive; an aware value is converted).
    rrule_text holds "RRULE:..." (and any "EXRULE:...") lines separated by newlines. exdates and rdates
    are aware UTC instants. dtstart_counts: DTSTART is an occurrence even when the rule does not
    produce it (RFC 5545, Google); Graph's startDate is not.
    """

    tz: ZoneInfo
    dtstart_local: datetime
    duration: timedelta
    rrule_text: str
    exdates: frozenset[datetime] = frozenset()
    rdates: frozenset[datetime] = frozenset()
    dtstart_counts: bool = False
    all_day: bool = False

    def __post_init__(self) -> None:
        if self.dtstart_local.tzinfo is not None:
            object.__setattr__(self, "dtstart_local", utc_to_local(self.dtstart_local, self.tz))
        object.__setattr__(self, "exdates", frozenset(_as_utc(d) for d in self.exdates))
        object.__setattr__(self, "rdates", frozenset(_as_utc(d) for d in self.rdates))
        _parse_rule_text(self.rrule_text)  # a bad rule fails here, not at first expansion

    @property
    def dtstart_utc(self) -> datetime:
        return local_to_utc(self.dtstart_local, self.tz)

    @property
    def tz_name(self) -> str:
        return self.tz.key


@dataclass(frozen=True)
class _Rule:
    """One parsed RRULE/EXRULE; UNTIL is kept as given because it is resolved in the series zone."""

    freq: int
    interval: int = 1
    count: int | None = None
    until_utc: datetime | None = None
    until_local: datetime | None = None  # floating UNTIL, or a DATE UNTIL as the end of that day
    wkst: int = 0  # RFC 5545 default: Monday
    byday: tuple[tuple[int, int | None], ...] = ()
    bymonth: tuple[int, ...] = ()
    bymonthday: tuple[int, ...] = ()
    byyearday: tuple[int, ...] = ()
    byweekno: tuple[int, ...] = ()
    bysetpos: tuple[int, ...] = ()
    byhour: tuple[int, ...] = ()
    byminute: tuple[int, ...] = ()
    bysecond: tuple[int, ...] = ()


# ---------------------------------------------------------------------------------------------------
# Parsing and writing RFC 5545 text


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime: {value!r}")
    return value.astimezone(UTC)


def _parse_ical_value(text: str) -> date | datetime:
    """20261201 -> date; 20261201T090000 -> naive datetime; 20261201T170000Z -> aware UTC."""
    value = text.strip().upper()
    if _ICAL_DATE.fullmatch(value):
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    match = _ICAL_DATETIME.fullmatch(value)
    if not match:
        raise ValueError(f"bad iCalendar date-time: {text!r}")
    day, clock, zulu = match.groups()
    parsed = datetime(
        int(day[:4]), int(day[4:6]), int(day[6:8]), int(clock[:2]), int(clock[2:4]), int(clock[4:6])
    )
    return parsed.replace(tzinfo=UTC) if zulu else parsed


def _ints(key: str, raw: str) -> tuple[int, ...]:
    _, low, high, signed = _INT_PARTS[key]
    values = []
    for item in raw.split(","):
        try:
            number = int(item.strip())
        except ValueError:
            raise ValueError(f"bad {key} value: {item!r}") from None
        magnitude = abs(number) if signed else number
        if not low <= magnitude <= high or (signed and number == 0):
            raise ValueError(f"{key} value out of range: {number}")
        values.append(number)
    return tuple(values)


@functools.lru_cache(maxsize=512)
def _parse_rule(value: str) -> _Rule:
    """Parse an RRULE value ("FREQ=WEEKLY;BYDAY=MO"). Unknown parts (X-..., RSCALE) are ignored."""
    fields: dict[str, Any] = {}
    for chunk in value.strip().split(";"):
        if not chunk.strip():
            continue
        key, sep, raw = chunk.partition("=")
        key, raw = key.strip().upper(), raw.strip()
        if not sep or not raw:
            raise ValueError(f"bad RRULE part: {chunk!r}")
        if key == "FREQ":
            if raw.upper() not in _FREQ_NAMES:
                raise ValueError(f"unknown FREQ: {raw!r}")
            fields["freq"] = _FREQ_NAMES.index(raw.upper())
        elif key in ("INTERVAL", "COUNT"):
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"bad {key}: {raw!r}")
            fields[key.lower()] = int(raw)
        elif key == "UNTIL":
            until = _parse_ical_value(raw)
            if isinstance(until, datetime) and until.tzinfo is not None:
                fields["until_utc"] = until
            elif isinstance(until, datetime):
                fields["until_local"] = until
            else:  # a DATE: occurrences on that day still count
                fields["until_local"] = datetime.combine(until, _END_OF_DAY)
        elif key == "WKST":
            if raw.upper() not in _WEEKDAYS:
                raise ValueError(f"bad WKST: {raw!r}")
            fields["wkst"] = _WEEKDAYS.index(raw.upper())
        elif key == "BYDAY":
            days = []
            for item in raw.upper().split(","):
                match = _BYDAY.fullmatch(item.strip())
                if not match or (match.group(1) and not 1 <= abs(int(match.group(1))) <= 53):
                    raise ValueError(f"bad BYDAY value: {item!r}")
                nth = int(match.group(1)) if match.group(1) else None
                days.append((_WEEKDAYS.index(match.group(2)), nth))
            fields["byday"] = tuple(days)
        elif key in _INT_PARTS:
            fields[_INT_PARTS[key][0]] = _ints(key, raw)
    if "freq" not in fields:
        raise ValueError(f"RRULE without FREQ: {value!r}")
    if "count" in fields and ("until_utc" in fields or "until_local" in fields):
        raise ValueError("RRULE has both COUNT and UNTIL")
    return _Rule(**fields)


@functools.lru_cache(maxsize=512)
def _parse_rule_text(text: str) -> tuple[tuple[_Rule, ...], tuple[_Rule, ...]]:
    """rrule_text -> (rules, exclusion rules). A bare "FREQ=..." line counts as an RRULE."""
    rules: list[_Rule] = []
    exrules: list[_Rule] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        kind = name.split(";", 1)[0].strip().upper()
        if not sep:
            rules.append(_parse_rule(line))
        elif kind == "RRULE":
            rules.append(_parse_rule(value))
        elif kind == "EXRULE":
            exrules.append(_parse_rule(value))
        else:
            raise ValueError(f"not an RRULE/EXRULE line: {line!r}")
    return tuple(rules), tuple(exrules)


def _format_rule(rule: _Rule) -> str:
    parts = [f"FREQ={_FREQ_NAMES[rule.freq]}", f"INTERVAL={rule.interval}"]
    if rule.bymonth:
        parts.append("BYMONTH=" + ",".join(map(str, rule.bymonth)))
    if rule.bymonthday:
        parts.append("BYMONTHDAY=" + ",".join(map(str, rule.bymonthday)))
    if rule.byday:
        parts.append("BYDAY=" + ",".join(f"{n or ''}{_WEEKDAYS[d]}" for d, n in rule.byday))
    if rule.bysetpos:
        parts.append("BYSETPOS=" + ",".join(map(str, rule.bysetpos)))
    if rule.freq == WEEKLY and rule.interval > 1:  # WKST only changes weekly rules with interval > 1
        parts.append(f"WKST={_WEEKDAYS[rule.wkst]}")
    if rule.count is not None:
        parts.append(f"COUNT={rule.count}")
    if rule.until_utc is not None:
        parts.append("UNTIL=" + rule.until_utc.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"))
    elif rule.until_local is not None:
        parts.append("UNTIL=" + rule.until_local.strftime("%Y%m%dT%H%M%S"))
    return "RRULE:" + ";".join(parts)


def _split_property(line: str) -> tuple[str, dict[str, str], str]:
    """'EXDATE;TZID=America/New_York:20261201T090000' -> (name, params, value); quotes may hold ':'."""
    quoted = False
    for i, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            head, value = line[:i], line[i + 1 :]
            break
    else:
        raise ValueError(f"bad recurrence line: {line!r}")
    name, *raw_params = head.split(";")
    params = {}
    for raw in raw_params:
        key, _, val = raw.partition("=")
        params[key.strip().upper()] = val.strip().strip('"')
    return name.strip().upper(), params, value.strip()


def _date_values_utc(
    params: dict[str, str], value: str, *, tz: ZoneInfo, dtstart_local: datetime
) -> list[datetime]:
    """EXDATE/RDATE values -> UTC. A DATE value means that day at the series' start time (for an
    all-day series that is midnight UTC, the instant we use for all-day dates)."""
    zone = to_zoneinfo(params["TZID"]) if params.get("TZID") else tz
    instants = []
    for item in value.split(","):
        item = item.split("/", 1)[0]  # a PERIOD (start/end or start/duration): its start
        if not item.strip():
            continue
        parsed = _parse_ical_value(item)
        if isinstance(parsed, datetime):
            instants.append(parsed.astimezone(UTC) if parsed.tzinfo else local_to_utc(parsed, zone))
        else:
            instants.append(local_to_utc(datetime.combine(parsed, dtstart_local.time()), tz))
    return instants


# ---------------------------------------------------------------------------------------------------
# Graph


def _graph_day_of_month(day: int, month: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(BYMONTHDAY, BYSETPOS) for Exchange's "day N, or the month's last day if it is shorter"."""
    if not 1 <= day <= 31:
        raise ValueError(f"dayOfMonth out of range: {day}")
    shortest = _MIN_MONTH_DAYS[month - 1] if month else 28
    longest = _MAX_MONTH_DAYS[month - 1] if month else 31
    if day <= shortest:
        return (day,), ()
    if day >= longest:
        return (-1,), ()
    return tuple(range(28, day + 1)), (-1,)


def _graph_days(pattern: dict[str, Any], fallback: int) -> list[int]:
    names = pattern.get("daysOfWeek") or []
    try:
        days = sorted({_GRAPH_DAYS[str(name).lower()] for name in names})
    except KeyError as exc:
        raise ValueError(f"unknown day of week: {exc.args[0]!r}") from None
    return days or [fallback]


def _graph_rule(pattern: dict[str, Any], rng: dict[str, Any], dtstart: datetime, tz: ZoneInfo) -> _Rule:
    kind = str(pattern.get("type") or "").lower()
    try:
        interval = int(pattern.get("interval") or 1)
        month = int(pattern["month"]) if pattern.get("month") else None
        day_of_month = int(pattern.get("dayOfMonth") or dtstart.day)
    except (TypeError, ValueError):
        raise ValueError(f"bad recurrence pattern: {pattern!r}") from None
    if interval < 1:
        raise ValueError(f"bad interval: {interval}")
    if month is not None and not 1 <= month <= 12:
        raise ValueError(f"bad month: {month}")
    fields: dict[str, Any] = {"interval": interval}
    if kind == "daily":
        fields["freq"] = DAILY
    elif kind == "weekly":
        first = str(pattern.get("firstDayOfWeek") or "sunday").lower()  # Graph's default is sunday
        if first not in _GRAPH_DAYS:
            raise ValueError(f"unknown firstDayOfWeek: {first!r}")
        fields.update(
            freq=WEEKLY,
            byday=tuple((d, None) for d in _graph_days(pattern, dtstart.weekday())),
            wkst=_GRAPH_DAYS[first],
        )
    elif kind in ("absolutemonthly", "absoluteyearly"):
        yearly = kind == "absoluteyearly"
        if yearly:
            month = month or dtstart.month
            fields.update(freq=YEARLY, bymonth=(month,))
        else:
            fields["freq"] = MONTHLY
        days_of_month, setpos = _graph_day_of_month(day_of_month, month if yearly else None)
        fields.update(bymonthday=days_of_month, bysetpos=setpos)
    elif kind in ("relativemonthly", "relativeyearly"):
        index = str(pattern.get("index") or "first").lower()
        if index not in _GRAPH_INDEX:
            raise ValueError(f"unknown index: {index!r}")
        nth = _GRAPH_INDEX[index]
        days = _graph_days(pattern, dtstart.weekday())
        if kind == "relativeyearly":
            fields.update(freq=YEARLY, bymonth=(month or dtstart.month,))
        else:
            fields["freq"] = MONTHLY
        if len(days) == 1:
            fields["byday"] = ((days[0], nth),)
        else:  # "the last weekday": the nth of the set of those days
            fields.update(byday=tuple((d, None) for d in days), bysetpos=(nth,))
    else:
        raise ValueError(f"unknown recurrence pattern type: {pattern.get('type')!r}")

    range_type = str(rng.get("type") or "noEnd").lower()
    if range_type == "enddate":
        if not rng.get("endDate"):
            raise ValueError("endDate range without endDate")
        last_day = date.fromisoformat(str(rng["endDate"])[:10])
        fields["until_utc"] = local_to_utc(datetime.combine(last_day, _END_OF_DAY), tz)
    elif range_type == "numbered":
        try:
            count = int(rng.get("numberOfOccurrences") or 0)
        except (TypeError, ValueError):
            count = 0
        if count < 1:
            raise ValueError(f"bad numberOfOccurrences: {rng.get('numberOfOccurrences')!r}")
        fields["count"] = count
    elif range_type != "noend":
        raise ValueError(f"unknown recurrence range type: {rng.get('type')!r}")
    return _Rule(**fields)


def _graph_series_zone(*names: object) -> ZoneInfo:
    """The first of the names that is a zone we know; UTC when none is (see `from_graph`)."""
    for name in names:
        key = zone_key(name)
        if key is not None:
            return to_zoneinfo(key)
    return to_zoneinfo("UTC")


def _wall_start(raw: object, zone_name: object, instant: datetime, tz: ZoneInfo) -> datetime:
    """The series' first wall time in `tz`. A naive date-time written in `tz` itself is taken as
    written: 02:30 on a spring-forward day exists only as a wall time (its instant reads 03:30), and
    RFC 5545 keeps 02:30 for every other occurrence. Anything else is converted from its instant."""
    if isinstance(raw, str) and raw and zone_key(zone_name) == tz.key:
        written = parse_datetime(raw)
        if written.tzinfo is None:
            return written
    return utc_to_local(instant, tz)


def from_graph(
    recurrence: dict[str, Any],
    *,
    start: dict[str, Any],
    end: dict[str, Any],
    original_start_tz: str | None = None,
    is_all_day: bool = False,
) -> Series:
    """Graph patternedRecurrence plus the master's start/end -> Series.

    The pattern is expanded in range.recurrenceTimeZone, else `original_start_tz` (the event's
    originalStartTimeZone), else start.timeZone: the first of them that names a zone we know. An empty
    name or "Customized Time Zone" (series from other systems' invitations) names none and an unknown
    Windows name is logged (`timezones.zone_key`); either way the event's own zone is used, and UTC
    only when none of the three names a zone. The master's start may be written in another zone (UTC
    without a Prefer header): it is converted to get the series' local start time; a start written in
    the series zone keeps its wall time even inside a spring-forward gap (RFC 5545 3.3.5: only that
    occurrence moves). The series starts on range.startDate at that time. All-day series use midnight
    UTC dates (see timezones).
    """
    pattern = recurrence.get("pattern") or {}
    rng = recurrence.get("range") or {}
    if is_all_day:
        tz = to_zoneinfo("UTC")
        first = parse_datetime(str(start.get("dateTime") or "")).replace(tzinfo=None)
        last = parse_datetime(str(end.get("dateTime") or "")).replace(tzinfo=None)
        local_start, duration = datetime.combine(first.date(), time()), last - first
    else:
        tz = _graph_series_zone(rng.get("recurrenceTimeZone"), original_start_tz, start.get("timeZone"))
        start_utc = graph_datetime_to_utc(start)
        local_start = _wall_start(start.get("dateTime"), start.get("timeZone"), start_utc, tz)
        duration = graph_datetime_to_utc(end) - start_utc
    first_day = date.fromisoformat(str(rng["startDate"])[:10]) if rng.get("startDate") else local_start.date()
    dtstart = datetime.combine(first_day, local_start.time())
    rule = _graph_rule(pattern, rng, dtstart, tz)
    return Series(
        tz=tz, dtstart_local=dtstart, duration=duration, rrule_text=_format_rule(rule), all_day=is_all_day
    )


# ---------------------------------------------------------------------------------------------------
# Google


def from_google(
    recurrence_lines: list[str],
    *,
    start: dict[str, Any],
    end: dict[str, Any],
    calendar_tz: str | None = None,
) -> Series:
    """Google recurrence[] ("RRULE:", "EXRULE:", "EXDATE...", "RDATE...") plus the master's start/end.

    The series zone is start.timeZone, else `calendar_tz` (the calendar's zone, which Google uses when
    the event has none). All-day series live in UTC at midnight, matching `google_datetime_to_utc`.
    Lines we do not know are ignored; RRULE/EXRULE lines are kept verbatim as rrule_text.
    """
    start_utc, all_day = google_datetime_to_utc(start)
    end_utc, _ = google_datetime_to_utc(end)
    tz = to_zoneinfo("UTC" if all_day else (start.get("timeZone") or calendar_tz))
    if all_day:
        dtstart = utc_to_local(start_utc, tz)
    else:
        dtstart = _wall_start(start.get("dateTime"), start.get("timeZone"), start_utc, tz)
    rule_lines: list[str] = []
    exdates: set[datetime] = set()
    rdates: set[datetime] = set()
    for raw_line in recurrence_lines or []:
        line = str(raw_line).strip()
        if not line:
            continue
        name, params, value = _split_property(line)
        if name in ("RRULE", "EXRULE"):
            rule_lines.append(f"{name}:{value}")
        elif name in ("EXDATE", "RDATE"):
            target = exdates if name == "EXDATE" else rdates
            target.update(_date_values_utc(params, value, tz=tz, dtstart_local=dtstart))
    return Series(
        tz=tz,
        dtstart_local=dtstart,
        duration=end_utc - start_utc,
        rrule_text="\n".join(rule_lines),
        exdates=frozenset(exdates),
        rdates=frozenset(rdates),
        dtstart_counts=True,
        all_day=all_day,
    )


# ---------------------------------------------------------------------------------------------------
# Expansion


def _never_matches(rule: _Rule) -> bool:
    """Cheap cases of a rule that matches no date (BYMONTH=2;BYMONTHDAY=30, BYMONTH=4;BYMONTHDAY=-31,
    BYYEARDAY=100;BYMONTH=1); `_matches_nothing` settles every other case."""
    if rule.bymonth and rule.bymonthday:
        longest = max(_MAX_MONTH_DAYS[m - 1] for m in rule.bymonth)
        if min(abs(day) for day in rule.bymonthday) > longest:
            return True
    if rule.bymonth and rule.byyearday:
        months = {_yearday_month(day, leap) for day in rule.byyearday for leap in (False, True)}
        if not months & set(rule.bymonth):
            return True
    return False


def _yearday_month(day: int, leap: bool) -> int | None:
    length = 366 if leap else 365
    index = day if day > 0 else length + 1 + day
    if not 1 <= index <= length:
        return None
    return (date(2028 if leap else 2027, 1, 1) + timedelta(days=index - 1)).month


# The Gregorian calendar repeats every 400 years (146,097 days, exactly 20,871 weeks), so a rule with
# interval n repeats every 400 * n years: one that matches nothing in that span never matches at all.
_CYCLE_YEARS = 400


@functools.lru_cache(maxsize=512)
def _matches_nothing(rule: _Rule, dtstart: datetime) -> bool:
    """True when the rule yields no occurrence at all from `dtstart`, found within one cycle.

    dateutil checks UNTIL and COUNT only against dates it yields, so a rule that matches nothing (a
    BYSETPOS beyond the set, Feb 29 every 4 years from an odd year) makes it scan every period up to
    year 9999: seconds of CPU per call. Here the same rule, without COUNT or UNTIL, starts a whole
    number of cycles later (so the same dates match) and at most two cycles before 9999, so the scan
    ends after at most two cycles, and only once per rule and start (cached)."""
    if _never_matches(rule):
        return True
    cycle = _CYCLE_YEARS * rule.interval
    start = dtstart
    spare = _LAST_YEAR - start.year - 2 * cycle
    if spare > 0:
        start = _shift_years(start, (spare // cycle + 1) * cycle)
    parts = _explicit_defaults(rule, dtstart)
    try:
        probe = _dateutil_rule(rule, start, parts)
    except ValueError:  # dateutil: "byxxx generates an empty set" (BYHOUR=2 every 2 hours from 09:00)
        return True
    return next(iter(probe), None) is None


def _dateutil_rule(
    rule: _Rule,
    start: datetime,
    parts: dict[str, Any],
    *,
    count: int | None = None,
    until: datetime | None = None,
) -> rrule:
    """The naive-local dateutil rrule of `rule` from `start`, with `parts` from `_explicit_defaults`."""
    from dateutil.rrule import rrule, weekday

    return rrule(
        rule.freq,
        dtstart=start,
        interval=rule.interval,
        wkst=rule.wkst,
        count=count,
        until=until,
        bysetpos=rule.bysetpos or None,
        bymonth=parts["bymonth"] or None,
        bymonthday=parts["bymonthday"] or None,
        byyearday=rule.byyearday or None,
        byweekno=rule.byweekno or None,
        byweekday=[weekday(d, n) for d, n in parts["byday"]] or None,
        byhour=rule.byhour or None,
        byminute=rule.byminute or None,
        bysecond=rule.bysecond or None,
        cache=False,
    )


_LAST_YEAR = 9999


def _shift_years(value: datetime, years: int) -> datetime:
    # A whole number of 400-year cycles keeps every date (Feb 29 included) and its weekday.
    return value.replace(year=value.year + years)


def _explicit_defaults(rule: _Rule, dtstart: datetime) -> dict[str, Any]:
    """BY* parts dateutil would derive from DTSTART, made explicit so DTSTART can be moved."""
    parts: dict[str, Any] = {
        "bymonth": rule.bymonth,
        "bymonthday": rule.bymonthday,
        "byday": rule.byday,
    }
    if not (rule.byweekno or rule.byyearday or rule.bymonthday or rule.byday):
        if rule.freq == YEARLY:
            parts["bymonth"] = rule.bymonth or (dtstart.month,)
            parts["bymonthday"] = (dtstart.day,)
        elif rule.freq == MONTHLY:
            parts["bymonthday"] = (dtstart.day,)
        elif rule.freq == WEEKLY:
            parts["byday"] = ((dtstart.weekday(), None),)
    return parts


def _fast_forward(rule: _Rule, dtstart: datetime, target: datetime) -> datetime:
    """A later DTSTART, at or before `target` and at the start of a period that the rule's interval
    reaches from the real DTSTART, so the rule yields the same occurrences from there on. Only valid
    without COUNT. Saves expanding years of a long-running daily series one by one."""
    if target <= dtstart:
        return dtstart
    n, clock = rule.interval, dtstart.time()
    if rule.freq == YEARLY:
        k = (target.year - dtstart.year) // n - 1
        return datetime.combine(date(dtstart.year + k * n, 1, 1), clock) if k > 0 else dtstart
    if rule.freq == MONTHLY:
        first = dtstart.year * 12 + dtstart.month - 1
        k = (target.year * 12 + target.month - 1 - first) // n - 1
        if k <= 0:
            return dtstart
        index = first + k * n
        return datetime.combine(date(index // 12, index % 12 + 1, 1), clock)
    if rule.freq == WEEKLY:
        week = dtstart.date() - timedelta(days=(dtstart.weekday() - rule.wkst) % 7)
        k = (target.date() - week).days // 7 // n - 1
        return datetime.combine(week + timedelta(weeks=k * n), clock) if k > 0 else dtstart
    unit = {DAILY: timedelta(days=1), HOURLY: timedelta(hours=1), MINUTELY: timedelta(minutes=1)}.get(
        rule.freq, timedelta(seconds=1)
    )
    if rule.freq == DAILY:
        k = (target.date() - dtstart.date()).days // n - 1
    else:
        k = (target - dtstart) // unit // n - 1
    return dtstart + unit * (k * n) if k > 0 else dtstart


class _UntilInstant:
    """A rule's wall times whose instants are at or before UNTIL.

    UNTIL is an instant (RFC 5545 3.3.10): comparing wall times instead would keep 02:30 on a
    spring-forward day (really 03:30, after an UNTIL of 03:00) and drop the first 01:30 on a fall-back
    day when UNTIL is the second 01:15. dateutil is given a wall-time UNTIL a few hours late, and each
    wall time is checked as an instant here."""

    def __init__(self, built: rrule, until: datetime, tz: ZoneInfo) -> None:
        self._built, self._until, self._tz = built, until, tz

    def __iter__(self) -> Iterator[datetime]:
        return (wall for wall in self._built if local_to_utc(wall, self._tz) <= self._until)


def _build_rule(
    rule: _Rule, series: Series, *, target: datetime | None = None, count: int | None = None
) -> Iterable[datetime] | None:
    """A naive-local dateutil rrule; with `target`, started as late as is safe for that wall time.
    None for a rule that matches nothing (see `_matches_nothing`)."""
    if _matches_nothing(rule, series.dtstart_local):
        return None
    dtstart = series.dtstart_local
    parts = _explicit_defaults(rule, dtstart)
    count = rule.count if count is None else count
    if count is None and target is not None:
        dtstart = _fast_forward(rule, dtstart, target)
    until_utc = rule.until_utc
    if until_utc is None and rule.until_local is not None:  # floating or DATE UNTIL: in the series zone
        until_utc = local_to_utc(rule.until_local, series.tz)
    until = utc_to_local(until_utc, series.tz) + _SLACK if until_utc is not None else None
    built = _dateutil_rule(rule, dtstart, parts, count=count, until=until)
    return built if until_utc is None else _UntilInstant(built, until_utc, series.tz)


def _ruleset(series: Series, target: datetime) -> rruleset:
    from dateutil.rrule import rruleset

    rules, exrules = _parse_rule_text(series.rrule_text)
    start = series.dtstart_local
    reduce_count = False
    if series.dtstart_counts:
        # RFC 5545: DTSTART is the first occurrence and counts towards COUNT even when the rule would
        # not produce it; dateutil neither yields nor counts it, so count one fewer in that case.
        firsts = (_build_rule(rule, series) for rule in rules)
        reduce_count = not any(built is not None and next(iter(built), None) == start for built in firsts)
    result = rruleset()
    for rule in rules:
        count = rule.count
        if reduce_count and count is not None:
            count -= 1
            if count == 0:
                continue
        built = _build_rule(rule, series, target=target, count=count)
        if built is not None:
            result.rrule(built)
    for rule in exrules:
        built = _build_rule(rule, series, target=target)
        if built is not None:
            result.exrule(built)
    if series.dtstart_counts:
        result.rdate(start)
    return result


def occurrences(
    series: Series,
    *,
    after: datetime,
    before: datetime | None = None,
    limit: int | None = None,
    inclusive: bool = False,
) -> list[datetime]:
    """UTC start instants after `after` (at or after with `inclusive`) and before `before`, sorted,
    at most `limit`. EXDATEs removed, RDATEs added. `before` or `limit` is required so that an endless
    series can never be expanded forever."""
    if before is None and limit is None:
        raise ValueError("occurrences() needs `before` or `limit`")
    after = _as_utc(after)
    before = _as_utc(before) if before is not None else None
    if (limit is not None and limit <= 0) or (before is not None and before <= after):
        return []

    def wanted(instant: datetime) -> bool:
        if instant < after or (instant == after and not inclusive):
            return False
        return (before is None or instant < before) and instant not in series.exdates

    found: list[datetime] = []
    stop_after: datetime | None = None
    for wall in _ruleset(series, utc_to_local(after, series.tz) - _MARGIN):
        instant = local_to_utc(wall, series.tz)
        # Wall times come in order; their instants only run backwards by less than _SLACK (DST gap).
        if before is not None and instant >= before + _SLACK:
            break
        if stop_after is not None and instant > stop_after:
            break
        if wanted(instant):
            found.append(instant)
            if limit is not None and stop_after is None and len(found) >= limit:
                stop_after = instant + _SLACK
    found.extend(instant for instant in series.rdates if wanted(instant))
    result = sorted(set(found))
    return result[:limit] if limit is not None else result


def next_occurrence(series: Series, after: datetime) -> datetime | None:
    """The first occurrence start strictly after `after`, or None when the series has ended."""
    upcoming = occurrences(series, after=after, limit=1)
    return upcoming[0] if upcoming else None


def apply_instances(
    starts: Iterable[datetime], *, cancelled: set[datetime], moved: dict[datetime, datetime]
) -> list[datetime]:
    """Apply per-instance overrides keyed by ORIGINAL start (UTC): cancelled ones are dropped, moved
    ones replaced by their new start. Sorted; an instant appears once even if two occurrences meet."""
    gone = {_as_utc(item) for item in cancelled}
    moves = {_as_utc(old): _as_utc(new) for old, new in moved.items()}
    result = set()
    for start in starts:
        original = _as_utc(start)
        if original not in gone:
            result.add(moves.get(original, original))
    return sorted(result)


def describe(series: Series) -> str:
    """Short English summary, e.g. "Every 2 weeks on Tuesday, Thursday at 09:00 (America/New_York)"."""
    rules, _ = _parse_rule_text(series.rrule_text)
    if not rules:
        return f"On {len(series.rdates) + 1} dates"
    rule = rules[0]
    unit = ("year", "month", "week", "day", "hour", "minute", "second")[rule.freq]
    words = [f"Every {unit}" if rule.interval == 1 else f"Every {rule.interval} {unit}s"]
    ordinals = {1: "first", 2: "second", 3: "third", 4: "fourth", -1: "last"}
    if rule.byday:
        names = [_DAY_NAMES[d] for d, _ in rule.byday]
        nth = rule.byday[0][1] or (rule.bysetpos[0] if rule.bysetpos else None)
        prefix = f"the {ordinals.get(nth, str(nth))} " if nth else ""
        words.append("on " + prefix + ", ".join(names))
    elif rule.bymonthday == (-1,):
        words.append("on the last day")
    elif rule.bysetpos == (-1,) and min(rule.bymonthday) == 28 and len(rule.bymonthday) > 1:
        words.append(f"on day {max(rule.bymonthday)} (or the last day if the month is shorter)")
    elif rule.bymonthday:
        words.append("on day " + ", ".join(map(str, rule.bymonthday)))
    if rule.bymonth:
        words.append("of " + ", ".join(_MONTH_NAMES[m - 1] for m in rule.bymonth))
    if not series.all_day:
        words.append(f"at {series.dtstart_local:%H:%M} ({series.tz.key})")
    if rule.count is not None:
        words.append(f"{rule.count} times")
    elif rule.until_utc is not None:
        words.append(f"until {utc_to_local(rule.until_utc, series.tz):%Y-%m-%d}")
    elif rule.until_local is not None:
        words.append(f"until {rule.until_local:%Y-%m-%d}")
    return " ".join(words)
