"""services.sync against moto and the Graph emulator: delta links, masters once, no-op re-syncs,
moves and cancellations, expired tokens, and one failing account never failing the others."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import store
from calbot.models import Connection, CreateConnectionRequest
from calbot.services.sync import sync_user
from local.stack import LocalStack
from tests.conftest import DynamoWrites, batch_get_consistency, connect_new_account, virtual_time

CLIENT_ID = "sync-client"
CLIENT_SECRET = "sync-client-secret-77"
_n = itertools.count()
SOON = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack
    inproc_stack.graph.clear_faults()


def at(hours: float) -> str:
    return (SOON + timedelta(hours=hours)).isoformat()


def connected(stack: LocalStack) -> tuple[str, dict[str, Any], Connection]:
    """A new user with one connected account; returns (user_id, emulator account, connection)."""
    user_id, acct = connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix="sync")
    return user_id, acct, store.list_connections(user_id)[0]


def stored(user_id: str) -> dict[str, Any]:
    """platform id -> stored event, for the user's events in the next year."""
    events = store.query_events(
        user_id, time_min=SOON - timedelta(days=30), time_max=SOON + timedelta(days=400), limit=10_000
    )
    return {e.platform_id: e for e in events}


def test_full_then_incremental_and_unchanged_resync_writes_nothing(
    stack: LocalStack, ddb_writes: DynamoWrites
) -> None:
    user_id, acct, conn = connected(stack)
    cal = acct["calendars"][0]["id"]
    teams = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Teams sync",
        start=at(0),
        end=at(1),
        online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3aabc%40thread.v2/0",
    )
    stack.graph.add_event(acct["id"], cal, subject="No link", start=at(2), end=at(3))
    stack.graph.add_event(
        acct["id"], cal, subject="Offsite", start=at(48)[:10], end=at(72)[:10], is_all_day=True
    )

    ddb_writes.reset()
    report = sync_user(user_id)
    assert report.partial_errors == {} and report.written == 3
    events = stored(user_id)
    assert len(events) == 3 and ddb_writes.items > 0
    t = events[teams["id"]]
    assert (t.meeting_platform, t.title, t.start_time) == ("teams", "Teams sync", SOON)
    assert t.meeting_url.startswith("https://teams.microsoft.com/l/meetup-join/")
    allday = next(e for e in events.values() if e.is_all_day)
    assert allday.start_time.hour == 0 and allday.end_time - allday.start_time == timedelta(days=1)
    state = store.get_sync_state(user_id, "outlook", conn.account_id, cal)
    assert state is not None and "deltatoken" in state.cursor.lower()

    ddb_writes.reset()
    stack.graph.clear_requests()
    again = sync_user(user_id)
    assert again.written == 0 and again.partial_errors == {}
    assert ddb_writes.calls == []  # not one write: not the events, not the cursor, not the connection
    delta_calls = [r for r in stack.graph.requests(account=acct["id"]) if "delta" in r["path"]]
    assert len(delta_calls) == 1 and "deltatoken" in delta_calls[0]["query"].lower()  # incremental

    # A change is picked up by the next incremental sync, and only it is written.
    stack.graph.update_event(teams["id"], start=at(5), end=at(6))
    ddb_writes.reset()
    assert sync_user(user_id).written == 1
    assert stored(user_id)[teams["id"]].start_time == SOON + timedelta(hours=5)
    # the claim of the next sync-state version, the moved event, the new cursor; not the connection
    # (`last_synced_at` is read from the sync states, not stamped on the connection's item)
    assert ddb_writes.items == 3 and ddb_writes.kind_units["CONN"] == 0


def test_a_connection_shows_when_its_last_sync_wrote_something(stack: LocalStack) -> None:
    from calbot.services.connections import connection_view, list_connections

    user_id, acct, conn = connected(stack)
    assert connection_view(conn).last_synced_at is None  # nothing synced yet
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    with virtual_time(first, sleep_advances=False):
        sync_user(user_id)
    assert connection_view(conn).last_synced_at == first
    # An unchanged re-sync writes nothing and leaves it; a change moves it.
    with virtual_time(first + timedelta(hours=1), sleep_advances=False):
        sync_user(user_id)
    assert connection_view(conn).last_synced_at == first
    stack.graph.add_event(acct["id"], acct["calendars"][0]["id"], subject="New", start=at(1), end=at(2))
    later = first + timedelta(hours=2)
    with virtual_time(later, sleep_advances=False):
        sync_user(user_id)
    (listed,) = list_connections(user_id).connections["outlook"]
    assert listed.last_synced_at == later == connection_view(conn).last_synced_at
    # A connection item written before (it carries its own stamp) shows the later of the two.
    store.save_connection(conn.model_copy(update={"last_synced_at": later + timedelta(minutes=5)}))
    (listed,) = list_connections(user_id).connections["outlook"]
    assert listed.last_synced_at == later + timedelta(minutes=5)


def test_series_masters_are_fetched_once_per_sync(stack: LocalStack) -> None:
    user_id, acct, _ = connected(stack)
    cal = acct["calendars"][0]["id"]
    day = SOON.date().isoformat()
    master = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Daily standup",
        start=f"{day}T09:00:00",
        end=f"{day}T09:15:00",
        time_zone="Pacific Standard Time",
        online_meeting_url="https://acme.zoom.us/j/123456789",
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": day, "numberOfOccurrences": 40},
        },
    )
    stack.graph.clear_requests()
    report = sync_user(user_id)
    assert report.written == 40
    master_gets = [r for r in stack.graph.requests(account=acct["id"]) if r["path"].endswith(master["id"])]
    assert len(master_gets) == 1
    events = list(stored(user_id).values())
    assert len(events) == 40 and all(
        e.meeting_platform == "zoom" and e.title == "Daily standup" for e in events
    )
    assert all(e.is_recurring and e.series_id == events[0].series_id for e in events)
    assert events[0].recurrence_rule and "FREQ=DAILY" in events[0].recurrence_rule
    # 09:00 Pacific every day: 17:00Z in winter; the local time never moves
    winter = [e for e in events if e.start_time.month in (12, 1, 2)]
    assert winter and all(e.start_time.hour == 17 for e in winter)


def test_moved_cancelled_and_series_edits(stack: LocalStack) -> None:
    user_id, acct, _ = connected(stack)
    cal = acct["calendars"][0]["id"]
    single = stack.graph.add_event(
        acct["id"],
        cal,
        subject="1:1",
        start=at(1),
        end=at(2),
        location="https://meet.google.com/abc-defg-hij",
    )
    gone = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Cancelled soon",
        start=at(3),
        end=at(4),
        location="https://acme.zoom.us/j/99",
    )
    day = SOON.date().isoformat()
    series = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Weekly",
        start=f"{day}T15:00:00",
        end=f"{day}T16:00:00",
        online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3aweekly%40thread.v2/0",
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [SOON.strftime("%A").lower()]},
            "range": {"type": "numbered", "startDate": day, "numberOfOccurrences": 4},
        },
    )
    sync_user(user_id)
    before = stored(user_id)
    occurrences = sorted(
        (e for e in before.values() if e.series_platform_id == series["id"]), key=lambda e: e.start_time
    )
    assert len(occurrences) == 4

    stack.graph.update_event(single["id"], start=at(30), end=at(31))
    stack.graph.cancel_event(gone["id"])
    stack.graph.update_event(
        occurrences[1].platform_id,
        start=(occurrences[1].start_time + timedelta(hours=2)).isoformat(),
        end=(occurrences[1].end_time + timedelta(hours=2)).isoformat(),
    )
    stack.graph.cancel_event(occurrences[2].platform_id)
    stack.graph.update_event(series["id"], subject="Weekly (renamed)")
    sync_user(user_id)
    after = stored(user_id)
    assert after[single["id"]].start_time == SOON + timedelta(hours=30)
    assert after[single["id"]].event_id == before[single["id"]].event_id  # our id is stable
    assert after[gone["id"]].is_deleted
    moved = after[occurrences[1].platform_id]
    assert moved.start_time == occurrences[1].start_time + timedelta(hours=2)
    assert moved.occurrence_start == occurrences[1].start_time  # the original slot, for dedup keys
    assert after[occurrences[2].platform_id].is_deleted
    assert {after[o.platform_id].title for o in occurrences if not after[o.platform_id].is_deleted} == {
        "Weekly (renamed)"
    }


def test_expired_delta_token_recovers_with_a_full_resync(stack: LocalStack) -> None:
    user_id, acct, conn = connected(stack)
    cal = acct["calendars"][0]["id"]
    keep = stack.graph.add_event(acct["id"], cal, subject="Keep", start=at(1), end=at(2))
    drop = stack.graph.add_event(acct["id"], cal, subject="Drop", start=at(3), end=at(4))
    sync_user(user_id)
    stack.graph.delete_event(drop["id"])
    assert stack.graph.expire_delta_tokens(acct["id"]) >= 1
    added = stack.graph.add_event(acct["id"], cal, subject="Added", start=at(5), end=at(6))
    stack.graph.clear_requests()
    report = sync_user(user_id)
    assert report.partial_errors == {} and report.accounts[0].full_syncs == 1
    statuses = [r["status"] for r in stack.graph.requests(account=acct["id"]) if "delta" in r["path"]]
    assert statuses[0] == 410 and statuses[-1] == 200
    events = stored(user_id)
    assert not events[keep["id"]].is_deleted and not events[added["id"]].is_deleted
    assert events[drop["id"]].is_deleted  # deleted while our token was dead: found by the full resync
    assert len([e for e in events.values() if not e.is_deleted]) == 2

    stack.graph.require_resync(acct["id"])  # 410 resyncRequired, once
    assert sync_user(user_id).partial_errors == {}
    assert len([e for e in stored(user_id).values() if not e.is_deleted]) == 2
    assert store.get_sync_state(user_id, "outlook", conn.account_id, cal) is not None


def test_one_failing_account_never_fails_the_others(stack: LocalStack) -> None:
    from calbot.services.connect import connect_account

    user_id, a, conn_a = connected(stack)
    b_mail = f"b{next(_n)}@contoso.example"
    b = stack.graph.add_account(client_id=CLIENT_ID, mail=b_mail, user_principal_name=b_mail)
    connect_account(
        user_id,
        CreateConnectionRequest(
            microsoft_client_id=CLIENT_ID,
            microsoft_client_secret=CLIENT_SECRET,
            microsoft_refresh_token=b["refresh_token"],
        ),
        base_url=stack.info["gateway_url"],
    )
    stack.graph.add_event(a["id"], a["calendars"][0]["id"], subject="A meeting", start=at(1), end=at(2))
    stack.graph.add_event(b["id"], b["calendars"][0]["id"], subject="B meeting", start=at(1), end=at(2))

    stack.graph.add_fault(path="calendarView/delta", account=b["id"], status=503, times=-1)
    try:
        report = sync_user(user_id)
    finally:
        stack.graph.clear_faults()
    key_b = f"outlook::{b_mail}"
    assert (
        list(report.partial_errors) == [key_b]
        and report.partial_errors[key_b]["error"] == "provider_unavailable"
    )
    assert [e.title for e in stored(user_id).values()] == ["A meeting"]
    assert store.get_connection(user_id, "outlook", b_mail).status == "active"  # a 503 is not an auth failure

    stack.graph.revoke(b["id"], code=50173)
    stack.graph.expire_access_tokens(b["id"])
    report = sync_user(user_id)
    assert report.partial_errors[key_b]["error"] == "needs_reauth"
    conn_b = store.get_connection(user_id, "outlook", b_mail)
    assert conn_b.status == "needs_reauth" and "AADSTS50173" in (conn_b.status_reason or "")
    assert store.get_connection(user_id, "outlook", conn_a.account_id).status == "active"
    # needs_reauth accounts are reported, not hammered
    stack.graph.clear_requests()
    assert sync_user(user_id).partial_errors[key_b]["error"] == "needs_reauth"
    assert stack.graph.requests(account=b["id"]) == []


def test_times_are_read_from_the_time_zone_field_whatever_graph_sends(stack: LocalStack) -> None:
    """Graph may answer in UTC or in the event's own (Windows-named) zone: the stored instant is the same."""
    user_id, acct, _ = connected(stack)
    cal = acct["calendars"][0]["id"]
    ev = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Berlin",
        start="2026-12-15T09:00:00",
        end="2026-12-15T10:00:00",
        time_zone="W. Europe Standard Time",
    )
    previous = stack.graph.default_response_timezone
    stack.graph.default_response_timezone = "original"
    try:
        sync_user(user_id)
    finally:
        stack.graph.default_response_timezone = previous
    event = stored(user_id)[ev["id"]]
    assert event.start_time == datetime(2026, 12, 15, 8, 0, tzinfo=UTC)
    assert event.timezone == "Europe/Berlin"


def test_a_refused_cached_access_token_is_refreshed_once(stack: LocalStack) -> None:
    user_id, acct, _ = connected(stack)
    stack.graph.add_event(acct["id"], acct["calendars"][0]["id"], subject="x", start=at(1), end=at(2))
    stack.graph.expire_access_tokens(acct["id"])  # our cached token is now refused with 401
    report = sync_user(user_id)
    assert report.partial_errors == {} and report.written == 1


def _change_record(
    message_id: str, conn: Connection, *, sent_at: datetime | None = None, receive_count: int = 1
) -> dict[str, Any]:
    """An SQS FIFO record of the sync queue as Lambda hands it over (group = the account)."""
    from calbot.models import ChangeMessage, account_key

    body = ChangeMessage(
        user_id=conn.user_id, provider=conn.provider, account_id=conn.account_id, sent_at=sent_at
    )
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body.model_dump_json(),
        "attributes": {
            "MessageGroupId": f"{conn.user_id}#{conn.provider}#{account_key(conn.account_id)}",
            "ApproximateReceiveCount": str(receive_count),
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sync.fifo",
        "awsRegion": "us-east-1",
    }


def test_one_failing_account_in_a_worker_batch_holds_back_only_its_own_messages(stack: LocalStack) -> None:
    from calbot.services.notifications import consume

    bad_user, bad, bad_conn = connected(stack)
    good_user, good, good_conn = connected(stack)
    stack.graph.add_event(good["id"], good["calendars"][0]["id"], subject="Good", start=at(1), end=at(2))
    stack.graph.add_event(bad["id"], bad["calendars"][0]["id"], subject="Bad", start=at(1), end=at(2))
    batch = [
        _change_record("bad-1", bad_conn),  # fails first: Graph is down for this account only
        _change_record("good-1", good_conn),
        _change_record("bad-2", bad_conn),  # same group as the failure: must wait behind it
        _change_record("good-2", good_conn),
    ]
    stack.graph.add_fault(path="calendarView/delta", account=bad["id"], status=503, times=-1)
    try:
        result = consume({"Records": batch})
    finally:
        stack.graph.clear_faults()
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == ["bad-1", "bad-2"]
    assert [e.title for e in stored(good_user).values()] == ["Good"]  # the other account went on
    assert stored(bad_user) == {}
    # Every message of a batch whose only group fails is reported (and nothing raises).
    stack.graph.add_fault(path="calendarView/delta", account=bad["id"], status=503, times=-1)
    try:
        alone = consume({"Records": [_change_record("bad-3", bad_conn), _change_record("bad-4", bad_conn)]})
    finally:
        stack.graph.clear_faults()
    assert [f["itemIdentifier"] for f in alone["batchItemFailures"]] == ["bad-3", "bad-4"]


def _cursor(user_id: str, conn: Connection, cal: str) -> str | None:
    state = store.get_sync_state(user_id, "outlook", conn.account_id, cal)
    return state.cursor if state else None


def test_a_sync_overtaken_after_reading_the_provider_never_moves_the_cursor_back_or_writes_older_events(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's GET /calendar/events sync reads Graph; the meeting changes; the queue worker's sync
    reads Graph and stores everything; then the user's sync goes on. It must neither store its older
    copy of the meeting nor put its older cursor back."""
    from calbot.providers import get_provider
    from calbot.services.sync import sync_connection

    user_id, acct, conn = connected(stack)
    cal = acct["calendars"][0]["id"]
    ev = stack.graph.add_event(acct["id"], cal, subject="v1", start=at(1), end=at(2))
    assert sync_user(user_id).written == 1
    stack.graph.update_event(ev["id"], subject="v2")
    provider = get_provider("outlook")
    real = provider.sync_calendar
    seen: dict[str, Any] = {}

    def user_sync_reads_then_worker_runs(*args: Any, **kwargs: Any) -> Any:
        changes = real(*args, **kwargs)
        if not seen:  # the user's sync has its answer (v2); now the meeting changes and the worker runs
            seen["user"] = [e.title for e in changes.upserts]
            stack.graph.update_event(ev["id"], subject="v3")
            worker = sync_connection(conn)
            seen["worker_cursor"] = _cursor(user_id, conn, cal)
            seen["worker"] = worker.written
        return changes

    monkeypatch.setattr(provider, "sync_calendar", user_sync_reads_then_worker_runs)
    report = sync_user(user_id)
    assert report.partial_errors == {}
    assert seen["user"] == ["v2"] and seen["worker"] == 1
    assert stored(user_id)[ev["id"]].title == "v3"  # the worker's newer copy stands
    assert _cursor(user_id, conn, cal) == seen["worker_cursor"]  # never moved back


def test_a_sync_overtaken_between_its_claim_and_its_writes_loses_to_the_later_sync(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first sync has claimed the state but not yet written its events when a second sync reads
    the provider (later: it sees a newer copy), writes and commits. The first sync's older events and
    cursor are refused."""
    from calbot.services.sync import sync_connection

    user_id, acct, conn = connected(stack)
    cal = acct["calendars"][0]["id"]
    ev = stack.graph.add_event(acct["id"], cal, subject="v1", start=at(1), end=at(2))
    assert sync_user(user_id).written == 1
    stack.graph.update_event(ev["id"], subject="v2")
    real = store.write_synced_events
    seen: dict[str, Any] = {}

    def slow_first_writer(events: list[Any], *, version: int) -> Any:
        if not seen:
            seen["first"] = ([e.title for e in events], version)
            stack.graph.update_event(ev["id"], subject="v3")
            seen["second"] = sync_connection(conn).written
            seen["cursor"] = _cursor(user_id, conn, cal)
        return real(events, version=version)

    monkeypatch.setattr(store, "write_synced_events", slow_first_writer)
    assert sync_user(user_id).partial_errors == {}
    assert seen["first"][0] == ["v2"] and seen["second"] == 1
    event = stored(user_id)[ev["id"]]
    assert event.title == "v3" and event.sync_version is not None and event.sync_version > seen["first"][1]
    assert _cursor(user_id, conn, cal) == seen["cursor"]
    state = store.get_sync_state(user_id, "outlook", conn.account_id, cal)
    assert state is not None and state.version == event.sync_version


def test_a_sync_never_turns_off_the_recurrence_flag_the_user_turned_on_meanwhile(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load a notification's sync reads the series before the user's schedule with
    recurring_event: true turns the flag on, and writes after: the flag must stay on."""
    from calbot.services import schedule

    user_id, acct, _ = connected(stack)
    cal = acct["calendars"][0]["id"]
    day = SOON.date().isoformat()
    series = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Weekly",
        start=f"{day}T15:00:00",
        end=f"{day}T16:00:00",
        online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3aflag%40thread.v2/0",
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [SOON.strftime("%A").lower()]},
            "range": {"type": "numbered", "startDate": day, "numberOfOccurrences": 3},
        },
    )
    sync_user(user_id)
    first = min(
        (e for e in stored(user_id).values() if e.series_platform_id == series["id"]),
        key=lambda e: e.start_time,
    )
    stack.graph.update_event(series["id"], subject="Weekly (renamed)")  # the sync will rewrite them all
    real = store.get_events
    done: list[bool] = []

    def user_turns_recurrence_on_after_the_sync_read(user: str, event_ids: Any) -> Any:
        found = real(user, event_ids)  # the sync has read the stored occurrences (flag off)
        if not done:
            done.append(True)
            schedule.toggle_recurrence(user_id, first.event_id, True)
        return found

    monkeypatch.setattr(store, "get_events", user_turns_recurrence_on_after_the_sync_read)
    assert sync_user(user_id).written == 3
    occurrences = [e for e in stored(user_id).values() if e.series_platform_id == series["id"]]
    assert {e.title for e in occurrences} == {"Weekly (renamed)"}
    assert all(e.recurring_enabled for e in occurrences)


def test_no_event_is_too_big_to_sync_or_to_store(stack: LocalStack) -> None:
    """A 1 MB invitation, a 3,000-person meeting and a series whose master is both sync like any
    other event, stored trimmed (with counts), every item far below DynamoDB's 400 KB."""
    from calbot import aws
    from tests.conftest import item_size

    user_id, acct, _ = connected(stack)
    cal = acct["calendars"][0]["id"]
    crowd = [f"person{i}@fabrikam.example" for i in range(3000)]
    huge_body = "<p>" + "agenda " * 150_000 + "</p> https://acme.zoom.us/j/111222333"
    huge = stack.graph.add_event(
        acct["id"], cal, subject="S" * 1_000_000, start=at(1), end=at(2), body_html=huge_body
    )
    big = stack.graph.add_event(
        acct["id"],
        cal,
        subject="All hands",
        start=at(3),
        end=at(4),
        attendees=crowd,
        online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3abig%40thread.v2/0",
    )
    day = SOON.date().isoformat()
    series = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Weekly all hands",
        start=f"{day}T18:00:00",
        end=f"{day}T19:00:00",
        body_html=huge_body,
        attendees=crowd,
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [SOON.strftime("%A").lower()]},
            "range": {"type": "numbered", "startDate": day, "numberOfOccurrences": 2},
        },
    )
    small = stack.graph.add_event(acct["id"], cal, subject="Small", start=at(5), end=at(6))
    stack.graph.clear_requests()

    report = sync_user(user_id)
    assert report.partial_errors == {} and report.written == 5
    events = stored(user_id)
    assert {huge["id"], big["id"], small["id"]} <= set(events)
    assert events[huge["id"]].meeting_platform == "zoom"  # found in the full body before trimming
    assert len(events[huge["id"]].title or "") <= 1_024
    assert events[big["id"]].raw["attendees_count"] == 3000 and len(events[big["id"]].raw["attendees"]) <= 25
    occurrences = [e for e in events.values() if e.series_platform_id == series["id"]]
    assert len(occurrences) == 2 and all(e.meeting_platform == "zoom" for e in occurrences)
    # Masters are read with $select. Their attendees are read for the auto-schedule rules, but only
    # their count and (capped) domains are kept: the list itself is never stored on the event.
    master_gets = [r for r in stack.graph.requests(account=acct["id"]) if r["path"].endswith(series["id"])]
    assert master_gets and all("%24select=" in r["query"] or "$select=" in r["query"] for r in master_gets)
    for e in [*occurrences, events[big["id"]]]:
        assert e.attendees_count == 3000  # the organizer and the crowd:
        assert e.attendee_domains == ["contoso.example", "fabrikam.example"]
    items = [
        aws.dynamodb().get_item(
            TableName=store._table(),
            Key=store.to_item({"PK": store.user_pk(user_id), "SK": f"EVENT#{e.event_id}"}),
        )["Item"]
        for e in events.values()
    ]
    assert max(item_size(i) for i in items) < 32 * 1024


# --------------------------------------------------------------------------------------------------
# needs_reauth means revoked, nothing else
# --------------------------------------------------------------------------------------------------


def _token_fault(stack: LocalStack, user_id: str, acct: dict[str, Any], **rule: Any) -> None:
    """The next refresh of this account meets `rule` at the token endpoint (its cached token is gone)."""
    from calbot import tokens

    tokens.forget_access_token(store.list_connections(user_id)[0])
    stack.graph.add_fault(path="oauth2/v2.0/token", account=acct["id"], times=-1, **rule)


@pytest.mark.parametrize(
    "rule",
    [
        {"status": 400, "error": "temporarily_unavailable"},
        {"status": 400, "error": "invalid_request", "aadsts": 90033},
        {"status": 400, "error": "invalid_grant", "aadsts": 90033},
        {"status": 500, "error": "server_error"},
        {"status": 401, "error": "unauthorized_client", "aadsts": 700016},
    ],
    ids=["400-temporarily_unavailable", "400-AADSTS90033", "invalid_grant-AADSTS90033", "500", "401-other"],
)
def test_token_endpoint_errors_other_than_invalid_grant_or_client_are_transient(
    stack: LocalStack, rule: dict[str, Any]
) -> None:
    user_id, acct, conn = connected(stack)
    _token_fault(stack, user_id, acct, **rule)
    try:
        report = sync_user(user_id)
    finally:
        stack.graph.clear_faults()
    key = f"outlook::{conn.account_id}"
    assert report.partial_errors[key]["error"] == "provider_unavailable"
    assert store.get_connection(user_id, "outlook", conn.account_id).status == "active"
    assert sync_user(user_id).partial_errors == {}  # and the next sync just works


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client"])
def test_invalid_grant_and_invalid_client_still_mark_needs_reauth(stack: LocalStack, error: str) -> None:
    user_id, acct, conn = connected(stack)
    _token_fault(stack, user_id, acct, error=error)
    try:
        report = sync_user(user_id)
    finally:
        stack.graph.clear_faults()
    assert report.partial_errors[f"outlook::{conn.account_id}"]["error"] == "needs_reauth"
    assert store.get_connection(user_id, "outlook", conn.account_id).status == "needs_reauth"


def test_a_401_right_after_a_good_refresh_is_not_needs_reauth(stack: LocalStack) -> None:
    user_id, acct, conn = connected(stack)
    stack.graph.add_event(acct["id"], acct["calendars"][0]["id"], subject="Later", start=at(1), end=at(2))
    # Graph refuses every token: the cached one (401 -> refresh once) and the fresh one too.
    stack.graph.add_fault(path="calendarView/delta", account=acct["id"], status=401, times=-1)
    try:
        report = sync_user(user_id)
    finally:
        stack.graph.clear_faults()
    key = f"outlook::{conn.account_id}"
    assert report.partial_errors[key]["error"] == "provider_unavailable"
    assert store.get_connection(user_id, "outlook", conn.account_id).status == "active"
    assert sync_user(user_id).partial_errors == {} and "Later" in [e.title for e in stored(user_id).values()]


def _mark(user_id: str, conn: Connection, reason: str, *, hours_ago: float) -> None:
    """Store the connection as needs_reauth, marked `hours_ago` (as a wrong mark would have left it)."""
    from calbot import aws
    from calbot.timeutil import iso_z, now

    store.set_connection_status(user_id, "outlook", conn.account_id, "needs_reauth", reason)
    aws.dynamodb().update_item(
        TableName=store._table(),
        Key=store.to_item({"PK": store.user_pk(user_id), "SK": store.conn_sk("outlook", conn.account_id)}),
        UpdateExpression="SET updated_at = :u",
        ExpressionAttributeValues=store.to_item({":u": iso_z(now() - timedelta(hours=hours_ago))}),
    )


def test_a_wrongly_marked_account_is_restored_by_the_next_good_refresh(stack: LocalStack) -> None:
    from calbot import tokens

    user_id, acct, conn = connected(stack)
    stack.graph.add_event(acct["id"], acct["calendars"][0]["id"], subject="Kept", start=at(1), end=at(2))
    _mark(user_id, conn, "Microsoft refused the token request (temporarily_unavailable).", hours_ago=0)
    tokens.forget_access_token(conn)
    # Just marked: reported, not hammered.
    stack.graph.clear_requests()
    assert sync_user(user_id).partial_errors[f"outlook::{conn.account_id}"]["error"] == "needs_reauth"
    assert stack.graph.requests(account=acct["id"]) == []
    # An hour on, a sync tries one refresh; it works, so the account is active again and syncs.
    _mark(user_id, conn, "Microsoft refused the token request (temporarily_unavailable).", hours_ago=2)
    report = sync_user(user_id)
    assert report.partial_errors == {}
    again = store.get_connection(user_id, "outlook", conn.account_id)
    assert again.status == "active" and again.status_reason is None
    assert "Kept" in [e.title for e in stored(user_id).values()]


def test_a_really_revoked_account_is_retried_hourly_and_stays_needs_reauth(stack: LocalStack) -> None:
    from calbot import tokens

    user_id, acct, conn = connected(stack)
    stack.graph.revoke(acct["id"], code=50173)
    tokens.forget_access_token(conn)
    _mark(user_id, conn, "stale", hours_ago=2)
    stack.graph.clear_requests()
    assert sync_user(user_id).partial_errors[f"outlook::{conn.account_id}"]["error"] == "needs_reauth"
    assert len(stack.graph.requests(account=acct["id"])) == 1  # one refresh, refused
    marked = store.get_connection(user_id, "outlook", conn.account_id)
    assert marked.status == "needs_reauth" and "AADSTS50173" in (marked.status_reason or "")
    stack.graph.clear_requests()
    sync_user(user_id)  # marked again just now: not retried for another hour
    assert stack.graph.requests(account=acct["id"]) == []


def test_calendar_lists_refresh_once_on_a_401_and_a_second_401_is_not_needs_reauth(stack: LocalStack) -> None:
    from calbot.models import ScopeQuery
    from calbot.services.calendars import list_calendars

    user_id, acct, conn = connected(stack)
    key = f"outlook::{conn.account_id}"
    # A 401 on the cached token: refreshed once, and the list comes back.
    stack.graph.add_fault(path="/me/calendars$", account=acct["id"], status=401, times=1)
    try:
        listed = list_calendars(user_id, ScopeQuery())
    finally:
        stack.graph.clear_faults()
    assert listed.partial_errors == {} and len(listed.calendars) == 1
    # Refused again right after a good refresh: reported as transient, the account stays active.
    stack.graph.add_fault(path="/me/calendars$", account=acct["id"], status=401, times=-1)
    try:
        listed = list_calendars(user_id, ScopeQuery())
    finally:
        stack.graph.clear_faults()
    assert listed.partial_errors[key]["error"] == "provider_unavailable"
    assert store.get_connection(user_id, "outlook", conn.account_id).status == "active"


def test_a_retry_after_past_the_deadline_ends_the_account_at_once_and_the_worker_finishes_it(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calbot.deadline import Deadline
    from calbot.models import EventsQuery
    from calbot.services import notifications
    from calbot.services.events import AFTER_SYNC_SECONDS, list_events

    user_id, acct, conn = connected(stack)
    stack.graph.add_event(acct["id"], acct["calendars"][0]["id"], subject="Later", start=at(3), end=at(4))
    deferred: list[Any] = []
    enqueue_many = notifications.enqueue_many

    def spy(messages: list[tuple[Any, str]]) -> list[bool]:  # deferrals go ten a SendMessageBatch
        deferred.extend(message for message, _ in messages)
        return enqueue_many(messages)

    monkeypatch.setattr(notifications, "enqueue_many", spy)
    stack.graph.clear_requests()
    # Graph asks for 3 s; the sync has 2 s left. Waiting would run past the deadline (Lambda
    # would kill the function mid-sync): the account ends now, with what is stored, and is deferred.
    stack.graph.add_fault(path="calendarView/delta", account=acct["id"], status=429, retry_after=3, times=1)
    try:
        page = list_events(
            user_id,
            EventsQuery(),
            raw_params={},
            sync=True,
            # the request keeps AFTER_SYNC_SECONDS for deferral and the read: the sync itself has 2 s
            # (enough to start an account, less than the 3 s Graph asks to wait)
            deadline=Deadline.after(AFTER_SYNC_SECONDS + 2),
        ).page
    finally:
        stack.graph.clear_faults()
    error = page.partial_errors[f"outlook::{conn.account_id}"]
    assert error["error"] == "provider_unavailable"
    assert "retry after 3 s" in error["message"] and "in the background" in error["message"]
    delta = [r for r in stack.graph.requests(account=acct["id"]) if "delta" in r["path"]]
    assert delta[0]["status"] == 429
    assert [(m.user_id, m.account_id, m.kind) for m in deferred] == [(user_id, conn.account_id, "sync")]
    # The sync worker picks the account up from the queue and finishes it.
    for _ in range(300):  # up to 30 s: a loaded machine's worker may be slow to poll
        if "Later" in [e.title for e in stored(user_id).values()]:
            break
        threading.Event().wait(0.1)
    assert "Later" in [e.title for e in stored(user_id).values()]


def _counting_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The accounts the sync worker syncs from now on (each a provider sync), in order."""
    from calbot.services import sync

    synced: list[str] = []
    real = sync.sync_connection

    def counted(conn: Connection, **kwargs: Any) -> Any:
        synced.append(conn.account_id)
        return real(conn, **kwargs)

    monkeypatch.setattr(sync, "sync_connection", counted)
    return synced


def test_two_notifications_queued_together_make_one_sync(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calbot.services.notifications import consume
    from calbot.timeutil import now

    user_id, acct, conn = connected(stack)
    cal = acct["calendars"][0]["id"]
    first = stack.graph.add_event(acct["id"], cal, subject="One", start=at(1), end=at(2))
    second = stack.graph.add_event(acct["id"], cal, subject="Two", start=at(3), end=at(4))
    synced = _counting_syncs(monkeypatch)
    queued = now() - timedelta(seconds=5)  # both notifications waited in the queue behind a burst
    result = consume(
        {
            "Records": [
                _change_record("n-1", conn, sent_at=queued),
                _change_record("n-2", conn, sent_at=queued + timedelta(milliseconds=300)),
            ]
        }
    )
    assert result["batchItemFailures"] == []
    assert synced == [conn.account_id]  # the first one's sync read both changes
    assert {first["id"], second["id"]} <= set(stored(user_id))


def test_a_change_after_a_sync_started_still_syncs(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calbot.services.notifications import consume
    from calbot.timeutil import now

    user_id, acct, conn = connected(stack)
    cal = acct["calendars"][0]["id"]
    stack.graph.add_event(acct["id"], cal, subject="Before", start=at(1), end=at(2))
    synced = _counting_syncs(monkeypatch)
    assert consume({"Records": [_change_record("c-1", conn, sent_at=now() - timedelta(seconds=5))]}) == {
        "batchItemFailures": []
    }
    # Changed after that sync started: its notification is queued later, and must sync again.
    later = stack.graph.add_event(acct["id"], cal, subject="After", start=at(3), end=at(4))
    assert consume({"Records": [_change_record("c-2", conn, sent_at=now())]}) == {"batchItemFailures": []}
    assert later["id"] in stored(user_id)
    # Queued just before that sync started (within the clocks' margin): not counted as covered.
    stack.graph.update_event(later["id"], subject="After, renamed")
    state = store.get_sync_state(conn.user_id, conn.provider, conn.account_id, cal)
    assert state is not None and state.updated_at is not None
    just_before = state.updated_at - timedelta(milliseconds=500)
    assert consume({"Records": [_change_record("c-3", conn, sent_at=just_before)]}) == {
        "batchItemFailures": []
    }
    assert stored(user_id)[later["id"]].title == "After, renamed"
    # A redelivered message always syncs (its own failed attempt may have written the state).
    old = now() - timedelta(minutes=5)
    consume({"Records": [_change_record("c-4", conn, sent_at=old, receive_count=2)]})
    # An old message delivered for the first time is covered: no provider sync.
    consume({"Records": [_change_record("c-5", conn, sent_at=old)]})
    # And a message without a queue time (queued before this version) syncs as before.
    consume({"Records": [_change_record("c-6", conn)]})
    assert synced == [conn.account_id] * 5


def test_a_message_that_syncs_reads_each_sync_state_once(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's coalescing check reads the account's sync states; the sync that follows uses
    those, not a second read of each (one DynamoDB read per calendar per notification saved)."""
    from calbot.services.notifications import consume
    from calbot.timeutil import now

    user_id, acct, conn = connected(stack)
    cal = acct["calendars"][0]["id"]
    consume({"Records": [_change_record("r-1", conn, sent_at=now() - timedelta(seconds=5))]})  # a state
    made = stack.graph.add_event(acct["id"], cal, subject="Read once", start=at(1), end=at(2))
    reads: Counter[str] = Counter()
    real = store.get_sync_state

    def counted(user: str, provider: str, account_id: str, calendar_id: str) -> Any:
        reads[calendar_id] += 1
        return real(user, provider, account_id, calendar_id)

    monkeypatch.setattr(store, "get_sync_state", counted)
    assert consume({"Records": [_change_record("r-2", conn, sent_at=now())]}) == {"batchItemFailures": []}
    assert made["id"] in stored(user_id)  # it synced (not covered), and wrote the new event
    assert conn.calendars and reads == Counter({c.id: 1 for c in conn.calendars})
    # A covered message reads them once too, and syncs nothing.
    reads.clear()
    consume({"Records": [_change_record("r-3", conn, sent_at=now() - timedelta(minutes=5))]})
    assert reads == Counter({c.id: 1 for c in conn.calendars})


def test_a_sync_handed_a_stale_state_reads_it_again(stack: LocalStack) -> None:
    """A state handed to sync_connection that another sync has moved on since: the claim fails on its
    version, and the sync starts again from a fresh read, never from the stale cursor's view."""
    from calbot.services.sync import sync_connection

    user_id, acct, conn = connected(stack)
    cal = acct["calendars"][0]["id"]
    assert sync_connection(conn).error is None
    stale = store.get_sync_state(conn.user_id, conn.provider, conn.account_id, cal)
    stack.graph.add_event(acct["id"], cal, subject="Seen by the other sync", start=at(1), end=at(2))
    assert sync_connection(conn).written == 1  # another sync: the state moves on
    later = stack.graph.add_event(acct["id"], cal, subject="Seen by this one", start=at(3), end=at(4))
    result = sync_connection(conn, states={cal: stale})
    assert result.error is None and later["id"] in stored(user_id)
    fresh = store.get_sync_state(conn.user_id, conn.provider, conn.account_id, cal)
    assert stale is not None and fresh is not None and fresh.version > stale.version + 1


def test_a_page_of_events_is_read_eventually_unless_its_request_synced_a_change(stack: LocalStack) -> None:
    # An eventually consistent read is half the read units; the page's index entries are eventually
    # consistent anyway. A request whose sync wrote events reads them consistently: it shows them.
    from calbot.models import EventsQuery
    from calbot.services.events import list_events

    user_id, acct, _ = connected(stack)
    stack.graph.add_event(acct["id"], acct["calendars"][0]["id"], subject="One", start=at(1), end=at(2))
    with batch_get_consistency() as seen:
        synced = list_events(user_id, EventsQuery(), raw_params={}, sync=True).page
        assert [e.title for e in synced.results] == ["One"] and seen == [True]
        seen.clear()
        unchanged = list_events(user_id, EventsQuery(), raw_params={}, sync=True).page  # nothing new
        stored_only = list_events(user_id, EventsQuery(), raw_params={}, sync=False).page
        assert unchanged.results == stored_only.results == synced.results and seen == [False, False]
