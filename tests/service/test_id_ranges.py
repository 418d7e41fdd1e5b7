"""An account's events and a series' bots are ranges of the user's partition (their ids start with the
account's or the series' prefix, calbot.ids), not GSI2 entries: no event or bot item carries GSI2
keys, and no read of them queries GSI2. A prefix is 40 bits, so two accounts or two series of one
user may share one: made to collide here, the reads still never mix them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import aws, ids, store
from calbot.config import get_settings
from calbot.models import Event, ScheduledBot
from calbot.services.bots import new_bot_id
from local.stack import LocalStack

AT = datetime(2027, 4, 1, 9, 0, tzinfo=UTC)
ALICE = "Alice@Contoso.example"  # stored as the provider reports it; looked up in any case
BOB = "bob@contoso.example"
_n = itertools.count()


@pytest.fixture
def user(inproc_stack: LocalStack) -> str:
    return f"usr_rng{next(_n)}"


@pytest.fixture
def queries() -> Iterator[list[dict[str, Any]]]:
    """The parameters of every Query the code sends while the test runs."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: object) -> None:
        seen.append(dict(params))

    events = aws.dynamodb().meta.events
    events.register("provide-client-params.dynamodb.Query", record)
    yield seen
    events.unregister("provide-client-params.dynamodb.Query", record)


@pytest.fixture
def colliding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every account, and every series, of every user gets the same prefix."""
    monkeypatch.setattr(ids, "account_prefix", lambda *_: "evt_collided")
    monkeypatch.setattr(ids, "series_prefix", lambda *_: "sb_collided")


def _event(
    user_id: str, provider: str, account_id: str, n: int, calendar: str = "cal-1", **fields: Any
) -> Event:
    start = AT + timedelta(hours=n)
    platform_id = f"AAMk{n}"
    return Event.model_validate(
        {
            "event_id": ids.event_id(user_id, provider, account_id, platform_id),
            "user_id": user_id,
            "provider": provider,
            "account_id": account_id,
            "calendar_id": calendar,
            "platform_id": platform_id,
            "title": f"Meeting {n}",
            "start_time": start,
            "end_time": start + timedelta(minutes=30),
            "meeting_platform": "zoom",
            "meeting_url": f"https://acme.zoom.us/j/{n}",
            "content_hash": "h",
            "created_at": AT,
            "updated_at": AT,
            **fields,
        }
    )


def _bot(event: Event, series_key: str) -> ScheduledBot:
    return ScheduledBot(
        bot_id=new_bot_id(event.user_id, series_key),
        user_id=event.user_id,
        event_id=event.event_id,
        series_key=series_key,
        provider=event.provider,
        account_id=event.account_id,
        title=event.title,
        meeting_url=event.meeting_url or "",
        meeting_platform=event.meeting_platform,
        occurrence_start=event.start_time,
        meeting_end=event.end_time,
        scheduled_join_time=event.start_time - timedelta(minutes=1),
        bot_config={"bot_name": "Notes"},
        dedup_key=f"dedup-{event.event_id}",
        created_at=AT,
        updated_at=AT,
    )


def _stored(pk: str, sk: str) -> dict[str, Any]:
    item = aws.dynamodb().get_item(
        TableName=get_settings().table_name, Key=store.to_item({"PK": pk, "SK": sk})
    )
    return store.from_item(item["Item"])


def _ids(events: list[Event]) -> list[str]:
    return sorted(e.event_id for e in events)


def _accounts(user_id: str) -> dict[str, list[Event]]:
    """Alice's events on two calendars (one a series), Bob's on the same calendar id, and Alice's
    address at Google: four accounts' worth of events under one user."""
    alice = [_event(user_id, "outlook", ALICE, n, calendar="cal-1" if n < 3 else "cal-2") for n in range(4)]
    series = ids.event_id(user_id, "outlook", ALICE, "master")
    alice += [
        _event(user_id, "outlook", ALICE, n, series_id=series, event_type="occurrence") for n in (10, 11)
    ]
    bob = [
        _event(user_id, "outlook", BOB, n, series_id=ids.event_id(user_id, "outlook", BOB, "master"))
        for n in (20, 21)
    ]
    google = [_event(user_id, "google", ALICE.lower(), n) for n in (30, 31)]
    store.put_events([*alice, *bob, *google])
    return {"alice": alice, "bob": bob, "google": google}


def _check_account_reads(user_id: str, accounts: dict[str, list[Event]]) -> None:
    alice, bob, google = accounts["alice"], accounts["bob"], accounts["google"]
    assert _ids(store.events_of_calendar(user_id, "outlook", ALICE.lower(), "cal-1")) == _ids(
        [e for e in alice if e.calendar_id == "cal-1"]
    )
    assert _ids(store.events_of_calendar(user_id, "outlook", BOB, "cal-1")) == _ids(bob)
    assert _ids(store.events_of_calendar(user_id, "google", ALICE, "cal-1")) == _ids(google)
    assert store.count_account_events(user_id, "outlook", ALICE) == len(alice)
    assert store.count_account_events(user_id, "outlook", BOB.upper()) == len(bob)
    assert store.count_account_events(user_id, "google", ALICE) == len(google)
    assert sorted(sk for _, sk in store.account_event_keys(user_id, "outlook", ALICE)) == sorted(
        f"EVENT#{i}" for i in _ids(alice)
    )
    series = alice[-1].series_id or ""
    assert [e.event_id for e in store.events_of_series(user_id, "outlook", ALICE, series)] == [
        e.event_id for e in alice[-2:]
    ]
    assert store.events_of_series(user_id, "outlook", BOB, series) == []
    window = {"time_min": AT - timedelta(days=1), "time_max": AT + timedelta(days=3), "limit": 50}
    scoped = store.query_events(user_id, provider="outlook", account_id=ALICE.upper(), **window)
    assert _ids(scoped) == _ids(alice)
    assert _ids(store.query_events(user_id, provider="outlook", account_id=BOB, **window)) == _ids(bob)
    assert _ids(store.query_events(user_id, provider="google", account_id=ALICE, **window)) == _ids(google)
    page = store.query_events(user_id, provider="outlook", account_id=BOB, **{**window, "limit": 1})
    assert _ids(page) == _ids(bob[:1])  # the account filter applies before the limit


def test_an_accounts_events_are_a_range_of_the_user_partition_not_gsi2(
    user: str, queries: list[dict[str, Any]]
) -> None:
    accounts = _accounts(user)
    for event in [e for evs in accounts.values() for e in evs]:
        assert event.event_id.startswith(ids.account_prefix(user, event.provider, event.account_id))
        item = _stored(f"USER#{user}", f"EVENT#{event.event_id}")
        assert not {"GSI2PK", "GSI2SK"} & set(item)
    _check_account_reads(user, accounts)
    assert queries and not [q for q in queries if q.get("IndexName") == "GSI2"]
    ranges = [q for q in queries if "IndexName" not in q]
    assert ranges and all("begins_with(SK, :sk)" in q["KeyConditionExpression"] for q in ranges)


def test_accounts_whose_prefixes_collide_are_never_mixed(user: str, colliding: None) -> None:
    accounts = _accounts(user)
    assert {e.event_id[:12] for evs in accounts.values() for e in evs} == {"evt_collided"}
    _check_account_reads(user, accounts)


def _series_bots(user_id: str) -> dict[str, list[ScheduledBot]]:
    events = [_event(user_id, "outlook", BOB, n) for n in range(40, 45)]
    series = {"ser_a": events[:3], "ser_b": events[3:]}
    bots: dict[str, list[ScheduledBot]] = {}
    for key, evs in series.items():
        # created latest first: the read orders them by occurrence
        bots[key] = [_bot(e, key) for e in reversed(evs)]
        for bot in bots[key]:
            store.create_bot(bot)
        bots[key].reverse()
    return bots


def test_a_series_bots_are_a_range_of_the_user_partition_not_gsi2(
    user: str, queries: list[dict[str, Any]]
) -> None:
    bots = _series_bots(user)
    for key, made in bots.items():
        for bot in made:
            assert bot.bot_id.startswith(ids.series_prefix(user, key))
            assert not {"GSI2PK", "GSI2SK"} & set(_stored(f"USER#{user}", f"BOT#{bot.bot_id}"))
    queries.clear()
    for key, made in bots.items():
        assert store.bots_of_series(user, key) == [store.get_bot(user, b.bot_id) for b in made]
    assert store.bots_of_series(user, "ser_none") == []
    assert queries and not [q for q in queries if "IndexName" in q]


def test_series_whose_prefixes_collide_are_never_mixed(user: str, colliding: None) -> None:
    bots = _series_bots(user)
    assert {b.bot_id[:11] for made in bots.values() for b in made} == {"sb_collided"}
    for key, made in bots.items():
        assert [b.bot_id for b in store.bots_of_series(user, key)] == [b.bot_id for b in made]


def test_a_removed_series_master_is_looked_up_by_its_series_not_by_reading_the_account(
    user: str, queries: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental round that removes an id we never stored (a series master, or for Google any
    change outside the window) finds the stored instances of that series through the series index:
    not a read of every event of the account, which is no longer one calendar's index range."""
    from types import SimpleNamespace

    from calbot.providers.base import CalendarChanges
    from calbot.services import sync

    series = ids.event_id(user, "outlook", ALICE, "master")
    occurrences = [
        _event(
            user, "outlook", ALICE, n, series_id=series, series_platform_id="master", event_type="occurrence"
        )
        for n in (1, 2)
    ]
    elsewhere = _event(  # the same series seen in another calendar of the account stays
        user, "outlook", ALICE, 3, calendar="cal-2", series_id=series, series_platform_id="master"
    )
    others = [_event(user, "outlook", ALICE, n) for n in range(4, 30)]
    store.put_events([*occurrences, elsewhere, *others])
    conn = SimpleNamespace(user_id=user, provider="outlook", account_id=ALICE)
    window = (AT - timedelta(days=30), AT + timedelta(days=400))

    def removed(ids_: list[str]) -> list[Event]:
        changes = CalendarChanges(upserts=[], removed=ids_, cursor="c", full=False)
        return sync._changed_events(conn, "cal-1", changes, window, AT)  # type: ignore[arg-type]

    queries.clear()
    gone = removed(["master", "never-stored"])
    assert sorted(e.event_id for e in gone) == _ids(occurrences) and all(e.is_deleted for e in gone)
    assert queries and all(q.get("IndexName") == "GSI3" for q in queries)  # no range of the account

    # many at once: one read of the account instead, with the same answer
    monkeypatch.setattr(sync, "SERIES_LOOKUPS", 1)
    queries.clear()
    assert sorted(e.event_id for e in removed(["master", "never-stored"])) == _ids(occurrences)
    assert [q for q in queries if "IndexName" not in q]
