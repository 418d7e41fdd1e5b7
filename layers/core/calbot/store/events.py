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


def _pack_raw(raw: dict[str, Any]) -> bytes:
    packer = zlib.compressobj(9, zdict=_RAW_ZDICT_V1)
    data = json.dumps(raw, separators=(",", ":"), default=str).encode()
    return _RAW_FORMAT_V1 + packer.compress(data) + packer.flush()


def _unpack_raw(value: Any) -> dict[str, Any]:
    data = bytes(value.value if hasattr(value, "value") else value)  # boto3's Binary, or bytes
    if data[:1] != _RAW_FORMAT_V1:
        raise ValueError(f"unknown stored payload format {data[:1]!r}")
    unpacker = zlib.decompressobj(zdict=_RAW_ZDICT_V1)
    loaded = json.loads(unpacker.decompress(data[1:]) + unpacker.flush())
    return loaded if isinstance(loaded, dict) else {}


def event_item(event: Event) -> dict[str, Any]:
    item = {
        "PK": user_pk(event.user_id),
        "SK": f"EVENT#{event.event_id}",
        "kind": "event",
        "GSI1PK": f"USER#{event.user_id}#EVENTS",
        "GSI1SK": f"{iso_z(event.start_time)}#{event.event_id}",
        # A field without a value is left out (its name alone would be billed on every write).
        **event.model_dump(mode="json", exclude={"raw"}, exclude_none=True),
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
) -> list[Event]:
    """Events starting in [time_min, time_max), ordered by (start, id), after/before a GSI1SK key.

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
    out = [_event(i) for i in _full_items(entries)]
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
    # empty, the series index keys of an event no longer in a series, a payload (and a plain one stored
    # before payloads were compressed).
    gone = [
        f for f in (*Event.model_fields, RAW_ATTRIBUTE, "GSI3PK", "GSI3SK") if f not in item and f != "raw"
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
