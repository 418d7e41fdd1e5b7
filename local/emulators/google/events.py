"""Google events as values: instance ids and stamps, RFC 3339 / all-day times, Meet conference data,
and RFC 5545 recurrence lines (RRULE / EXDATE / RDATE) checked and expanded with dateutil."""

from __future__ import annotations

import itertools
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as _rr

from local.emulators.core.errors import EmulatorError
from local.emulators.core.helpers import localize
from local.emulators.google.models import GoogleEvent

_INSTANCE_STAMP_RE = re.compile(r"^(\d{8})(?:T(\d{6})Z)?$")


_UNTIL_RE = re.compile(r"UNTIL=(\d{8})(T\d{6}Z?)?", re.IGNORECASE)


def _rfc3339_ms(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _etag(updated: datetime, seq: int) -> str:
    return f'"{_ms(updated)}{seq % 1000:03d}"'


def _zone_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise EmulatorError("time_zone must be an IANA zone name, e.g. 'Europe/Berlin'")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise EmulatorError(f"unknown time zone {name!r}: use an IANA name, e.g. 'Europe/Berlin'") from None
    return name


def _instance_stamp(original: datetime, all_day: bool) -> str:
    if all_day:
        return original.strftime("%Y%m%d")
    return original.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _parse_instance_id(event_id: str) -> tuple[str, str] | None:
    master, sep, stamp = event_id.rpartition("_")
    if not sep or not master or not _INSTANCE_STAMP_RE.match(stamp):
        return None
    return master, stamp


def _stamp_datetime(stamp: str, tz: ZoneInfo, all_day: bool) -> datetime | None:
    match = _INSTANCE_STAMP_RE.match(stamp)
    if match is None or all_day != (match.group(2) is None):
        return None
    if all_day:
        return datetime.strptime(match.group(1), "%Y%m%d")
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).astimezone(tz)


def _time_json(value: datetime, zone: str, all_day: bool) -> dict[str, str]:
    if all_day:
        return {"date": value.date().isoformat()}
    text = value.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")
    return {"dateTime": text.replace("+00:00", "Z"), "timeZone": zone}


def _meet_link(code: str | None = None) -> str:
    if code is None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        parts = ["".join(secrets.choice(letters) for _ in range(n)) for n in (3, 4, 3)]
        code = "-".join(parts)
    return f"https://meet.google.com/{code}"


def _conference_for(link: str) -> dict[str, Any]:
    code = link.rstrip("/").rsplit("/", 1)[-1]
    return {
        "entryPoints": [
            {"entryPointType": "video", "uri": link, "label": link.split("://", 1)[-1]},
        ],
        "conferenceSolution": {
            "key": {"type": "hangoutsMeet"},
            "name": "Google Meet",
            "iconUri": "https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/logo_meet_2020q4_color_2x_web_512dp.png",
        },
        "conferenceId": code,
    }


def _split_line(line: str) -> tuple[str, dict[str, str], str]:
    head, sep, value = line.partition(":")
    if not sep:
        raise EmulatorError(f"recurrence line without ':': {line!r}")
    name, *params = head.split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.upper()] = val
    return name.upper(), parsed, value


def _date_values(params: dict[str, str], value: str, tz: ZoneInfo, master: GoogleEvent) -> list[datetime]:
    """EXDATE / RDATE values as datetimes comparable with the series' instances."""
    zone = ZoneInfo(params["TZID"]) if "TZID" in params else tz
    out = []
    for raw in value.split(","):
        raw = raw.strip()
        if params.get("VALUE", "").upper() == "DATE" or len(raw) == 8:
            day = datetime.strptime(raw, "%Y%m%d")
            if master.all_day:
                out.append(day)
            else:
                out.append(localize(datetime.combine(day.date(), master.start.time()), tz))
        elif raw.endswith("Z"):
            moment = datetime.strptime(raw, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            out.append(moment.replace(tzinfo=None) if master.all_day else moment)
        else:
            naive = datetime.strptime(raw, "%Y%m%dT%H%M%S")
            out.append(naive if master.all_day else localize(naive, zone))
    return out


def _rrule_value(value: str, tz: ZoneInfo, all_day: bool) -> str:
    """UNTIL in the form dateutil accepts for this series (UTC for timed, a date for all-day)."""

    def fix(match: re.Match[str]) -> str:
        day, rest = match.group(1), match.group(2) or ""
        if all_day:
            return f"UNTIL={day}"
        if rest.upper().endswith("Z"):
            return f"UNTIL={day}{rest.upper()}"
        local = datetime.strptime(day + (rest[1:] if rest else "235959"), "%Y%m%d%H%M%S")
        return "UNTIL=" + localize(local, tz).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    return _UNTIL_RE.sub(fix, value)


def _rule_set(master: GoogleEvent) -> _rr.rruleset:
    assert master.recurrence is not None
    tz = ZoneInfo(master.zone)
    rset = _rr.rruleset()
    rset.rdate(master.start)  # DTSTART is always the first instance (RFC 5545)
    for line in master.recurrence:
        name, params, value = _split_line(line)
        if name == "RRULE":
            rset.rrule(_rr.rrulestr(_rrule_value(value, tz, master.all_day), dtstart=master.start))
        elif name == "EXRULE":
            rset.exrule(_rr.rrulestr(_rrule_value(value, tz, master.all_day), dtstart=master.start))
        elif name == "EXDATE":
            for moment in _date_values(params, value, tz, master):
                rset.exdate(moment)
        elif name == "RDATE":
            for moment in _date_values(params, value, tz, master):
                rset.rdate(moment)
        else:
            raise EmulatorError(f"unsupported recurrence line {line!r}: RRULE, EXRULE, EXDATE or RDATE")
    return rset


def _check_recurrence(lines: object, master: GoogleEvent) -> list[str]:
    if not isinstance(lines, list) or not all(isinstance(x, str) and x for x in lines) or not lines:
        raise EmulatorError('recurrence must be a list of lines, e.g. ["RRULE:FREQ=WEEKLY;BYDAY=MO"]')
    probe = GoogleEvent(**{**master.__dict__, "recurrence": list(lines)})
    try:
        rset = _rule_set(probe)
        list(itertools.islice(rset, 3))
    except EmulatorError:
        raise
    except (ValueError, TypeError, KeyError, ZoneInfoNotFoundError) as exc:
        raise EmulatorError(f"bad recurrence {lines!r}: {exc}") from None
    return list(lines)
