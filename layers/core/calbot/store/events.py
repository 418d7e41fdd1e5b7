"""Events (USER#<u> / EVENT#<event id>; GSI1 by start, GSI3 by series).

An event id starts with its account's prefix (calbot.ids.account_prefix), so one account's events
are a range of the user's partition (EVENT#evt_<account prefix>...): listing them by account or
calendar needs no index entry, which would be a write unit on every write of every event. Two accounts
of one user may share a prefix, so every such read keeps only the items of the account asked for."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol

from calbot import ids
from calbot.models import Event, account_key
from calbot.store.base import (
    _batch_get,
    _full_items,
    _get,
    _query,
    _query_records,
    _strip_keys,
    _write_if,
    batch_write,
    to_item,
    user_pk,
)
from calbot.timeutil import iso_z


class EventRecords(Protocol):
    """Stored events, as the sync, schedule and reconcile services use them (the paged, filtered
    query_events is left out: a fake of it would be a second DynamoDB). This module is the real one."""

    def get_event(self, user_id: str, event_id: str) -> Event | None: ...

    def get_events(self, user_id: str, event_ids: Iterable[str]) -> dict[str, Event]: ...

    def series_occurrences(self, user_id: str, series_id: str) -> list[Event]: ...

    def events_of_series(
        self, user_id: str, provider: str, account_id: str, series_id: str
    ) -> list[Event]: ...

    def events_of_calendar(
        self, user_id: str, provider: str, account_id: str, calendar_id: str
    ) -> list[Event]: ...

    def write_synced_events(self, events: list[Event], *, version: int) -> list[Event]: ...

    def set_recurring_enabled(
        self, user_id: str, event_ids: Iterable[str], enabled: bool, at: datetime
    ) -> int: ...


def series_partition(user_id: str, series_id: str) -> str:
    return f"SERIES#{user_id}#{series_id}"


# The provider's payload (returned only with include_raw=true) is stored zlib-compressed as one binary
# attribute: as plain JSON it was over half of an event item, and every KB of the item is a write unit
# on each change. Items written before this keep a plain `raw` (read as it is) until their next sync
# rewrites them.
RAW_ATTRIBUTE = "raw_z"


# A preset dictionary for the deflate stream: the field names and fixed values Graph and Google put in
# every event. A payload is small, so without one most of it is spent on spelling them out once
# (a typical Graph event: 1,847 bytes of JSON, 968 deflated, 662 with this dictionary). Stored data
# names its dictionary in its first byte: never change these bytes, add a _RAW_ZDICT_V2 beside them.
_RAW_FORMAT_V1 = b"\x01"
_RAW_ZDICT_V1 = " ".join(
    (
        "@odata.type #microsoft.graph.event @odata.etag id createdDateTime lastModifiedDateTime changeKey",
        "categories transactionId originalStartTimeZone originalEndTimeZone iCalUId",
        "040000008200E00074C5B7101A82E008 reminderMinutesBeforeStart isReminderOn hasAttachments subject",
        "bodyPreview importance normal sensitivity isAllDay isCancelled isOrganizer responseRequested",
        "seriesMasterId showAs busy type singleInstance occurrence seriesMaster exception webLink",
        "https://outlook.office365.com/owa/?itemid= &exvsurl=1&path=/calendar/item onlineMeetingUrl",
        "isOnlineMeeting onlineMeetingProvider teamsForBusiness allowNewTimeProposals isDraft hideAttendees",
        "responseStatus response organizer time 0001-01-01T00:00:00Z body contentType html content start",
        "end dateTime timeZone UTC location displayName locationType default uniqueIdType unknown address",
        "coordinates locations recurrence attendees emailAddress name onlineMeeting joinUrl",
        "https://teams.microsoft.com/l/meetup-join/ true false null kind calendar#event etag status",
        "confirmed htmlLink https://www.google.com/calendar/event?eid= created updated summary description",
        "creator email self iCalUID sequence reminders useDefault eventType hangoutLink",
        "https://meet.google.com/ conferenceData entryPoints video uri",
        "recurringEventId originalStartTime date",
    )
).encode()


# Format 2 adds what most of a payload's body is (RAW_BODY_LIMIT keeps its first 1,000 characters): the
# HTML an Outlook client wraps every body in (desktop Outlook's Word style sheet, Outlook on the web's,
# Teams') and the invitation text Teams, Zoom, Webex and Meet write, as it sits in the payload (JSON
# escaped). With it an event with Zoom's invitation as body (bench/auto_schedule.py --invite-body)
# stores its payload in 844 bytes instead of 1,191. The field names of format 1 come last,
# nearest the data: every payload uses them. Never change these strings either (a test pins the bytes).
_RAW_FORMAT_V2 = b"\x02"
_BODY_BOILERPLATE = (
    # desktop Outlook (Word)
    '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n'
    '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">\r\n<style><!--\r\n'
    '/* Font Definitions */\r\n@font-face\r\n\t{font-family:"Cambria Math";\r\n'
    "\tpanose-1:2 4 5 3 5 4 6 3 2 4;}\r\n@font-face\r\n\t{font-family:Calibri;\r\n"
    "\tpanose-1:2 15 5 2 2 2 4 3 2 4;}\r\n@font-face\r\n\t{font-family:Aptos;}\r\n"
    "/* Style Definitions */\r\np.MsoNormal, li.MsoNormal, div.MsoNormal\r\n\t{margin:0in;\r\n"
    '\tfont-size:11.0pt;\r\n\tfont-family:"Calibri",sans-serif;\r\n\tmso-ligatures:standardcontextual;}\r\n'
    "a:link, span.MsoHyperlink\r\n\t{mso-style-priority:99;\r\n\tcolor:#0563C1;\r\n"
    "\ttext-decoration:underline;}\r\nspan.EmailStyle17\r\n\t{mso-style-type:personal-compose;\r\n"
    '\tfont-family:"Calibri",sans-serif;\r\n\tcolor:windowtext;}\r\n.MsoChpDefault\r\n'
    "\t{mso-style-type:export-only;\r\n\tfont-size:10.0pt;\r\n\tmso-ligatures:none;}\r\n"
    "@page WordSection1\r\n\t{size:8.5in 11.0in;\r\n\tmargin:1.0in 1.0in 1.0in 1.0in;}\r\n"
    "div.WordSection1\r\n\t{page:WordSection1;}\r\n--></style>\r\n</head>\r\n"
    '<body lang="EN-US" link="#0563C1" vlink="#954F72" style="word-wrap:break-word">\r\n'
    '<div class="WordSection1">\r\n<p class="MsoNormal"><span style="font-size:12.0pt">',
    # Outlook on the web
    '<html><head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    '<style type="text/css" style="display:none">\r\n<!--\r\np\r\n\t{margin-top:0;\r\n'
    '\tmargin-bottom:0}\r\n-->\r\n</style></head><body dir="ltr"><div class="elementToProof" '
    'style="font-family: Aptos, Aptos_EmbeddedFont, Aptos_MSFontService, Calibri, Helvetica, '
    'sans-serif; font-size: 12pt; color: rgb(0, 0, 0);">',
    # Teams
    '<div style="width:100%"><span style="white-space:nowrap;color:#5F5F5F;opacity:.36">'
    "________________________________________________________________________________</span></div>\r\n"
    '<div class="me-email-text" lang="en-US" style="color:#252424;font-family:\'Segoe UI\','
    '\'Helvetica Neue\',Helvetica,Arial,sans-serif">\r\n<div style="margin-top:24px;margin-bottom:20px">'
    '<span style="font-size:24px;color:#252424">Microsoft Teams meeting</span></div>\r\n'
    '<div style="margin-bottom:20px">\r\n<div style="margin-top:0px;margin-bottom:0px;font-weight:bold">'
    '<span style="font-size:14px;color:#252424">Join on your computer, mobile app or room device</span>'
    '</div>\r\n<a href="https://teams.microsoft.com/l/meetup-join/19%3ameeting_" '
    "class=\"me-email-headline\" style=\"font-size:14px;font-family:'Segoe UI Semibold','Segoe UI',"
    "'Helvetica Neue',Helvetica,Arial,sans-serif;text-decoration:underline;color:#6264a7\" "
    'target="_blank" rel="noreferrer noopener">Click here to join the meeting</a></div>\r\n'
    '<div style="margin-bottom:20px;margin-top:20px"><span style="font-size:14px;color:#252424">'
    'Meeting ID: </span><span style="font-size:16px;color:#252424"></span><br>Passcode: '
    "Join the meeting now Need help? Dial in by phone Find a local number Phone conference ID: "
    "For organizers: Meeting options | Reset dial-in PIN Download Teams | Join on the web Learn More",
    # Zoom
    "Hi there,<br><br> is inviting you to a scheduled Zoom meeting.<br><br>Topic: <br>Time: "
    '<br><br>Join Zoom Meeting<br><a href="https://us02web.zoom.us/j/">?pwd=</a><br><br>Meeting ID: '
    "<br>Passcode: <br><br>---<br><br>One tap mobile<br>+16469313860,,#,,,,*# US<br>+13017158592,,"
    "# US (Washington DC)<br><br>---<br><br>Dial by your location<br>\u2022 +1 646 931 3860 US<br>"
    "\u2022 +1 301 715 8592 US (Washington DC)<br>\u2022 +1 305 224 1968 US<br>\u2022 +1 309 205 3325 US"
    "<br>\u2022 +1 312 626 6799 US (Chicago)<br>\u2022 +1 669 900 6833 US (San Jose)<br>\u2022 +1 689 278"
    " 1000 US<br>\u2022 +1 719 359 4580 US<br>\u2022 +1 253 205 0468 US<br>\u2022 +1 253 215 8782 US"
    " (Tacoma)<br>\u2022 +1 346 248 7799 US (Houston)<br>\u2022 +1 360 209 5623 US<br>\u2022 +1 386 347"
    " 5053 US<br>\u2022 +1 507 473 4847 US<br>\u2022 +1 564 217 2000 US<br>\u2022 +1 646 876 9923 US (New"
    " York)<br><br>Find your local number: https://us02web.zoom.us/u/<br><br>---<br><br>Join by SIP<br>"
    "\u2022 @zoomcrc.com<br><br>Join by H.323<br>\u2022 144.195.19.161 (US West)<br>\u2022 206.247.11.121"
    " (US East)<br>\u2022 115.114.131.7 (India Mumbai)<br>\u2022 115.114.115.7 (India Hyderabad)<br>",
    # Webex, Meet (plain text, as Google descriptions hold them)
    "Join Webex meeting https://.webex.com/.php?MTID= Meeting number (access code): Meeting password: "
    "Join by phone Tap to join from a mobile device (attendees only) Join from a video system or "
    "application Dial @webex.com You can also dial 173.243.2.68 and enter your meeting number. "
    "Join with Google Meet https://meet.google.com/ Join by phone More phone numbers: PIN: #",
)
_RAW_ZDICT_V2 = " ".join(json.dumps(text)[1:-1] for text in _BODY_BOILERPLATE).encode() + b" " + _RAW_ZDICT_V1
_RAW_DICTIONARIES = {_RAW_FORMAT_V1: _RAW_ZDICT_V1, _RAW_FORMAT_V2: _RAW_ZDICT_V2}


def _pack_raw(raw: dict[str, Any]) -> bytes:
    packer = zlib.compressobj(9, zdict=_RAW_ZDICT_V2)
    data = json.dumps(raw, separators=(",", ":"), default=str).encode()
    return _RAW_FORMAT_V2 + packer.compress(data) + packer.flush()


def _unpack_raw(value: Any) -> dict[str, Any]:
    data = bytes(value.value if hasattr(value, "value") else value)  # boto3's Binary, or bytes
    dictionary = _RAW_DICTIONARIES.get(data[:1])
    if dictionary is None:
        raise ValueError(f"unknown stored payload format {data[:1]!r}")
    unpacker = zlib.decompressobj(zdict=dictionary)
    loaded = json.loads(unpacker.decompress(data[1:]) + unpacker.flush())
    return loaded if isinstance(loaded, dict) else {}


# Fields an event item does not hold: its keys name them (PK USER#<user id>, SK EVENT#<event id>).
_KEY_FIELDS = ("user_id", "event_id")


def event_item(event: Event) -> dict[str, Any]:
    item = {
        "PK": user_pk(event.user_id),
        "SK": f"EVENT#{event.event_id}",
        "kind": "event",
        "GSI1PK": f"USER#{event.user_id}#EVENTS",
        "GSI1SK": f"{iso_z(event.start_time)}#{event.event_id}",
        # A field without a value, or with its default, is left out (read back as the default): its name
        # and value would be billed on every write, and a realistic event is just over 2 KB with them.
        **event.model_dump(
            mode="json", exclude={"raw", *_KEY_FIELDS}, exclude_none=True, exclude_defaults=True
        ),
    }
    if event.raw:
        item[RAW_ATTRIBUTE] = _pack_raw(event.raw)
    if event.series_id:
        # Sparse: an occurrence is also found by its series id alone (POST /calendar/schedule/{series_id}
        # names no account).
        item["GSI3PK"] = series_partition(event.user_id, event.series_id)
        item["GSI3SK"] = f"{iso_z(event.start_time)}#{event.event_id}"
    return item


def series_occurrences(user_id: str, series_id: str) -> list[Event]:
    """Every stored occurrence of one series of the user's, by start (GSI3, sparse)."""
    items = _query_records(
        IndexName="GSI3",
        KeyConditionExpression="GSI3PK = :pk",
        ExpressionAttributeValues=to_item({":pk": series_partition(user_id, series_id)}),
    )
    return [_event(i) for i in items]


def _event(data: dict[str, Any]) -> Event:
    event = _strip_keys(data)
    event.setdefault("user_id", str(data["PK"]).removeprefix("USER#"))  # items before 2026-12 hold them
    event.setdefault("event_id", str(data["SK"]).removeprefix("EVENT#"))
    if RAW_ATTRIBUTE in data:
        event["raw"] = _unpack_raw(data[RAW_ATTRIBUTE])
    return Event.model_validate(event)


def put_events(events: Iterable[Event]) -> int:
    return batch_write(puts=[event_item(e) for e in events])


def get_event(user_id: str, event_id: str) -> Event | None:
    data = _get(user_pk(user_id), f"EVENT#{event_id}")
    return _event(data) if data else None


def get_events(user_id: str, event_ids: Iterable[str]) -> dict[str, Event]:
    """Batch read (100 keys per call), retrying unprocessed keys."""
    ids = list(dict.fromkeys(event_ids))
    found: dict[str, Event] = {}
    for item in _batch_get([{"PK": user_pk(user_id), "SK": f"EVENT#{i}"} for i in ids], max_delay=2.0):
        event = _event(item)
        found[event.event_id] = event
    return found


def _account_items(
    user_id: str,
    provider: str,
    account_id: str,
    *,
    calendar_id: str | None = None,
    keys_only: bool = False,
    consistent: bool = True,
) -> Iterator[dict[str, Any]]:
    """The items of one account's events (of one calendar of it): the range of the user's partition
    their ids start with, filtered on the provider and calendar server side and on the account here
    (account ids compare case-insensitively, which a filter cannot). `keys_only` returns PK and SK
    (and account_id): a projection saves the transfer, not the read units, which count whole items."""
    filters, values = ["provider = :prov"], {":prov": provider}
    if calendar_id is not None:
        filters.append("calendar_id = :cal")
        values[":cal"] = calendar_id
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": "PK = :pk AND begins_with(SK, :sk)",
        "FilterExpression": " AND ".join(filters),
        "ExpressionAttributeValues": to_item(
            {
                ":pk": user_pk(user_id),
                ":sk": "EVENT#" + ids.account_prefix(user_id, provider, account_id),
                **values,
            }
        ),
        "ConsistentRead": consistent,
    }
    if keys_only:
        kwargs["ProjectionExpression"] = "PK, SK, account_id"
    wanted = account_key(account_id)
    for item in _query(**kwargs):
        if account_key(str(item.get("account_id", ""))) == wanted:
            yield item


def events_of_calendar(user_id: str, provider: str, account_id: str, calendar_id: str) -> list[Event]:
    """Every stored event of one calendar of one account (a full sync compares them with what the
    provider returned)."""
    return [_event(i) for i in _account_items(user_id, provider, account_id, calendar_id=calendar_id)]


def query_events(
    user_id: str,
    *,
    time_min: datetime,
    time_max: datetime,
    limit: int,
    after: str | None = None,
    before: str | None = None,
    provider: str | None = None,
    account_id: str | None = None,
    calendar_id: str | None = None,
    consistent: bool = True,
) -> list[Event]:
    """Events starting in [time_min, time_max), ordered by (start, id), after/before a GSI1SK key
    (the events read consistently from the table unless `consistent=False`: see `_full_items`).

    Returns up to `limit` events (ascending even when paging backwards). Filters are applied server
    side; DynamoDB's Limit counts items before filtering, so this keeps reading until it has enough.
    """
    lower, upper = iso_z(time_min), iso_z(time_max)
    # The bounds are all in the key condition: DynamoDB refuses a FilterExpression on the queried
    # index's keys ("can only contain non-primary key attributes").
    if after is not None:
        lo, hi = max(after + "\x00", lower), upper
    elif before is not None:
        lo, hi = lower, before
    else:
        lo, hi = lower, upper
    if lo > hi:
        return []  # nothing between (DynamoDB refuses a BETWEEN whose lower bound is above its upper)
    values: dict[str, Any] = {":lo": lo, ":hi": hi}
    filters: list[str] = []
    if provider:
        filters.append("provider = :prov")
        values[":prov"] = provider
    if calendar_id:
        filters.append("calendar_id = :cal")
        values[":cal"] = calendar_id
    kwargs: dict[str, Any] = {
        "IndexName": "GSI1",
        "KeyConditionExpression": "GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi",
        "ScanIndexForward": before is None,
        "ExpressionAttributeValues": to_item({":pk": f"USER#{user_id}#EVENTS", **values}),
        "Limit": max(limit, 25),
    }
    if filters:
        kwargs["FilterExpression"] = " AND ".join(filters)
    entries: list[dict[str, Any]] = []  # the index holds the keys and the filtered fields only
    for item in _query(**kwargs):
        if before is not None and item["GSI1SK"] >= before:
            continue
        if item["GSI1SK"] >= upper:
            continue
        if account_id and account_key(str(item.get("account_id", ""))) != account_key(account_id):
            continue  # the account filter, case-insensitive as account ids compare (GSI1 projects it)
        entries.append(item)
        if len(entries) >= limit:
            break
    out = [_event(i) for i in _full_items(entries, consistent=consistent)]
    if before is not None:
        out.reverse()
    return out


def count_account_events(user_id: str, provider: str, account_id: str) -> int:
    return sum(1 for _ in account_event_keys(user_id, provider, account_id))


def account_event_keys(user_id: str, provider: str, account_id: str) -> Iterator[tuple[str, str]]:
    """(PK, SK) of every event of one account, page by page (the keys are all that is transferred)."""
    for item in _account_items(user_id, provider, account_id, keys_only=True, consistent=False):
        yield item["PK"], item["SK"]


# Fields of a stored event that belong to the user, not to the provider: a sync never overwrites them.
_USER_OWNED_EVENT_FIELDS = ("recurring_enabled",)


_KEPT_EVENT_FIELDS = ("created_at",)  # set once, when the event is first stored


_SYNC_WRITE_WORKERS = 4  # per calendar; accounts sync in parallel too (aws.py sizes the pool)


def _write_synced_event(event: Event, version: int) -> bool:
    item = event_item(event.model_copy(update={"sync_version": version}))
    names: dict[str, str] = {}
    values: dict[str, Any] = {":version": version}
    sets = []
    for i, (field, value) in enumerate(item.items()):
        if field in ("PK", "SK"):
            continue
        names[f"#f{i}"] = field
        values[f":f{i}"] = value
        if field in _USER_OWNED_EVENT_FIELDS or field in _KEPT_EVENT_FIELDS:
            sets.append(f"#f{i} = if_not_exists(#f{i}, :f{i})")
        else:
            sets.append(f"#f{i} = :f{i}")
    names["#sv"] = "sync_version"
    # What this version of the event has no value for goes from the stored item: a field that became
    # empty or its default, the series index keys of an event no longer in a series, a payload (and a
    # plain one stored before payloads were compressed), the key fields items written before held. The
    # user's own fields stay whatever this version says.
    gone = [
        f
        for f in (*Event.model_fields, RAW_ATTRIBUTE, "GSI3PK", "GSI3SK")
        if f not in item and f != "raw" and f not in _USER_OWNED_EVENT_FIELDS
    ]
    removed = ["#raw"] + [f"#r{i}" for i in range(len(gone))]
    names["#raw"] = "raw"
    names |= {f"#r{i}": field for i, field in enumerate(gone)}
    return _write_if(
        "update_item",
        Key=to_item({"PK": item["PK"], "SK": item["SK"]}),
        UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removed),
        ConditionExpression="attribute_not_exists(#sv) OR #sv <= :version",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=to_item(values),
    )


def write_synced_events(events: list[Event], *, version: int) -> list[Event]:
    """What a sync that holds `version` found, written field by field and only over what an older sync
    wrote (an event a later sync already wrote keeps that sync's copy). The user's own fields
    (recurring_enabled) are never overwritten, only given on creation. Returns the events written."""
    if len(events) <= _SYNC_WRITE_WORKERS:  # an incremental change: a few writes, one after the other
        return [e for e in events if _write_synced_event(e, version)]
    from concurrent.futures import ThreadPoolExecutor  # writes of many events only

    with ThreadPoolExecutor(max_workers=min(_SYNC_WRITE_WORKERS, len(events))) as pool:
        done = list(pool.map(lambda e: _write_synced_event(e, version), events))
    return [e for e, ok in zip(events, done, strict=True) if ok]


def set_recurring_enabled(user_id: str, event_ids: Iterable[str], enabled: bool, at: datetime) -> int:
    """The user's recurrence flag on each of these events, and nothing else of them (a sync writing
    their content at the same moment keeps its content, and this flag stays). Returns how many."""
    changed = 0
    for event_id in event_ids:
        if _write_if(
            "update_item",
            Key=to_item({"PK": user_pk(user_id), "SK": f"EVENT#{event_id}"}),
            UpdateExpression="SET recurring_enabled = :e, updated_at = :u",
            ConditionExpression="attribute_exists(PK)",
            ExpressionAttributeValues=to_item({":e": enabled, ":u": iso_z(at)}),
        ):
            changed += 1
    return changed


def events_of_series(user_id: str, provider: str, account_id: str, series_id: str) -> list[Event]:
    """The stored occurrences of one series of one account, by start: the series index (GSI3) holds
    them and only them (a series id names its account already; the check below makes sure)."""
    wanted = account_key(account_id)
    return [
        e
        for e in series_occurrences(user_id, series_id)
        if e.provider == provider and account_key(e.account_id) == wanted
    ]
