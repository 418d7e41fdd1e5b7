"""Graph events as values: ids (series occurrences have stable derived ids), Windows/IANA zones,
patternedRecurrence checked and expanded with dateutil in the series' zone, bodies, and the views a
calendarView / delta round works with."""

from __future__ import annotations

import base64
import html
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule as _rr

from local.emulators import windows_zones
from local.emulators.core.errors import EmulatorError, positive_int
from local.emulators.graph.models import GRAPH_METADATA

EVENT_ID_PREFIX = "AAMkAGI2"


# Graph event ids are URL-safe base64 ('-', '_', '=' padding), never '/'.
_EVENT_ID_RE = re.compile(r"^[A-Za-z0-9\-_=]+$")


_OCCURRENCE_MARK = b"\x01OCC"


# MS-OXOCAL GlobalObjectId as hex: class id, then 4 bytes (YYMD) that are zero for a series and
# carry the original date for an occurrence, then the unique part.
_ICAL_UID_HEAD = "040000008200E00074C5B7101A82E008"


_EVENT_JSON_TYPE = "#microsoft.graph.event"


_DELTA_CONTEXT = f"{GRAPH_METADATA}#Collection(event)"


_MAX_SYNC_TOKENS = 5000


_NOT_FOUND_IN_STORE = "The specified object was not found in the store."


_WEEKDAYS: dict[str, _rr.weekday] = {
    "sunday": _rr.SU,
    "monday": _rr.MO,
    "tuesday": _rr.TU,
    "wednesday": _rr.WE,
    "thursday": _rr.TH,
    "friday": _rr.FR,
    "saturday": _rr.SA,
}


_WEEK_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}


_PATTERN_TYPES = ("daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly", "relativeYearly")


_RANGE_TYPES = ("endDate", "noEnd", "numbered")


_NO_DATE = "0001-01-01"  # what Graph puts in range.endDate when there is none


_PREFER_TZ_RE = re.compile(r'outlook\.timezone\s*=\s*(?:"([^"]*)"|([^,;]*))', re.IGNORECASE)


_PREFER_PAGE_RE = re.compile(r"odata\.maxpagesize\s*=\s*\"?(\d+)", re.IGNORECASE)


_PREFER_BODY_RE = re.compile(r'outlook\.body-content-type\s*=\s*"?(text|html)"?', re.IGNORECASE)


def _new_event_id() -> str:
    # Like Outlook REST event ids: "AAMkAGI2..." long URL-safe base64 ending in "AAA=".
    return EVENT_ID_PREFIX + base64.urlsafe_b64encode(os.urandom(105)).decode() + "AAA="


def _occurrence_id(master_id: str, on: date) -> str:
    """Stable id of the occurrence of `master_id` originally on local date `on` (one per day at most)."""
    raw = _OCCURRENCE_MARK + on.strftime("%Y%m%d").encode() + master_id.encode()
    return EVENT_ID_PREFIX + base64.urlsafe_b64encode(raw).decode()


def _parse_occurrence_id(event_id: str) -> tuple[str, date] | None:
    if not event_id.startswith(EVENT_ID_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(event_id[len(EVENT_ID_PREFIX) :])
        if not raw.startswith(_OCCURRENCE_MARK):
            return None
        mark = len(_OCCURRENCE_MARK)
        on = datetime.strptime(raw[mark : mark + 8].decode(), "%Y%m%d").date()
        return raw[mark + 8 :].decode(), on
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None


def _new_ical_uid() -> str:
    return _ICAL_UID_HEAD + "00000000" + secrets.token_hex(28).upper()


def _occurrence_ical_uid(uid: str, on: date) -> str:
    head = len(_ICAL_UID_HEAD)
    if not uid.startswith(_ICAL_UID_HEAD) or len(uid) < head + 8:
        return uid
    return uid[:head] + f"{on.year:04X}{on.month:02X}{on.day:02X}" + uid[head + 8 :]


def _zone(name: str) -> tuple[str, str]:
    """(IANA, display name) of a Windows or IANA zone name; EmulatorError if unknown."""
    try:
        return windows_zones.resolve(name)
    except ValueError:
        raise EmulatorError(
            f"unknown time zone {name!r}: use a Windows name ('Pacific Standard Time') or an IANA one"
        ) from None


def _local_dt(value: datetime) -> str:
    """Graph's dateTimeTimeZone.dateTime: no offset, 7 fractional digits."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0"


def _parse_date(raw: object, name: str) -> date:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw.strip()[:10])
        except ValueError:
            pass
    raise EmulatorError(f"{name} must be a date (YYYY-MM-DD), got {raw!r}")


def _normalize_recurrence(raw: object, start: datetime, zone_name: str) -> dict[str, Any]:
    """Check a Graph patternedRecurrence and fill in the defaults Graph reports back."""
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("pattern"), dict)
        or not isinstance(raw.get("range"), dict)
    ):
        raise EmulatorError("recurrence must be a Graph patternedRecurrence: {pattern: {...}, range: {...}}")
    pattern, rng = raw["pattern"], raw["range"]
    ptype = pattern.get("type")
    if ptype not in _PATTERN_TYPES:
        raise EmulatorError(f"recurrence.pattern.type must be one of {', '.join(_PATTERN_TYPES)}")
    interval = positive_int(pattern.get("interval", 1), "recurrence.pattern.interval", 99)
    days_raw = pattern.get("daysOfWeek") or []
    if not isinstance(days_raw, list) or any(
        not isinstance(d, str) or d.lower() not in _WEEKDAYS for d in days_raw
    ):
        raise EmulatorError(f"recurrence.pattern.daysOfWeek must list days among {', '.join(_WEEKDAYS)}")
    days = list(dict.fromkeys(d.lower() for d in days_raw))
    if ptype in ("weekly", "relativeMonthly", "relativeYearly") and not days:
        raise EmulatorError(f"recurrence.pattern.daysOfWeek is required for {ptype}")
    first_day = str(pattern.get("firstDayOfWeek") or "sunday").lower()
    if first_day not in _WEEKDAYS:
        raise EmulatorError("recurrence.pattern.firstDayOfWeek must be a day name")
    index = str(pattern.get("index") or "first").lower()
    if index not in _WEEK_INDEX:
        raise EmulatorError(f"recurrence.pattern.index must be one of {', '.join(_WEEK_INDEX)}")
    day_of_month = pattern.get("dayOfMonth") or 0
    if ptype in ("absoluteMonthly", "absoluteYearly"):
        day_of_month = positive_int(day_of_month, "recurrence.pattern.dayOfMonth", 31)
    month = pattern.get("month") or 0
    if ptype in ("absoluteYearly", "relativeYearly"):
        month = positive_int(month, "recurrence.pattern.month", 12)

    rtype = rng.get("type")
    if rtype not in _RANGE_TYPES:
        raise EmulatorError(f"recurrence.range.type must be one of {', '.join(_RANGE_TYPES)}")
    rzone_iana, rzone_name = _zone(str(rng.get("recurrenceTimeZone") or zone_name))
    first_local = start.astimezone(ZoneInfo(rzone_iana))
    start_date = (
        _parse_date(rng["startDate"], "recurrence.range.startDate")
        if rng.get("startDate")
        else first_local.date()
    )
    end_date = _NO_DATE
    count = 0
    if rtype == "endDate":
        if not rng.get("endDate") or rng.get("endDate") == _NO_DATE:
            raise EmulatorError("recurrence.range.endDate is required for an endDate range")
        end = _parse_date(rng["endDate"], "recurrence.range.endDate")
        if end < start_date:
            raise EmulatorError("recurrence.range.endDate is before its startDate")
        end_date = end.isoformat()
    elif rtype == "numbered":
        count = positive_int(rng.get("numberOfOccurrences"), "recurrence.range.numberOfOccurrences")
    return {
        "pattern": {
            "type": ptype,
            "interval": interval,
            "month": month,
            "dayOfMonth": day_of_month,
            "daysOfWeek": days,
            "firstDayOfWeek": first_day,
            "index": index,
        },
        "range": {
            "type": rtype,
            "startDate": start_date.isoformat(),
            "endDate": end_date,
            "recurrenceTimeZone": rzone_name,
            "numberOfOccurrences": count,
        },
    }


def _series_rule(recurrence: dict[str, Any], dtstart: datetime) -> _rr.rrule:
    """The dateutil rule for a Graph pattern + range, on naive local times from `dtstart`.

    As in Graph, `dtstart` (range.startDate at the series' time of day) is only an occurrence if it
    fits the pattern, and a numbered range counts real occurrences. absolute patterns on days 29-31
    fall on the last day of shorter months (what Outlook does), via BYMONTHDAY=d,-1 + BYSETPOS=1.
    """
    pattern, rng = recurrence["pattern"], recurrence["range"]
    ptype = pattern["type"]
    days = tuple(_WEEKDAYS[d] for d in pattern["daysOfWeek"])
    kwargs: dict[str, Any] = {"dtstart": dtstart, "interval": pattern["interval"]}
    if ptype == "daily":
        freq = _rr.DAILY
    elif ptype == "weekly":
        freq = _rr.WEEKLY
        kwargs.update(byweekday=days, wkst=_WEEKDAYS[pattern["firstDayOfWeek"]])
    else:
        freq = _rr.MONTHLY if ptype.endswith("Monthly") else _rr.YEARLY
        if ptype.endswith("Yearly"):
            kwargs["bymonth"] = pattern["month"]
        if ptype.startswith("absolute"):
            day = pattern["dayOfMonth"]
            if day > 28:
                kwargs.update(bymonthday=(day, -1), bysetpos=1)
            else:
                kwargs["bymonthday"] = day
        else:
            kwargs.update(byweekday=days, bysetpos=_WEEK_INDEX[pattern["index"]])
    if rng["type"] == "endDate":
        kwargs["until"] = datetime.combine(date.fromisoformat(rng["endDate"]), dt_time.max)
    elif rng["type"] == "numbered":
        kwargs["count"] = rng["numberOfOccurrences"]
    return _rr.rrule(freq, **kwargs)


def _html_to_text(content: str) -> str:
    text = re.sub(r"(?is)<(script|style|head)[^>]*>.*?</\1>", " ", content)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def _body_preview(body_html: str) -> str:
    return " ".join(_html_to_text(body_html).split())[:255]


def _body_document(body_html: str) -> str:
    # Outlook stores HTML bodies as whole documents.
    if not body_html or body_html.lstrip().lower().startswith(("<html", "<!doctype")):
        return body_html
    return (
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n'
        f"</head>\r\n<body>\r\n{body_html}\r\n</body>\r\n</html>\r\n"
    )


def _location_json(name: str | None) -> dict[str, Any]:
    if not name:
        return {
            "displayName": "",
            "locationType": "default",
            "uniqueIdType": "unknown",
            "address": {},
            "coordinates": {},
        }
    return {"displayName": name, "locationType": "default", "uniqueId": name, "uniqueIdType": "private"}


def _removed_item(event_id: str) -> dict[str, Any]:
    return {"@odata.type": _EVENT_JSON_TYPE, "id": event_id, "@removed": {"reason": "deleted"}}


@dataclass
class _ViewItem:
    """An event as one calendarView / GET answer sees it; times are filled in per request."""

    id: str
    type: str  # singleInstance | occurrence | exception | seriesMaster
    start: datetime  # aware, in the event's zone
    end: datetime
    is_all_day: bool
    zone_name: str
    version: str  # changes whenever anything a client sees of this item changes
    full: dict[str, Any]  # Graph event JSON with "start"/"end" placeholders


@dataclass
class _Prefs:
    """What the request's Prefer headers ask for."""

    zone: tuple[str, ZoneInfo] | None  # (label, zone); None: each event's own zone
    page_size: int | None
    text_body: bool
    applied: list[str]


@dataclass
class _DeltaRound:
    """One delta round (first sync or one deltaLink call): its items, frozen when it started."""

    account_id: str
    calendar_id: str
    window: tuple[datetime, datetime]
    entries: list[_ViewItem | dict[str, Any]]
    snapshot: dict[str, str]  # id -> version of everything in the window when the round started
    skip_tokens: dict[int, str] = field(default_factory=dict)
    delta_token: str | None = None


@dataclass
class _SyncToken:
    kind: str  # "skip" | "delta"
    account_id: str
    calendar_id: str
    issued_at: datetime
    round: _DeltaRound
    offset: int = 0


_ATTENDEE_TYPES = {"required", "optional", "resource"}


_ATTENDEE_RESPONSES = {"none", "organizer", "tentativelyAccepted", "accepted", "declined", "notResponded"}


def _attendees(raw: list[str | dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Control-API attendees as Graph attendee resources (type, status, emailAddress)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise EmulatorError("attendees must be a list")
    out = []
    for item in raw:
        spec = {"address": item} if isinstance(item, str) else item
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("address"), str)
            or "@" not in spec["address"]
        ):
            raise EmulatorError('attendees must be addresses or {"address": ..., ...} objects')
        kind, response = spec.get("type", "required"), spec.get("response", "none")
        if kind not in _ATTENDEE_TYPES or response not in _ATTENDEE_RESPONSES:
            raise EmulatorError(
                f"attendee type must be one of {sorted(_ATTENDEE_TYPES)}, response one of "
                f"{sorted(_ATTENDEE_RESPONSES)}"
            )
        out.append(
            {
                "type": kind,
                "status": {"response": response, "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {
                    "name": str(spec.get("name") or spec["address"]),
                    "address": spec["address"],
                },
            }
        )
    return out
