"""services.disconnect against the in-process stack: one account torn down, the others untouched, and
a disconnect cut off halfway finished by a retry into the same state as an uninterrupted one."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from calbot import aws, scheduler, store, tokencache, tokens, vault
from calbot.errors import DomainError
from calbot.http import error_body, status_of
from calbot.models import (
    ChangeMessage,
    ConnectionView,
    EnableAutoScheduleRequest,
    LegacyDisconnectRequest,
    ScheduleRequest,
)
from calbot.services import auto_schedule, disconnect, launcher, notifications
from calbot.services import schedule as sched
from calbot.services.sync import sync_user
from local.stack import LocalStack
from tests.conftest import connect_new_account, secret_items

# Every test runs once with each credential backend (ssm, dynamodb).
pytestmark = pytest.mark.usefixtures("credential_backend")

CLIENT_ID = "disc-client"
CLIENT_SECRET = "disc-client-secret-71"
SOON = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
_n = itertools.count()


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> LocalStack:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    return inproc_stack


def account(stack: LocalStack, user_id: str | None = None, meetings: int = 3) -> tuple[str, dict[str, Any]]:
    """One more connected account with `meetings` Teams meetings, synced, each with a scheduled bot."""
    user_id, acct = connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, user_id=user_id, prefix="disc")
    for i in range(meetings):
        stack.graph.add_event(
            acct["id"],
            acct["calendars"][0]["id"],
            subject=f"Meeting {i}",
            start=(SOON + timedelta(hours=i)).isoformat(),
            end=(SOON + timedelta(hours=i, minutes=30)).isoformat(),
            online_meeting_url=f"https://teams.microsoft.com/l/meetup-join/19%3a{acct['id']}-{i}%40thread.v2/0",
        )
    assert sync_user(user_id, provider="outlook", account_id=acct["mail"]).partial_errors == {}
    for event in account_events(user_id, acct["mail"]):
        sched.schedule_event(user_id, event.event_id, ScheduleRequest())
    return user_id, acct


def account_events(user_id: str, mail: str) -> list[Any]:
    return store.query_events(
        user_id,
        time_min=SOON - timedelta(days=40),
        time_max=SOON + timedelta(days=400),
        limit=10_000,
        provider="outlook",
        account_id=mail,
    )


def bots_of(user_id: str, mail: str) -> list[Any]:
    return list(store.account_bots(user_id, "outlook", mail))


def ran_recurring_bot(user_id: str, mail: str) -> str:
    """Turn one of the account's bots into one that already ran, recurring, with its end-of-meeting
    schedule pending (what the launcher leaves behind)."""
    bot = bots_of(user_id, mail)[0]
    scheduler.delete(scheduler.launch_schedule_name(bot.bot_id))
    ran = bot.model_copy(update={"status": "Launched", "recurring_event": True, "remote_bot_id": "rb_1"})
    store.save_bot(ran, expect_status="Scheduled")
    scheduler.put_reschedule(ran, ran.meeting_end)
    return bot.bot_id


def snapshot(stack: LocalStack, user_id: str, acct: dict[str, Any]) -> dict[str, Any]:
    """Everything that belongs to one account, as stored (events and bots whole, schedules whole)."""
    mail = acct["mail"]
    conn = store.get_connection(user_id, "outlook", mail)
    bots = sorted((b.model_dump(mode="json") for b in bots_of(user_id, mail)), key=lambda b: b["bot_id"])
    schedules = {}
    for bot in bots:
        for name in (
            scheduler.launch_schedule_name(bot["bot_id"]),
            scheduler.reschedule_schedule_name(bot["bot_id"]),
        ):
            found = scheduler.get(name)
            if found:
                schedules[name] = {k: v for k, v in found.items() if k != "ResponseMetadata"}
    return {
        "connection": conn.model_dump(mode="json") if conn else None,
        "events": sorted(
            (e.model_dump(mode="json") for e in account_events(user_id, mail)), key=lambda e: e["event_id"]
        ),
        "bots": bots,
        "schedules": schedules,
        "subscription_items": sorted(
            (
                s.model_dump(mode="json")
                for r in (conn.subscriptions if conn else [])
                if (s := store.get_subscription(r.id))
            ),
            key=lambda s: s["id"],
        ),
        "emulator_subscriptions": sorted(
            s["id"] for s in stack.graph.subscriptions() if s["account_id"] == acct["id"]
        ),
        "credentials": vault.get(conn.credential_path) is not None if conn else None,
        "sync_states": [
            store.get_sync_state(user_id, "outlook", mail, c.id) is not None
            for c in (conn.calendars if conn else [])
        ],
    }


def outcome(
    stack: LocalStack, user_id: str, acct: dict[str, Any], sub_ids: list[str], cred_path: str
) -> dict[str, Any]:
    """What is left of a disconnected account, in terms that do not depend on ids or timing."""
    mail = acct["mail"]
    bots = bots_of(user_id, mail)
    return {
        "connection": store.get_connection(user_id, "outlook", mail),
        "events": len(account_events(user_id, mail)),
        "bots": sorted((b.occurrence_start, b.status, b.reason) for b in bots),
        "schedules": [
            n
            for b in bots
            for n in (scheduler.launch_schedule_name(b.bot_id), scheduler.reschedule_schedule_name(b.bot_id))
            if scheduler.get(n)
        ],
        "subscription_items": [i for i in sub_ids if store.get_subscription(i)],
        "emulator_subscriptions": [
            s["id"] for s in stack.graph.subscriptions() if s["account_id"] == acct["id"]
        ],
        "credentials": vault.get(cred_path),
        # the dynamodb backend's CRED# item and the shared TOKEN# cache item (either backend)
        "credential_items": [
            sk for sk in secret_items(user_id) if sk.endswith(tokencache.owner_and_rest(cred_path)[1])
        ],
        "sync_states": list(
            aws.dynamodb().query(
                TableName=store._table(),
                KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
                ExpressionAttributeValues=store.to_item(
                    {":pk": store.user_pk(user_id), ":sk": f"SYNC#outlook#{mail.lower()}#"}
                ),
            )["Items"]
        ),
        "connection_count": store.count_connections(user_id),
    }


def test_disconnect_one_account_leaves_the_others_byte_for_byte(
    stack: LocalStack, credential_backend: str
) -> None:
    user_id, gone = account(stack)
    _, kept_a = account(stack, user_id)
    _, kept_b = account(stack, user_id)
    ran = ran_recurring_bot(user_id, gone["mail"])
    conn = store.get_connection(user_id, "outlook", gone["mail"])
    assert conn is not None and len(conn.subscriptions) == 1
    mine = tokencache.owner_and_rest(conn.credential_path)[1]
    stored = [sk.split("#", 1)[0] for sk in secret_items(user_id) if sk.endswith(mine)]
    assert stored == (["CRED", "TOKEN"] if credential_backend == "dynamodb" else ["TOKEN"])
    before = [snapshot(stack, user_id, a) for a in (kept_a, kept_b)]
    assert all(
        len(s["bots"]) == 3 and len(s["schedules"]) == 3 and s["emulator_subscriptions"] for s in before
    )

    result = disconnect.disconnect(
        user_id, "outlook", gone["mail"].upper()
    )  # account ids compare case-insensitively

    assert result.disconnected.account_id == gone["mail"]
    assert (result.events_deleted, result.bots_cancelled, result.subscriptions_stopped) == (3, 2, 1)
    assert result.warnings == []
    left = outcome(stack, user_id, gone, [r.id for r in conn.subscriptions], conn.credential_path)
    assert left["connection"] is None and left["events"] == 0 and left["connection_count"] == 2
    statuses = sorted((status, reason) for _, status, reason in left["bots"])
    assert statuses == [("Cancelled", "calendar_disconnected")] * 2 + [("Launched", None)]
    assert left["schedules"] == []  # launch schedules and the ran bot's end-of-meeting schedule
    assert store.get_bot(user_id, ran).remote_bot_id == "rb_1"  # the bot that ran is untouched
    assert left["subscription_items"] == left["emulator_subscriptions"] == []
    assert left["credentials"] is None and left["credential_items"] == [] and left["sync_states"] == []
    assert [snapshot(stack, user_id, a) for a in (kept_a, kept_b)] == before

    with pytest.raises(DomainError) as err:
        disconnect.disconnect(user_id, "outlook", gone["mail"])
    assert (status_of(err.value), err.value.code) == (404, "connection_not_found")
    assert [snapshot(stack, user_id, a) for a in (kept_a, kept_b)] == before


def test_purge_events_false_keeps_the_events_and_they_get_no_new_bots(stack: LocalStack) -> None:
    user_id, acct = account(stack)
    auto_schedule.enable(user_id, EnableAutoScheduleRequest())
    events = account_events(user_id, acct["mail"])
    result = disconnect.disconnect(user_id, "outlook", acct["mail"], purge_events=False)
    assert result.events_deleted == 0 and result.bots_cancelled == 3
    assert [e.event_id for e in account_events(user_id, acct["mail"])] == [e.event_id for e in events]
    with pytest.raises(DomainError) as err:
        sched.schedule_event(user_id, events[0].event_id, ScheduleRequest())
    assert (status_of(err.value), err.value.code) == (400, "calendar_disconnected")
    run = auto_schedule.run_for_user(user_id)
    assert run is not None and run.scheduled == 0
    assert all(b.status == "Cancelled" for b in bots_of(user_id, acct["mail"]))


def crash_after(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, calls: int) -> None:
    """Make module.name raise on its (calls+1)-th call: the invocation is cut off there."""
    real = getattr(module, name)
    count = itertools.count()

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if next(count) >= calls:
            raise RuntimeError("invocation cut off")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)


def test_a_disconnect_cut_off_twice_and_retried_ends_like_an_uninterrupted_one(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disconnect, "BATCH", 4)  # 12 bots and events: three batches each
    twin_user, twin = account(stack, meetings=12)
    user_id, acct = account(stack, meetings=12)
    twin_conn = store.get_connection(twin_user, "outlook", twin["mail"])
    conn = store.get_connection(user_id, "outlook", acct["mail"])
    assert twin_conn and conn
    expected = disconnect.disconnect(twin_user, "outlook", twin["mail"])

    # Cut off in the middle of the bots: two bots done (four schedule deletions), the third's first
    # deletion fails (with the status written first, that bot would keep its schedule for good)...
    with monkeypatch.context() as patch:
        crash_after(patch, scheduler, "delete", 4)
        with pytest.raises(RuntimeError):
            disconnect.disconnect(user_id, "outlook", acct["mail"])
    half = store.get_connection(user_id, "outlook", acct["mail"])
    assert half is not None and half.disconnect is not None and half.subscriptions == []
    view = ConnectionView.of(half)
    assert view.status == "error" and view.status_reason.startswith("disconnect_in_progress")
    statuses = [b.status for b in bots_of(user_id, acct["mail"])]
    assert statuses.count("Cancelled") == 2 and statuses.count("Scheduled") == 10
    # ...meanwhile the account is out of service: no sync, no notification work, no launch, no connect.
    assert [a.account_id for a in sync_user(user_id).accounts] == []
    waiting = next(b for b in bots_of(user_id, acct["mail"]) if b.status == "Scheduled")
    assert launcher.launch(user_id, waiting.bot_id) == {
        "bot_id": waiting.bot_id,
        "skipped": "calendar_disconnected",
    }
    assert store.get_bot(user_id, waiting.bot_id).reason == "calendar_disconnected"
    message = ChangeMessage(user_id=user_id, provider="outlook", account_id=acct["mail"])
    record = {"messageId": "m1", "body": message.model_dump_json()}
    assert notifications.consume({"Records": [record]}) == {"batchItemFailures": []}

    # ...then cut off again in the middle of the event purge.
    with monkeypatch.context() as patch:
        crash_after(patch, store, "delete_keys", 1)
        with pytest.raises(RuntimeError):
            disconnect.disconnect(user_id, "outlook", acct["mail"])
    assert len(account_events(user_id, acct["mail"])) == 8

    result = disconnect.disconnect(
        user_id, "outlook", acct["mail"], purge_events=False
    )  # first choice stands
    assert result.model_dump(exclude={"disconnected"}) == expected.model_dump(exclude={"disconnected"})
    assert (result.bots_cancelled, result.events_deleted) == (12, 12)
    mine = outcome(stack, user_id, acct, [r.id for r in conn.subscriptions], conn.credential_path)
    theirs = outcome(
        stack, twin_user, twin, [r.id for r in twin_conn.subscriptions], twin_conn.credential_path
    )
    assert mine == theirs
    assert mine["connection"] is None and mine["events"] == 0 and mine["schedules"] == []
    assert {(s, r) for _, s, r in mine["bots"]} == {("Cancelled", "calendar_disconnected")}


def test_a_large_account_is_finished_over_several_calls(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disconnect, "BATCH", 3)
    monkeypatch.setattr(disconnect, "TIME_BUDGET_SECONDS", 0.0)  # every call stops after one batch of work
    user_id, acct = account(stack, meetings=7)
    calls = 0
    while True:
        calls += 1
        assert calls < 20, "the disconnect never finished"
        try:
            result = disconnect.disconnect(user_id, "outlook", acct["mail"])
            break
        except DomainError as err:
            assert (status_of(err), err.code) == (503, "service_unavailable")
    assert calls > 3
    assert (result.bots_cancelled, result.events_deleted, result.subscriptions_stopped) == (7, 7, 1)
    assert store.get_connection(user_id, "outlook", acct["mail"]) is None
    assert all(b.status == "Cancelled" for b in bots_of(user_id, acct["mail"]))


def test_a_disconnect_stops_taking_batches_when_its_invocation_runs_short(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calbot.deadline import Deadline

    class Context:  # Lambda's context with 6 s left: less than a batch needs after the reserve
        def get_remaining_time_in_millis(self) -> int:
            return 6000

    monkeypatch.setattr(disconnect, "BATCH", 3)  # TIME_BUDGET_SECONDS stays 20 s: the deadline decides
    user_id, acct = account(stack, meetings=7)
    calls = 0
    while True:
        calls += 1
        assert calls < 20, "the disconnect never finished"
        try:
            result = disconnect.disconnect(
                user_id, "outlook", acct["mail"], deadline=Deadline.from_context(Context())
            )
            break
        except DomainError as err:
            assert (status_of(err), err.code) == (503, "service_unavailable")
    assert calls > 3  # one batch per call, never one started without the time to finish it
    assert (result.bots_cancelled, result.events_deleted, result.subscriptions_stopped) == (7, 7, 1)
    assert store.get_connection(user_id, "outlook", acct["mail"]) is None


def test_a_provider_error_is_a_warning_never_a_half_disconnected_account(stack: LocalStack) -> None:
    user_id, acct = account(stack, meetings=1)
    conn = store.get_connection(user_id, "outlook", acct["mail"])
    assert conn is not None
    stack.graph.add_fault(
        path=r"^/v1\.0/subscriptions/", method="DELETE", account=acct["id"], status=503, times=-1
    )
    try:
        result = disconnect.disconnect(user_id, "outlook", acct["mail"])
    finally:
        stack.graph.clear_faults()
    assert result.subscriptions_stopped == 0 and result.bots_cancelled == 1
    assert [w["error"] for w in result.warnings] == ["subscriptions_not_stopped"]
    assert "503" in result.warnings[0]["message"]
    assert store.get_connection(user_id, "outlook", acct["mail"]) is None
    assert store.get_subscription(conn.subscriptions[0].id) is None  # what still arrives is dropped
    assert vault.get(conn.credential_path) is None


def test_dead_credentials_do_not_block_the_disconnect(stack: LocalStack) -> None:
    user_id, acct = account(stack, meetings=1)
    conn = store.get_connection(user_id, "outlook", acct["mail"])
    assert conn is not None
    stack.graph.revoke(acct["id"], code=70008)
    tokens.forget_access_token(conn)
    result = disconnect.disconnect(user_id, "outlook", acct["mail"])
    assert result.subscriptions_stopped == 0 and result.bots_cancelled == 1
    assert result.warnings and result.warnings[0]["error"] == "subscriptions_not_stopped"
    assert store.get_connection(user_id, "outlook", acct["mail"]) is None


def test_reconnecting_afterwards_starts_clean(stack: LocalStack) -> None:
    from calbot.models import CreateConnectionRequest
    from calbot.services.connect import connect_account

    user_id, acct = account(stack, meetings=2)
    old_bots = {b.bot_id for b in bots_of(user_id, acct["mail"])}
    disconnect.disconnect(user_id, "outlook", acct["mail"], purge_events=False)
    token = stack.graph.issue_refresh_token(acct["id"], CLIENT_ID)
    status, created = connect_account(
        user_id,
        CreateConnectionRequest(
            microsoft_client_id=CLIENT_ID,
            microsoft_client_secret=CLIENT_SECRET,
            microsoft_refresh_token=token,
        ),
        base_url=stack.info["gateway_url"],
    )
    assert status == 201 and created.status == "active" and created.watch_setup.subscriptions == 1
    assert store.count_connections(user_id) == 1
    report = sync_user(user_id)
    assert report.partial_errors == {} and report.accounts[0].full_syncs == 1  # no stale delta link
    events = account_events(user_id, acct["mail"])
    assert len(events) == 2
    made = sched.schedule_event(user_id, events[0].event_id, ScheduleRequest())
    assert made.bot_id not in old_bots and scheduler.get(scheduler.launch_schedule_name(made.bot_id))


def test_legacy_endpoint_refuses_to_guess(stack: LocalStack) -> None:
    user_id, first = account(stack, meetings=0)
    _, second = account(stack, user_id, meetings=0)
    with pytest.raises(DomainError) as err:
        disconnect.legacy_disconnect(user_id, LegacyDisconnectRequest())
    body = error_body(err.value)
    assert (status_of(err.value), body["error"], body["connection_count"]) == (400, "ambiguous_disconnect", 2)
    assert sorted(c["account_id"] for c in body["connections"]) == sorted([first["mail"], second["mail"]])
    assert body["next_steps"]["per_account_example"].startswith(
        "DELETE /api/v1/calendar/connections/outlook/"
    )
    assert body["next_steps"]["legacy_body"]["provider"] == "outlook"
    assert store.count_connections(user_id) == 2

    named = disconnect.legacy_disconnect(
        user_id, LegacyDisconnectRequest(provider="microsoft", account_id=second["mail"])
    )
    assert named.disconnected.account_id == second["mail"]
    only = disconnect.legacy_disconnect(user_id, LegacyDisconnectRequest(provider="outlook"))
    assert only.disconnected.account_id == first["mail"]
    with pytest.raises(DomainError) as err:
        disconnect.legacy_disconnect(user_id, LegacyDisconnectRequest())
    assert (status_of(err.value), err.value.code) == (404, "connection_not_found")
    with pytest.raises(ValidationError):
        LegacyDisconnectRequest(account_id=first["mail"])  # account_id needs provider


def test_a_connection_being_disconnected_cannot_be_connected_over(stack: LocalStack) -> None:
    from calbot.models import CreateConnectionRequest, DisconnectState
    from calbot.services.connect import connect_account
    from calbot.timeutil import now

    user_id, acct = account(stack, meetings=0)
    store.mark_disconnecting(user_id, "outlook", acct["mail"], DisconnectState(started_at=now()))
    token = stack.graph.issue_refresh_token(acct["id"], CLIENT_ID)
    with pytest.raises(DomainError) as err:
        connect_account(
            user_id,
            CreateConnectionRequest(
                microsoft_client_id=CLIENT_ID,
                microsoft_client_secret=CLIENT_SECRET,
                microsoft_refresh_token=token,
                replace=True,
            ),
            base_url=stack.info["gateway_url"],
        )
    assert (status_of(err.value), err.value.code) == (409, "disconnect_in_progress")
    with pytest.raises(KeyError):  # a copy read before the mark never wipes it
        store.save_connection(
            store.get_connection(user_id, "outlook", acct["mail"]).model_copy(update={"disconnect": None})
        )
    assert disconnect.disconnect(user_id, "outlook", acct["mail"]).disconnected.account_id == acct["mail"]


def test_a_google_account_is_disconnected_the_same_way_its_channels_stopped_by_resource_id(
    stack: LocalStack,
) -> None:
    from calbot.admin import create_user
    from calbot.models import CreateConnectionRequest
    from calbot.services.connect import connect_account

    client_id, secret = "disc-google.apps.googleusercontent.com", "GOCSPX-disc-google-secret"
    stack.google.add_app(client_id, secret)
    mail = f"disc{next(_n)}@gmail.example"
    acc = stack.google.add_account(mail, client_id=client_id)
    user_id = create_user(mail).user_id
    _, outlook = account(stack, user_id, meetings=1)
    status, created = connect_account(
        user_id,
        CreateConnectionRequest(
            google_client_id=client_id, google_client_secret=secret, google_refresh_token=acc["refresh_token"]
        ),
        base_url=stack.info["gateway_url"],
    )
    assert status == 201 and created.provider == "google" and created.watch_setup.subscriptions >= 1
    conn = store.get_connection(user_id, "google", mail)
    assert conn is not None and all(r.handle["resource_id"] for r in conn.subscriptions)
    outlook_before = snapshot(stack, user_id, outlook)

    result = disconnect.disconnect(user_id, "google", mail)

    assert result.warnings == [] and result.subscriptions_stopped == len(conn.subscriptions)
    channels = {c["id"]: c for c in stack.google.channels()}
    assert all(channels[r.id]["stopped"] for r in conn.subscriptions)  # stopped at Google, not just forgotten
    assert store.get_connection(user_id, "google", mail) is None and vault.get(conn.credential_path) is None
    assert all(store.get_subscription(r.id) is None for r in conn.subscriptions)
    assert store.count_connections(user_id) == 1
    assert snapshot(stack, user_id, outlook) == outlook_before
