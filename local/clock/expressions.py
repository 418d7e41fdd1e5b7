"""AWS schedule expressions: ``cron(...)``, ``rate(...)`` and ``at(...)``, in a time zone.

Pure functions of their text: which moments an expression names between two times. Used for the
template's cron jobs (``local.clock.cron``) and the one-time schedules (``local.clock.schedules``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo


class ScheduleExpressionError(ValueError):
    """A schedule expression AWS would reject (or that is not supported here)."""


_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {n: i for i, n in enumerate(_MONTH_NAMES, 1)}
_WEEKDAYS = {n: i for i, n in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)}  # 1 = Sunday


def _aws_weekday(day: date) -> int:
    return (day.weekday() + 1) % 7 + 1  # Python: Monday = 0; AWS: Sunday = 1 ... Saturday = 7


def _last_day(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def _value(text: str, names: dict[str, int] | None, lo: int, hi: int, field_name: str) -> int:
    key = text.strip().upper()
    if names and key in names:
        number = names[key]
    elif key.isdigit():
        number = int(key)
    else:
        raise ScheduleExpressionError(f"{field_name}: {text!r} is not a value")
    if not lo <= number <= hi:
        raise ScheduleExpressionError(f"{field_name}: {number} is outside {lo}-{hi}")
    return number


def _values(text: str, lo: int, hi: int, field_name: str, names: dict[str, int] | None = None) -> set[int]:
    """Numbers, `*`, lists `a,b`, ranges `a-b` (wrapping when a > b), steps `*/n`, `a/n`, `a-b/n`."""
    out: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.strip().partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ScheduleExpressionError(f"{field_name}: bad step in {part!r}")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, names, lo, hi, field_name), _value(last, names, lo, hi, field_name)
        else:
            start = _value(base, names, lo, hi, field_name)
            end = hi if slash else start  # `a/n` runs from a to the end of the field
        span = list(range(start, end + 1)) if start <= end else [*range(start, hi + 1), *range(lo, end + 1)]
        out.update(span[::step])
    return out


class Cron:
    """An AWS cron expression: ``minutes hours day-of-month month day-of-week year``.

    Supports numbers, ``*``, ``?``, lists, ranges, steps, month and weekday names, ``L`` (last day of
    the month; ``nL`` in day-of-week: the last weekday n of the month), ``W`` (``nW``, ``LW``) and
    ``#`` (``n#k``: the k-th weekday n). Exactly one of day-of-month and day-of-week must be ``?``.
    """

    def __init__(self, fields: str) -> None:
        parts = fields.split()
        if len(parts) != 6:
            raise ScheduleExpressionError(f"cron needs 6 fields, got {len(parts)}: {fields!r}")
        minute, hour, dom, month, dow, year = parts
        self.text = fields
        self.minutes = sorted(_values(minute, 0, 59, "minutes"))
        self.hours = sorted(_values(hour, 0, 23, "hours"))
        self.months = _values(month, 1, 12, "month", _MONTHS)
        self.years = None if year == "*" else _values(year, 1970, 2199, "year")
        if (dom == "?") == (dow == "?"):
            raise ScheduleExpressionError("exactly one of day-of-month and day-of-week must be '?'")
        self._day = self._dom_matcher(dom) if dow == "?" else self._dow_matcher(dow)

    @staticmethod
    def _dom_matcher(text: str) -> Callable[[date], bool]:
        spec = text.upper()
        if spec == "L":
            return lambda d: d.day == _last_day(d.year, d.month)
        if spec.endswith("W"):
            anchor = spec[:-1]

            def nearest_weekday(d: date) -> bool:
                last = _last_day(d.year, d.month)
                target = last if anchor == "L" else _value(anchor, None, 1, 31, "day-of-month")
                if target > last:
                    return False
                wanted = date(d.year, d.month, target)
                if wanted.weekday() == 5:  # Saturday -> Friday, unless that leaves the month
                    wanted = wanted - timedelta(days=1) if target > 1 else wanted + timedelta(days=2)
                elif wanted.weekday() == 6:  # Sunday -> Monday, unless that leaves the month
                    wanted = wanted + timedelta(days=1) if target < last else wanted - timedelta(days=2)
                return d == wanted

            return nearest_weekday
        days = _values(text, 1, 31, "day-of-month")
        return lambda d: d.day in days

    @staticmethod
    def _dow_matcher(text: str) -> Callable[[date], bool]:
        spec = text.upper()
        if spec == "L":
            return lambda d: _aws_weekday(d) == 7
        if spec.endswith("L"):
            weekday = _value(spec[:-1], _WEEKDAYS, 1, 7, "day-of-week")
            return lambda d: _aws_weekday(d) == weekday and d.day + 7 > _last_day(d.year, d.month)
        if "#" in spec:
            day_text, _, nth_text = spec.partition("#")
            weekday = _value(day_text, _WEEKDAYS, 1, 7, "day-of-week")
            nth = _value(nth_text, None, 1, 5, "day-of-week #")
            return lambda d: _aws_weekday(d) == weekday and (d.day - 1) // 7 + 1 == nth
        days = _values(text, 1, 7, "day-of-week", _WEEKDAYS)
        return lambda d: _aws_weekday(d) in days

    def matches_day(self, day: date) -> bool:
        return (self.years is None or day.year in self.years) and day.month in self.months and self._day(day)

    def matches(self, wall: datetime) -> bool:
        """Whether the wall-clock time (in the expression's zone) is one of its times."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.matches_day(wall.date())

    def times(self, after: datetime, until: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Its times t (aware UTC, ascending) with after < t <= until, evaluated in zone `tz`."""
        day, last = after.astimezone(tz).date(), until.astimezone(tz).date()
        while day <= last:
            if self.years is not None and day.year > max(self.years):
                return
            if self.matches_day(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).astimezone(
                            UTC
                        )
                        if after < moment <= until:
                            yield moment
            day += timedelta(days=1)


@dataclass(frozen=True)
class ScheduleExpression:
    """``cron(...)``, ``rate(n unit)`` or ``at(yyyy-mm-ddThh:mm:ss)`` in a time zone."""

    text: str
    timezone: str = "UTC"
    anchor: datetime | None = None  # where rate() counts from (AWS: the rule's creation)

    def __post_init__(self) -> None:
        self.kind  # noqa: B018 - parse now so a bad expression fails at construction

    @property
    def kind(self) -> str:
        match = re.fullmatch(r"\s*(cron|rate|at)\((.*)\)\s*", self.text)
        if not match:
            raise ScheduleExpressionError(f"not a schedule expression: {self.text!r}")
        kind, inner = match.groups()
        if kind == "cron":
            Cron(inner)
        elif kind == "rate":
            self._period(inner)
        else:
            self._at(inner)
        return kind

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone or "UTC")
        except Exception as exc:
            raise ScheduleExpressionError(f"unknown time zone {self.timezone!r}") from exc

    @property
    def inner(self) -> str:
        return self.text.strip()[self.text.strip().index("(") + 1 : -1]

    @staticmethod
    def _period(inner: str) -> timedelta:
        match = re.fullmatch(r"\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*", inner)
        if not match or int(match.group(1)) < 1:
            raise ScheduleExpressionError(f"rate({inner}): expected 'n minute(s)|hour(s)|day(s)'")
        unit = match.group(2).rstrip("s")
        return timedelta(**{f"{unit}s": int(match.group(1))})

    def _at(self, inner: str) -> datetime:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", inner.strip()):
            raise ScheduleExpressionError(f"at({inner}): expected yyyy-mm-ddThh:mm:ss")
        return datetime.fromisoformat(inner.strip()).replace(tzinfo=self.zone).astimezone(UTC)

    @property
    def at(self) -> datetime | None:
        """The UTC moment of an ``at(...)`` expression, else None."""
        return self._at(self.inner) if self.kind == "at" else None

    def times(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Its times t (aware UTC, ascending) with after < t <= until."""
        kind = self.kind
        if kind == "at":
            moment = self._at(self.inner)
            if after < moment <= until:
                yield moment
        elif kind == "rate":
            period, anchor = self._period(self.inner), self.anchor or after
            count = max(0, int((after - anchor) / period))
            moment = anchor + period * count
            while moment <= until:
                if moment > after:
                    yield moment
                moment += period
        else:
            yield from Cron(self.inner).times(after, until, self.zone)

    def next_after(self, moment: datetime, horizon_days: int = 366 * 5) -> datetime | None:
        return next(self.times(moment, moment + timedelta(days=horizon_days)), None)
