"""Time zone names and provider date-times -> aware UTC.

Graph names zones the Windows way ("Pacific Standard Time") or as IANA names, Google always uses
IANA names. Everything here resolves to a `ZoneInfo` and never raises on an unknown name.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

# Names that mean UTC.
_UTC_ALIASES = frozenset(
    {
        "utc",
        "etc/utc",
        "gmt",
        "etc/gmt",
        "z",
        "zulu",
        "universal",
        "coordinated universal time",
        "tzone://microsoft/utc",
    }
)
# Names that carry no usable zone. Graph reports a "Customized Time Zone" (or tzone://Microsoft/Custom,
# or "") when Outlook stored its own rule set with no name, typically for series created from invitations
# sent by other systems. The instants Graph returns are still exact in the dateTime's `timeZone`; a
# recurrence in such a zone is expanded in the event's own zone instead (see `zone_key`, PROTOCOLS.md).
_NO_ZONE = frozenset({"", "customized time zone", "tzone://microsoft/custom"})

_FRACTION = re.compile(r"\.(\d+)")


def _zone_exists(key: str) -> bool:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(key)
    except (KeyError, ValueError, OSError):  # not found / not a normalised key / unreadable file
        return False
    return True


@functools.cache
def _windows_names() -> dict[str, str]:
    # Imported on first use: tzlocal pulls in logging and more, which handlers that never see a
    # Windows zone name should not pay for at cold start.
    from tzlocal.windows_tz import win_tz

    return {name.lower(): iana for name, iana in win_tz.items()}


@functools.cache
def _iana_names_lower() -> dict[str, str]:
    # Walks the tz database once; only reached for names that are neither exact IANA nor Windows.
    from zoneinfo import available_timezones

    return {name.lower(): name for name in available_timezones()}


def iana_name(name: str | None) -> str:
    """The IANA key for an IANA or Windows zone name; "UTC" for empty, UTC-like and unknown names.

    An unknown name (a Windows name CLDR's table lacks, junk) is logged once per process: it is read
    as UTC because a dateTime must be placed somewhere, but never silently. Code that has a better
    fallback (a series' own start zone) asks `zone_key` first.
    """
    if not isinstance(name, str):  # None, or junk from a provider payload: never raise
        return "UTC"
    return zone_key(name) or "UTC"


def zone_key(name: object) -> str | None:
    """The IANA key for an IANA or Windows zone name, or None when it names no zone we know: empty,
    "Customized Time Zone" / tzone://Microsoft/Custom, or unknown (logged as a warning, once)."""
    if not isinstance(name, str):
        return None
    return _zone_key(name)


@functools.lru_cache(maxsize=1024)
def _zone_key(name: str) -> str | None:
    text = name.strip().strip('"')
    lowered = text.lower()
    if lowered in _NO_ZONE:
        return None
    if lowered in _UTC_ALIASES:
        return "UTC"
    if _zone_exists(text):
        return text
    mapped = _windows_names().get(lowered)
    if mapped and _zone_exists(mapped):
        return "UTC" if mapped.lower() in _UTC_ALIASES else mapped
    mapped = _iana_names_lower().get(lowered)
    if mapped:
        return mapped
    # Unknown names never raise: one odd event must not break a sync. Said once per name (cached).
    from calbot.log import logger

    logger.warning("unknown time zone name", extra={"time_zone": text[:100]})
    return None


def to_zoneinfo(name: str | None) -> ZoneInfo:
    """ZoneInfo for an IANA or Windows name (case-insensitive); unknown names give UTC (logged), never
    raise."""
    return _zoneinfo(iana_name(name))


@functools.lru_cache(maxsize=512)
def _zoneinfo(key: str) -> ZoneInfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(key)


def local_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """Localise a naive wall time in `tz` and return aware UTC.

    fold=0 (PEP 495): an ambiguous time (the repeated hour when clocks go back) takes its first
    instant; a nonexistent time (the skipped hour when clocks go forward) is read with the offset in
    force before the jump, so it lands that much later on the wall clock (02:30 -> 03:30), which is
    what Outlook and Google do with a meeting that falls into the gap.
    """
    if wall.tzinfo is not None:
        return wall.astimezone(UTC)
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def utc_to_local(instant: datetime, tz: ZoneInfo) -> datetime:
    """Naive wall time in `tz` of an aware instant."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime")
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def parse_datetime(text: str) -> datetime:
    """ISO 8601 date-time, naive when it has no offset; any number of fractional digits (Graph: 7)."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    # Python keeps microseconds: cut or pad the fraction to 6 digits.
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    return datetime.fromisoformat(value)


def graph_datetime_to_utc(value: dict[str, Any]) -> datetime:
    """Graph dateTimeTimeZone {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": ...} -> aware UTC.

    A missing timeZone means UTC: that is what Graph sends without a Prefer: outlook.timezone header.
    """
    raw = value.get("dateTime") if isinstance(value, dict) else None
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"not a Graph dateTimeTimeZone: {value!r}")
    parsed = parse_datetime(raw)
    if parsed.tzinfo is not None:  # not expected from Graph, but an explicit offset wins
        return parsed.astimezone(UTC)
    return local_to_utc(parsed, to_zoneinfo(value.get("timeZone")))


def google_datetime_to_utc(value: dict[str, Any]) -> tuple[datetime, bool]:
    """Google EventDateTime -> (aware UTC, is_all_day).

    Timed values carry an RFC 3339 offset; without one, `timeZone` names the zone. An all-day value
    ({"date": "2026-12-01"}) has no instant at all: we keep its calendar date as midnight UTC of that
    date (whatever `timeZone` says), so the date survives round trips and sorts with timed events.
    """
    if not isinstance(value, dict):
        raise ValueError(f"not a Google EventDateTime: {value!r}")
    raw = value.get("dateTime")
    if isinstance(raw, str) and raw:
        parsed = parse_datetime(raw)
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC), False
        return local_to_utc(parsed, to_zoneinfo(value.get("timeZone"))), False
    day = value.get("date")
    if isinstance(day, str) and day:
        return datetime.combine(date.fromisoformat(day.strip()), time(), tzinfo=UTC), True
    raise ValueError(f"not a Google EventDateTime: {value!r}")
