"""services.sync against moto and the Graph emulator: delta links, masters once, no-op re-syncs,
moves and cancellations, expired tokens, and one failing account never failing the others."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import store
from calbot.models import Connection, CreateConnectionRequest
from calbot.services.sync import sync_user
from local.stack import LocalStack
from tests.conftest import DynamoWrites, connect_new_account

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
    assert ddb_writes.items == 3  # the moved event, the new cursor, the connection's last_synced_at


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
