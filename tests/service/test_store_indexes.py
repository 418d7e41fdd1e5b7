"""The narrowed indexes (template.yaml `Table`: GSI1 INCLUDEs a few filter fields, GSI2 and GSI3 are
KEYS_ONLY) and the ranges of the user's partition (an account's events, a series' bots) still give
every query of calbot.store the full records the API returns: each query's records equal what a
read of the item by key gives, raw provider payload included. moto applies the projections (and
evaluates filters on the projected entry, as DynamoDB does), so a query that read a field from an
index entry, or filtered on one the index does not hold, fails here."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import ids, store
from calbot.config import get_settings
from calbot.models import ApiKeyRecord, Event, ScheduledBot, Subscription
from calbot.services.bots import new_bot_id
from local.stack import LocalStack

AT = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
_n = itertools.count()


def _table_projections() -> dict[str, dict[str, Any]]:
    from calbot import aws

    table = aws.dynamodb().describe_table(TableName=get_settings().table_name)["Table"]
    return {i["IndexName"]: i["Projection"] for i in table["GlobalSecondaryIndexes"]}


def _event(user_id: str, n: int, **fields: Any) -> Event:
    start = AT + timedelta(hours=n)
    data: dict[str, Any] = {
        "event_id": ids.event_id(user_id, "outlook", "idx@contoso.example", f"AAMk{n}" * 8),
        "user_id": user_id,
        "provider": "outlook",
        "account_id": "idx@contoso.example",
        "calendar_id": "cal-1",
        "platform_id": f"AAMk{n}" * 8,
        "ical_uid": f"uid-{n}",
        "title": f"Meeting {n}",
        "start_time": start,
        "end_time": start + timedelta(minutes=30),
        "organizer_email": "boss@contoso.example",
        "location": "Room 1",
        "meeting_platform": "teams",
        "meeting_url": f"https://teams.microsoft.com/l/meetup-join/19%3a{n}%40thread.v2/0",
        "content_hash": "h",
        "created_at": AT,
        "updated_at": AT,
        "raw": {"id": f"AAMk{n}", "subject": f"Meeting {n}", "body": {"content": "<p>hi</p>" * 20}},
        **fields,
    }
    return Event.model_validate(data)


def _bot(event: Event, n: int) -> ScheduledBot:
    return ScheduledBot(
        bot_id=new_bot_id(event.user_id, event.series_id or event.event_id),
        user_id=event.user_id,
        event_id=event.event_id,
        series_key=event.series_id or event.event_id,
        provider=event.provider,
        account_id=event.account_id,
        title=event.title,
        meeting_url=event.meeting_url or "",
        meeting_platform=event.meeting_platform,
        occurrence_start=event.start_time,
        meeting_end=event.end_time,
        scheduled_join_time=event.start_time - timedelta(minutes=1),
        bot_config={"bot_name": "Notes", "custom_attributes": {"k": "v"}},
        dedup_key=f"dedup-{event.event_id}-{n}",
        created_at=AT,
        updated_at=AT,
    )


@pytest.fixture
def user(inproc_stack: LocalStack) -> str:
    return f"usr_idx{next(_n)}"


def test_the_indexes_are_narrowed(inproc_stack: LocalStack) -> None:
    projections = _table_projections()
    assert projections["GSI1"]["ProjectionType"] == "INCLUDE"
    # a bot's phase, not its status: a launch's claim would rewrite the entry (see the test below)
    assert sorted(projections["GSI1"]["NonKeyAttributes"]) == [
        "account_id",
        "calendar_id",
        "phase",
        "provider",
    ]
    assert projections["GSI2"]["ProjectionType"] == "KEYS_ONLY"
    assert projections["GSI3"]["ProjectionType"] == "KEYS_ONLY"


def test_gsi1_queries_return_full_events_bots_and_api_keys(user: str) -> None:
    events = [_event(user, n) for n in range(3)]
    store.put_events(events)
    stored = {e.event_id: store.get_event(user, e.event_id) for e in events}
    assert all(s is not None and s.raw for s in stored.values())

    found = store.query_events(user, time_min=AT, time_max=AT + timedelta(days=1), limit=10)
    assert found == [stored[e.event_id] for e in events]
    # filtered on the fields GSI1 projects (provider, account, calendar), paging both ways
    scoped = store.query_events(
        user,
        time_min=AT,
        time_max=AT + timedelta(days=1),
        limit=10,
        provider="outlook",
        account_id="idx@contoso.example",
        calendar_id="cal-1",
    )
    assert scoped == found
    after_first = store.query_events(
        user, time_min=AT, time_max=AT + timedelta(days=1), limit=1, after=f"{AT.isoformat()}"
    )
    assert after_first and after_first[0] == stored[after_first[0].event_id]
    # a cursor from before time_min starts at time_min; one past time_max is an empty page (the
    # local DynamoDB, as AWS, refuses a BETWEEN whose lower bound is above its upper)
    early = store.query_events(
        user, time_min=AT + timedelta(hours=1), time_max=AT + timedelta(days=1), limit=10, after="2000"
    )
    assert early == [stored[e.event_id] for e in events[1:]]
    assert (
        store.query_events(user, time_min=AT, time_max=AT + timedelta(hours=2), limit=10, after="2999") == []
    )

    bots = [_bot(e, 0) for e in events]
    for bot in bots:
        store.create_bot(bot)
    by_id = {b.bot_id: store.get_bot(user, b.bot_id) for b in bots}
    upcoming = store.upcoming_bots(user, after=AT - timedelta(days=1), limit=10, status="Scheduled")
    assert upcoming == [by_id[b.bot_id] for b in bots]
    assert list(store.account_bots(user, "outlook", "idx@contoso.example")) == upcoming
    assert store.bots_between(user, AT - timedelta(hours=1), AT + timedelta(days=1)) == upcoming

    key = ApiKeyRecord(key_id=f"key_{user}", key_hash=f"hash_{user}", user_id=user, created_at=AT)
    store.put_api_key(key)
    assert store.list_api_keys(user) == [key]


def test_account_and_series_reads_and_gsi2_queries_return_full_records(user: str) -> None:
    series = [
        _event(user, n, series_id="ser_1", event_type="occurrence", occurrence_start=AT) for n in range(2)
    ]
    single = _event(user, 5)
    store.put_events([*series, single])
    stored = {e.event_id: store.get_event(user, e.event_id) for e in [*series, single]}

    calendar = store.events_of_calendar(user, "outlook", "idx@contoso.example", "cal-1")
    assert sorted(calendar, key=lambda e: e.event_id) == sorted(stored.values(), key=lambda e: e.event_id)  # type: ignore[arg-type,return-value]
    # by the series index (GSI3), kept to the account
    assert store.events_of_series(user, "outlook", "idx@contoso.example", "ser_1") == [
        stored[e.event_id] for e in series
    ]
    assert store.count_account_events(user, "outlook", "idx@contoso.example") == 3

    bots = [_bot(e, 1) for e in series]
    for bot in bots:
        store.create_bot(bot)
    assert store.bots_of_series(user, "ser_1") == [store.get_bot(user, b.bot_id) for b in bots]

    sub = Subscription(
        id=f"sub_{user}",
        user_id=user,
        provider="outlook",
        account_id="idx@contoso.example",
        calendar_id="cal-1",
        client_state_hash="0" * 64,
        expires_at=datetime(2000, 1, 1, tzinfo=UTC),  # before any other test's: found first
        created_at=AT,
        handle={"resource": "me/events"},
    )
    store.put_subscriptions([sub])
    expiring = [
        s for s in store.subscriptions_expiring_before(datetime(2000, 1, 2, tzinfo=UTC)) if s.id == sub.id
    ]
    assert expiring == [store.get_subscription(sub.id)]


def test_gsi3_queries_return_full_occurrences(user: str) -> None:
    series = [
        _event(user, n, series_id="ser_3", event_type="occurrence", occurrence_start=AT) for n in range(3)
    ]
    store.put_events(series)
    assert store.series_occurrences(user, "ser_3") == [store.get_event(user, e.event_id) for e in series]
    assert all(e.raw for e in store.series_occurrences(user, "ser_3"))


def test_an_event_stored_with_a_plain_payload_still_reads_and_a_sync_write_compresses_it(user: str) -> None:
    from calbot import aws
    from calbot.store.events import event_item

    event = _event(user, 7, sync_version=0)  # written by an older sync
    item = {k: v for k, v in event_item(event).items() if k != "raw_z"} | {"raw": event.raw}
    aws.dynamodb().put_item(TableName=get_settings().table_name, Item=store.to_item(item))  # as before
    assert store.get_event(user, event.event_id) == event
    newer = event.model_copy(update={"title": "Moved"})
    assert store.write_synced_events([newer], version=1) == [newer]
    stored = aws.dynamodb().get_item(
        TableName=get_settings().table_name, Key=store.to_item({"PK": item["PK"], "SK": item["SK"]})
    )["Item"]
    assert "raw" not in stored and "raw_z" in stored
    assert store.get_event(user, event.event_id) == newer.model_copy(update={"sync_version": 1})


def test_a_field_that_becomes_empty_leaves_the_stored_event_and_so_does_its_series_entry(user: str) -> None:
    occurrence = _event(user, 8, series_id="ser_8", event_type="occurrence", occurrence_start=AT)
    assert store.write_synced_events([occurrence], version=1) == [occurrence]
    assert [e.event_id for e in store.series_occurrences(user, "ser_8")] == [occurrence.event_id]
    # the next sync sees it without a location, no longer in a series, and without a payload
    single = occurrence.model_copy(
        update={
            "location": None,
            "series_id": None,
            "event_type": "single",
            "occurrence_start": None,
            "raw": None,
        }
    )
    assert store.write_synced_events([single], version=2) == [single]
    assert store.get_event(user, occurrence.event_id) == single.model_copy(update={"sync_version": 2})
    assert store.series_occurrences(user, "ser_8") == []


def _stored_item(user: str, event_id: str) -> dict[str, Any]:
    from calbot import aws

    item = aws.dynamodb().get_item(
        TableName=get_settings().table_name,
        Key=store.to_item({"PK": store.user_pk(user), "SK": f"EVENT#{event_id}"}),
    )["Item"]
    return store.from_item(item)


def test_an_event_item_holds_neither_its_key_fields_nor_defaults_and_older_items_lose_them(user: str) -> None:
    """Each byte of an event item is billed on every write: user_id and event_id are its keys, and a
    field at its default reads back as the default. An item written before (with them) still reads,
    a sync rewrite drops them, and the user's own recurring_enabled stays whatever it was."""
    from calbot import aws
    from calbot.store.events import event_item

    event = _event(user, 9, sync_version=0, recurring_enabled=True)
    old_item = event_item(event) | {  # as items were written before
        "user_id": user,
        "event_id": event.event_id,
        "is_deleted": False,
        "is_all_day": False,
        "attendees_count": 0,
        "event_type": "single",
    }
    aws.dynamodb().put_item(TableName=get_settings().table_name, Item=store.to_item(old_item))
    assert store.get_event(user, event.event_id) == event

    newer = event.model_copy(update={"title": "Moved", "recurring_enabled": False})  # as a sync sees it
    assert store.write_synced_events([newer], version=1) == [newer]
    stored = _stored_item(user, event.event_id)
    assert not {"user_id", "event_id", "is_deleted", "is_all_day", "attendees_count", "event_type"} & set(
        stored
    )
    assert stored["recurring_enabled"] is True  # the user's, not the sync's default
    assert store.get_event(user, event.event_id) == newer.model_copy(
        update={"sync_version": 1, "recurring_enabled": True}
    )

    fresh = _event(user, 10)
    assert store.write_synced_events([fresh], version=1) == [fresh]
    assert "recurring_enabled" not in _stored_item(user, fresh.event_id)  # its default: not stored
    assert store.get_event(user, fresh.event_id) == fresh.model_copy(update={"sync_version": 1})


def test_bots_listed_by_each_status_from_the_phase_gsi1_projects(user: str) -> None:
    """GSI1 projects a bot's phase (Scheduled and Launching are both "live"): each status still lists
    exactly its bots, the live ones both, and `all` every one, soonest first."""
    events = [_event(user, n) for n in range(5)]
    store.put_events(events)
    bots = [_bot(e, 0) for e in events]
    for bot in bots:
        store.create_bot(bot)
    statuses = ["Scheduled", "Launching", "Launched", "Failed", "Cancelled"]
    for bot, status in zip(bots[1:], statuses[1:], strict=True):
        store.save_bot(bot.model_copy(update={"status": status}), expect_status="Scheduled")
    stored = [store.get_bot(user, b.bot_id) for b in bots]

    def listed(*wanted: str) -> list[str]:
        found = store.bots_by_join_time(
            user, ascending=True, bound="2000", limit=100, statuses=wanted or None
        )
        return [b.status for b in found]

    for status in statuses:
        assert listed(status) == [status]
    assert listed("Scheduled", "Launching") == ["Scheduled", "Launching"]
    assert listed() == statuses
    assert store.bots_by_join_time(user, ascending=True, bound="2000", limit=100) == stored
    # a page of one live bot where a non-live one comes first: the filter, not the page, decides
    assert listed("Launching") == ["Launching"]
    one = store.bots_by_join_time(user, ascending=True, bound="2000", limit=1, statuses=("Failed",))
    assert [b.bot_id for b in one] == [bots[3].bot_id]


def test_a_launch_claim_writes_no_index_entry_and_its_end_one(user: str, ddb_writes: Any) -> None:
    """Scheduled -> Launching leaves the bot's GSI1 entry as it is (same phase): one write unit, the
    bot's item. Launching -> Launched changes the phase: the item and its entry."""
    event = _event(user, 0)
    store.put_events([event])
    bot = _bot(event, 0)
    store.create_bot(bot)
    ddb_writes.reset()
    claimed = bot.model_copy(update={"status": "Launching", "launch_claim": "c1"})
    store.save_bot(claimed, expect_status="Scheduled")
    assert ddb_writes.breakdown()["indexes"] == {} and ddb_writes.units == 1
    ddb_writes.reset()
    store.save_bot(
        claimed.model_copy(update={"status": "Launched"}), expect_status="Launching", expect_claim="c1"
    )
    assert ddb_writes.breakdown()["indexes"] == {"GSI1": 1} and ddb_writes.units == 2


def test_a_bot_written_before_phases_is_still_listed_by_its_status(user: str) -> None:
    from calbot import aws
    from calbot.store.bots import _bot_item

    event = _event(user, 0)
    store.put_events([event])
    bot = _bot(event, 0).model_copy(update={"status": "Launched"})
    old_item = {k: v for k, v in _bot_item(bot).items() if k != "phase"}  # as bots were written before
    aws.dynamodb().put_item(TableName=get_settings().table_name, Item=store.to_item(old_item))
    for status, listed in (("Launched", [bot]), ("Scheduled", []), ("Failed", [])):
        assert (
            store.bots_by_join_time(user, ascending=True, bound="2000", limit=10, statuses=(status,))
            == listed
        )
