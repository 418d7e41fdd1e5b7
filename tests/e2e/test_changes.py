"""5/8 end to end: real-time changes. The Graph emulator sends real change notifications to each
account's webhook URL; the webhook checks them and enqueues per account; the sync worker syncs that
account and its bots follow: moved, moved into the past, cancelled, series rule changed. No manual sync."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from calbot.scheduler import lead
from tests.e2e.conftest import E2EStack

CLIENT_ID = "changes-e2e-client"
CLIENT_SECRET = "changes-e2e-secret-0a9f"


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


class User:
    def __init__(self, e2e: E2EStack, tag: str, n_accounts: int = 1) -> None:
        self.e2e = e2e
        made = e2e.connected_user(
            CLIENT_ID, CLIENT_SECRET, [f"changes.{tag}.{i}@acme.example" for i in range(n_accounts)]
        )
        self.key, self.user_id, self.accounts = made["key"], made["user_id"], made["accounts"]

    def add(self, start: datetime, minutes: int = 60, account: int = 0, **extra: Any) -> dict[str, Any]:
        acct = self.accounts[account]
        return self.e2e.graph(
            "POST",
            f"/accounts/{acct['id']}/calendars/{quote(acct['calendars'][0]['id'], safe='')}/events",
            json={
                "subject": "Changing",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=minutes)).isoformat(),
                **extra,
            },
        ).json()

    def events(self) -> list[dict[str, Any]]:
        now = self.e2e.clock_now()
        return self.e2e.api(
            "GET",
            "/calendar/get_events",
            key=self.key,
            params={
                "time_min": (now - timedelta(days=2)).isoformat(),
                "time_max": (now + timedelta(days=90)).isoformat(),
                "limit": 100,
            },
        ).json()["results"]

    def bot(self, bot_id: str) -> dict[str, Any]:
        rows = [
            b
            for b in self.e2e.api(
                "GET", "/calendar/scheduled_bots", key=self.key, params={"status": "all"}
            ).json()["results"]
            if b["bot_id"] == bot_id
        ]
        return rows[0] if rows else {}


def scheduled(e2e: E2EStack, user: User, start: datetime, **extra: Any) -> tuple[dict[str, Any], str]:
    made = user.add(start, **extra)
    e2e.api("GET", "/calendar/events", key=user.key)  # the first sync (what a user's app does)
    e2e.settle()
    event = next(e for e in user.events() if e["platform_id"] == made["id"])
    resp = e2e.api("POST", f"/calendar/schedule/{event['id']}", key=user.key, json={})
    assert resp.status_code == 201, resp.text
    return made, resp.json()["bot_id"]


def test_moved_meeting_moves_its_bot_and_only_that_account_is_touched(e2e: E2EStack) -> None:
    user = User(e2e, "move", n_accounts=2)
    # within ARM_WITHIN (36 h) with its move: armed by a schedule, not deferred to the arming job
    start = (e2e.clock_now() + timedelta(hours=26)).replace(second=0, microsecond=0)
    made, bot_id = scheduled(
        e2e, user, start, online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3amv%40t/0"
    )
    other = user.accounts[1]
    b_event = user.add(start + timedelta(hours=1), account=1, location="https://acme.zoom.us/j/4444")
    e2e.api("GET", "/calendar/events", key=user.key)
    e2e.settle()
    b_before = next(e for e in user.events() if e["platform_id"] == b_event["id"])
    e2e.graph("DELETE", "/requests")
    new_start = start + timedelta(hours=3)
    e2e.graph(
        "PATCH",
        f"/events/{made['id']}",
        json={"start": new_start.isoformat(), "end": (new_start + timedelta(hours=1)).isoformat()},
    )
    e2e.settle()
    bot = user.bot(bot_id)
    assert bot["status"] == "Scheduled" and bot["scheduled_join_time"] == (
        new_start - timedelta(seconds=60)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    # the move re-armed it under the next generation's name, its lead before joining (issue 18)
    sched = {s["name"]: s for s in e2e.control("GET", "/schedules")["value"]}[f"launch-{bot_id}-g1"]
    fires = new_start - timedelta(seconds=60) - lead(bot_id)
    assert sched["at"].startswith(fires.strftime("%Y-%m-%dT%H:%M"))
    # the other account was neither notified nor synced, and nothing of it was written
    assert e2e.graph("GET", f"/requests?account={other['id']}").json()["value"] == []
    b_after = next(e for e in user.events() if e["platform_id"] == b_event["id"])
    assert b_after == b_before


def test_moved_into_the_past_and_cancelled_meetings_cancel_their_bots(e2e: E2EStack) -> None:
    user = User(e2e, "cancel")
    start = (e2e.clock_now() + timedelta(days=2)).replace(second=0, microsecond=0)
    past_ev, past_bot = scheduled(e2e, user, start, location="https://acme.zoom.us/j/1001")
    gone_ev, gone_bot = scheduled(
        e2e, user, start + timedelta(hours=2), location="https://acme.zoom.us/j/1002"
    )
    earlier = e2e.clock_now() - timedelta(hours=3)
    e2e.graph(
        "PATCH",
        f"/events/{past_ev['id']}",
        json={"start": earlier.isoformat(), "end": (earlier + timedelta(hours=1)).isoformat()},
    )
    e2e.graph("POST", f"/events/{gone_ev['id']}/cancel")
    e2e.settle()
    assert (user.bot(past_bot)["status"], user.bot(past_bot)["reason"]) == (
        "Cancelled",
        "event_moved_to_past",
    )
    assert (user.bot(gone_bot)["status"], user.bot(gone_bot)["reason"]) == ("Cancelled", "event_cancelled")
    names = {s["name"] for s in e2e.control("GET", "/schedules")["value"]}
    assert f"launch-{past_bot}" not in names and f"launch-{gone_bot}" not in names


def test_a_series_moved_to_tuesdays_gets_its_future_bots_on_tuesdays(e2e: E2EStack) -> None:
    user = User(e2e, "series")
    now = e2e.clock_now()
    monday = (now + timedelta(days=7 - now.weekday() + 7)).date()
    master = user.add(
        datetime(monday.year, monday.month, monday.day, 10, 0),
        minutes=30,
        online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3aser%40t/0",
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
            "range": {"type": "numbered", "startDate": str(monday), "numberOfOccurrences": 4},
        },
    )
    e2e.api("GET", "/calendar/events", key=user.key)
    e2e.settle()
    first = min((e for e in user.events() if e["series_id"]), key=lambda e: e["start_time"])
    made = e2e.api(
        "POST", f"/calendar/schedule/{first['id']}", key=user.key, json={"schedule_all_occurrences": True}
    ).json()
    assert len(made["bots"]) == 4
    e2e.graph(
        "PATCH",
        f"/events/{master['id']}",
        json={
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
                "range": {"type": "numbered", "startDate": str(monday), "numberOfOccurrences": 4},
            }
        },
    )
    e2e.settle()
    live = [
        b
        for b in e2e.api(
            "GET", "/calendar/scheduled_bots", key=user.key, params={"status": "Scheduled"}
        ).json()["results"]
    ]
    days = sorted(
        datetime.fromisoformat(b["occurrence_start"].replace("Z", "+00:00")).strftime("%a") for b in live
    )
    assert days == ["Tue"] * 4, live
    cancelled = {b["bot_id"] for b in made["bots"]} - {b["bot_id"] for b in live}
    assert len(cancelled) == 4


def test_forged_and_misrouted_notifications_change_nothing_and_say_nothing(e2e: E2EStack) -> None:
    a, b = User(e2e, "forge-a"), User(e2e, "forge-b")
    start = (e2e.clock_now() + timedelta(days=3)).replace(second=0, microsecond=0)
    made, bot_id = scheduled(e2e, a, start, location="https://acme.zoom.us/j/2001")
    before = a.bot(bot_id)
    subs = [
        s
        for s in e2e.graph("GET", "/subscriptions").json()["value"]
        if s["account_id"] == a.accounts[0]["id"]
    ]
    item = {
        "subscriptionId": subs[0]["id"],
        "changeType": "updated",
        "resource": "Users/x/Events/y",
        "resourceData": {"id": made["id"]},
        "clientState": "forged-secret",
    }
    url_a = f"{e2e.api_url}/admin/schedule/users/{a.user_id}/outlook/{quote(a.accounts[0]['mail'], safe='')}"
    url_b = f"{e2e.api_url}/admin/schedule/users/{b.user_id}/outlook/{quote(b.accounts[0]['mail'], safe='')}"
    e2e.graph("POST", "/notifications/pause")  # only the hand-made notifications below reach the webhook
    e2e.graph(
        "PATCH",
        f"/events/{made['id']}",
        json={
            "start": (start + timedelta(hours=5)).isoformat(),
            "end": (start + timedelta(hours=6)).isoformat(),
        },
    )
    try:
        forged = e2e.http.post(url_a, json={"value": [item]}, timeout=10)
        misrouted = e2e.http.post(
            url_b, json={"value": [{**item, "clientState": subs[0]["client_state"]}]}, timeout=10
        )
        unknown = e2e.http.post(url_a, json={"value": [{**item, "subscriptionId": "nope"}]}, timeout=10)
        e2e.control("POST", "/queues/drain")
        for resp in (forged, misrouted, unknown):
            assert resp.status_code == 202 and resp.text == ""  # same answer whatever was wrong: no oracle
        assert a.bot(bot_id)["scheduled_join_time"] == before["scheduled_join_time"]
    finally:
        e2e.graph("POST", "/notifications/resume")


def test_fifty_concurrent_copies_of_one_notification_have_one_effect(e2e: E2EStack) -> None:
    user = User(e2e, "dup")
    start = (e2e.clock_now() + timedelta(days=3)).replace(second=0, microsecond=0)
    made, bot_id = scheduled(e2e, user, start, location="https://acme.zoom.us/j/3001")
    e2e.graph("POST", "/notifications/pause")
    e2e.graph(
        "PATCH",
        f"/events/{made['id']}",
        json={
            "start": (start + timedelta(hours=1)).isoformat(),
            "end": (start + timedelta(hours=2)).isoformat(),
        },
    )
    sub = next(
        s
        for s in e2e.graph("GET", "/subscriptions").json()["value"]
        if s["account_id"] == user.accounts[0]["id"]
    )
    body = {
        "value": [
            {
                "subscriptionId": sub["id"],
                "changeType": "updated",
                "clientState": sub["client_state"],
                "resource": f"Users/{user.accounts[0]['id']}/Events/{made['id']}",
                "resourceData": {"id": made["id"], "@odata.etag": 'W/"1"'},
            }
        ]
    }
    mail = quote(user.accounts[0]["mail"], safe="")
    url = f"{e2e.api_url}/admin/schedule/users/{user.user_id}/outlook/{mail}"
    with ThreadPoolExecutor(25) as pool:
        statuses = list(pool.map(lambda _: e2e.http.post(url, json=body, timeout=30).status_code, range(50)))
    e2e.graph("POST", "/notifications/resume")
    assert statuses == [202] * 50
    e2e.settle()
    bots = [b for b in e2e.api("GET", "/calendar/scheduled_bots", key=user.key).json()["results"]]
    assert [(b["bot_id"], b["status"]) for b in bots] == [(bot_id, "Scheduled")]
    assert bots[0]["scheduled_join_time"] == (start + timedelta(hours=1) - timedelta(seconds=60)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_a_throttled_webhook_is_retried_by_graph_and_the_bot_still_follows(e2e: E2EStack) -> None:
    """The webhook function already runs as many invocations as Lambda allows it (held at its limit):
    API Gateway answers Graph's POST 500 without running the handler, Graph retries later, and the
    retry, once a slot is free, moves the bot."""
    user = User(e2e, "throttled")
    start = (e2e.clock_now() + timedelta(days=3)).replace(second=0, microsecond=0)
    made, bot_id = scheduled(e2e, user, start, location="https://acme.zoom.us/j/3002")
    sub = next(
        s
        for s in e2e.graph("GET", "/subscriptions").json()["value"]
        if s["account_id"] == user.accounts[0]["id"]
    )

    def attempts() -> list[dict[str, Any]]:
        path = f"/notifications?subscription_id={sub['id']}&kind=change"
        return e2e.graph("GET", path).json()["value"]

    earlier = len(attempts())  # the creation's notification, delivered
    e2e.control("DELETE", "/concurrency")
    held = e2e.control("POST", "/concurrency/WebhookFunction/hold")["held"]
    assert held == e2e.info["lambda_concurrency"]  # every slot: the webhook reserves none
    new_start = start + timedelta(hours=2)
    try:
        e2e.graph(
            "PATCH",
            f"/events/{made['id']}",
            json={"start": new_start.isoformat(), "end": (new_start + timedelta(hours=1)).isoformat()},
        )

        deadline = time.monotonic() + 30  # a liveness bound: Graph's first attempt has been made
        while len(attempts()) == earlier:
            assert time.monotonic() < deadline, "Graph never sent the change notification"
            time.sleep(0.05)
        first = attempts()[earlier]
        assert (first["status"], first["ok"], first["will_retry"]) == (500, False, True)
        assert user.bot(bot_id)["scheduled_join_time"] == (start - timedelta(seconds=60)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    finally:
        e2e.control("DELETE", "/concurrency/WebhookFunction/hold")
    e2e.settle()  # Graph's retry (1 s later) is delivered, then the sync queue drains
    tried = attempts()[earlier:]
    assert tried[-1]["ok"] and tried[-1]["attempt"] > 1, tried
    assert user.bot(bot_id)["scheduled_join_time"] == (new_start - timedelta(seconds=60)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    webhook = e2e.control("GET", "/concurrency")["value"]["WebhookFunction"]
    assert webhook["throttles"] >= 1 and webhook["held"] == 0


def test_one_failing_account_in_a_sync_batch_holds_back_no_other(e2e: E2EStack) -> None:
    """Graph is down for account A only. One batch of the sync queue holds A's message first, then
    B's: B is synced and its message deleted; only A's message waits (in its own group) and is
    synced once Graph is back."""
    import json
    import uuid

    user = User(e2e, "fifo", n_accounts=2)
    start = (e2e.clock_now() + timedelta(days=2)).replace(second=0, microsecond=0)
    # Held notifications: the two adds' own notifications would race the fault below (a sync of A
    # before it is installed); only the messages this test sends reach the worker.
    e2e.graph("POST", "/notifications/pause")
    try:
        a_event = user.add(start, account=0, subject="A meeting")
        b_event = user.add(start, account=1, subject="B meeting")
        a_id = user.accounts[0]["id"]
        e2e.graph(
            "POST",
            "/faults",
            json={"path": "calendarView/delta", "account": a_id, "status": 503, "times": -1},
        )
        sqs = e2e.boto("sqs")
        (queue_url,) = [u for u in sqs.list_queues()["QueueUrls"] if u.endswith("-SyncQueue.fifo")]
        groups = {}
        try:
            for acct in user.accounts:  # A's message first: under the old worker it failed the whole batch
                body = {
                    "user_id": user.user_id,
                    "provider": "outlook",
                    "account_id": acct["mail"],
                    "kind": "sync",
                }
                groups[acct["mail"]] = f"{user.user_id}#outlook#{acct['mail']}"
                sqs.send_message(
                    QueueUrl=queue_url,
                    MessageBody=json.dumps(body),
                    MessageGroupId=groups[acct["mail"]],
                    MessageDeduplicationId=uuid.uuid4().hex,
                )
            e2e.control("POST", "/queues/drain")
            titles = {e["platform_id"]: e["title"] for e in user.events()}
            assert b_event["id"] in titles and a_event["id"] not in titles
            left = e2e.control("GET", "/queues/SyncQueue/messages")["value"]
            # (other modules' messages may wait on the shared queue: only this user's groups count)
            left_groups = {m["attributes"].get("MessageGroupId") for m in left} & set(groups.values())
            assert left_groups == {groups[user.accounts[0]["mail"]]}  # B's is deleted, A's waits
        finally:
            e2e.graph("DELETE", "/faults")
        e2e.control("POST", "/clock/advance", json={"seconds": 901})  # past the queue's visibility timeout
        e2e.control("POST", "/queues/drain")
        assert a_event["id"] in {e["platform_id"] for e in user.events()}
        left = e2e.control("GET", "/queues/SyncQueue/messages")["value"]
        assert {m["attributes"].get("MessageGroupId") for m in left} & set(groups.values()) == set()
    finally:
        e2e.graph("POST", "/notifications/resume")
