"""Customer webhook deliveries end to end on the local stack (virtual clock): an integrator registers
the stack's receiver sink, things happen to their bots and connections, and every event arrives signed
per Standard Webhooks, verified here with the `standardwebhooks` library as a receiver would; a
receiver down for two hours of clock time gets every event afterwards; the deliveries endpoint shows
the attempts; another user's ids are 404; no token or secret travels in a payload or a log line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
import requests
from standardwebhooks import webhooks as standard

from tests.e2e.conftest import E2EStack
from tests.e2e.leaks import find_leaks

CLIENT_ID = "webhooks-e2e-client"
CLIENT_SECRET = "webhooks-e2e-secret-77c1"


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


class Sink:
    """The stack's receiver sink: what it received, and its faults (its control API)."""

    def __init__(self, e2e: E2EStack) -> None:
        self.e2e = e2e
        self.url = e2e.info["webhook_sink_url"]
        self.control = e2e.info["webhook_sink_control_url"] + "/_control"

    def deliveries(self, path: str) -> list[dict[str, Any]]:
        got = requests.get(f"{self.control}/deliveries", timeout=30).json()["value"]
        return [d for d in got if d["path"] == path]

    def faults(self, **body: Any) -> dict[str, Any]:
        resp = requests.post(f"{self.control}/faults", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())


class Integrator:
    """A user with one connected Outlook account and the sink registered as their endpoint."""

    def __init__(self, e2e: E2EStack, tag: str) -> None:
        self.e2e = e2e
        made = e2e.connected_user(CLIENT_ID, CLIENT_SECRET, [f"wh.{tag}@acme.example"])
        self.key, self.user_id, self.account = made["key"], made["user_id"], made["accounts"][0]
        self.path = f"/hooks/{tag}"
        resp = e2e.api(
            "POST", "/webhooks", key=self.key, json={"url": Sink(e2e).url + self.path, "event_types": ["*"]}
        )
        assert resp.status_code == 201, resp.text
        self.webhook_id, self.secret = resp.json()["id"], resp.json()["secret"]

    def add_meeting(self, start: datetime, link: str) -> dict[str, Any]:
        calendar = quote(self.account["calendars"][0]["id"], safe="")
        return self.e2e.graph(
            "POST",
            f"/accounts/{self.account['id']}/calendars/{calendar}/events",
            json={
                "subject": "Webhooked",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=30)).isoformat(),
                "location": link,
            },
        ).json()

    def schedule(self, start: datetime, link: str) -> tuple[dict[str, Any], str]:
        made = self.add_meeting(start, link)
        self.e2e.api("GET", "/calendar/events", key=self.key)
        self.e2e.settle()
        events = self.e2e.api("GET", "/calendar/events", key=self.key).json()["results"]
        event = next(e for e in events if e["platform_id"] == made["id"])
        resp = self.e2e.api("POST", f"/calendar/schedule/{event['id']}", key=self.key, json={})
        assert resp.status_code == 201, resp.text
        self.e2e.control("POST", "/queues/drain")  # the virtual clock delivers queued events when told
        return made, resp.json()["bot_id"]

    def received(self) -> list[dict[str, Any]]:
        """Every delivery the sink answered 2xx for this endpoint, verified (raises if one is not)."""
        return [
            verified(self.e2e, self.secret, d)
            for d in Sink(self.e2e).deliveries(self.path)
            if d["status"] < 300
        ]

    def deliveries(self) -> list[dict[str, Any]]:
        resp = self.e2e.api(
            "GET", f"/webhooks/{self.webhook_id}/deliveries", key=self.key, params={"limit": 100}
        )
        assert resp.status_code == 200, resp.text
        return list(resp.json()["results"])


@contextmanager
def receiver_clock(now: datetime) -> Iterator[None]:
    """The library checks webhook-timestamp against its own clock (5 minutes' tolerance): a receiver
    living on the stack's virtual clock."""

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Clock:  # type: ignore[override]
            return cls.fromtimestamp(now.timestamp(), tz)

    with mock.patch.object(standard, "datetime", Clock):
        yield


def verified(e2e: E2EStack, secret: str, delivery: dict[str, Any]) -> dict[str, Any]:
    headers = delivery["headers"]
    sent_at = datetime.fromisoformat(delivery["time"].replace("Z", "+00:00"))
    with receiver_clock(sent_at):
        payload = standard.Webhook(secret).verify(delivery["body"], headers)
    assert payload["id"] == headers["webhook-id"]
    return {"payload": payload, "headers": headers, "time": sent_at}


def of_type(
    received: list[dict[str, Any]], event_type: str, bot_id: str | None = None
) -> list[dict[str, Any]]:
    return [
        r["payload"]
        for r in received
        if r["payload"]["type"] == event_type
        and (bot_id is None or r["payload"]["data"].get("bot_id") == bot_id)
    ]


def test_a_moved_meeting_a_cancel_and_a_launch_arrive_signed(e2e: E2EStack) -> None:
    user = Integrator(e2e, "lifecycle")
    start = (e2e.clock_now() + timedelta(days=2)).replace(second=0, microsecond=0)
    made, bot_id = user.schedule(start, "https://acme.zoom.us/j/9100")
    assert of_type(user.received(), "bot.scheduled", bot_id)

    new_start = start + timedelta(hours=2)
    e2e.graph(
        "PATCH",
        f"/events/{made['id']}",
        json={"start": new_start.isoformat(), "end": (new_start + timedelta(minutes=30)).isoformat()},
    )
    e2e.settle()
    (updated,) = of_type(user.received(), "bot.updated", bot_id)
    assert updated["data"]["scheduled_join_time"] == (new_start - timedelta(seconds=60)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert updated["data"]["status"] == "Scheduled"

    e2e.graph("POST", f"/events/{made['id']}/cancel")
    e2e.settle()
    (cancelled,) = of_type(user.received(), "bot.cancelled", bot_id)
    assert (cancelled["data"]["status"], cancelled["data"]["reason"]) == ("Cancelled", "event_cancelled")

    soon = (e2e.clock_now() + timedelta(minutes=30)).replace(second=0, microsecond=0)
    _, launched_bot = user.schedule(soon, "https://acme.zoom.us/j/9101")
    e2e.advance(soon - timedelta(seconds=55))
    e2e.control("POST", "/queues/drain")
    (launched,) = of_type(user.received(), "bot.launched", launched_bot)
    assert launched["data"]["status"] == "Launched" and launched["data"]["remote_bot_id"].startswith("bot_")
    listed = {d["event_id"]: d for d in user.deliveries()}
    assert listed[launched["id"]]["state"] == "delivered" and listed[launched["id"]]["attempts"] == 1


def test_a_revoked_grant_is_connection_needs_reauth(e2e: E2EStack) -> None:
    user = Integrator(e2e, "reauth")
    e2e.graph("POST", f"/accounts/{user.account['id']}/revoke", json={"code": 70008})
    e2e.graph("POST", "/access-tokens/expire", json={"account": user.account["id"]})
    e2e.api("GET", "/calendar/events", key=user.key)  # the sync meets the revoked grant
    e2e.settle()
    (event,) = of_type(user.received(), "connection.needs_reauth")
    assert event["data"]["status"] == "needs_reauth"
    assert event["data"]["account_id"] == user.account["mail"]


def test_a_receiver_down_for_two_hours_gets_every_event_afterwards(e2e: E2EStack) -> None:
    user = Integrator(e2e, "outage")
    sink = Sink(e2e)
    start = (e2e.clock_now() + timedelta(days=3)).replace(second=0, microsecond=0)
    assert sink.faults(down_seconds=7200)["up"] is False
    try:
        bots = [
            user.schedule(start + timedelta(hours=n), f"https://acme.zoom.us/j/92{n:02d}")[1]
            for n in range(3)
        ]
        assert e2e.api(
            "PATCH", f"/calendar/scheduled_bots/{bots[0]}", key=user.key, json={"bot_name": "Moved"}
        ).ok
        assert e2e.api("DELETE", f"/calendar/scheduled_bots/{bots[1]}", key=user.key).ok
        tested = e2e.api("POST", f"/webhooks/{user.webhook_id}/test", key=user.key)
        assert tested.status_code == 202 and tested.json()["state"] == "pending"
        e2e.control("POST", "/queues/drain")
        pending = user.deliveries()
        assert {d["type"] for d in pending} >= {
            "bot.scheduled",
            "bot.updated",
            "bot.cancelled",
            "webhook.test",
        }
        assert all(d["state"] == "pending" and d["last_status"] is None for d in pending), pending
        assert sink.deliveries(user.path) == []  # nothing got through: the port refused
        e2e.advance(e2e.clock_now() + timedelta(hours=3))
        e2e.control("POST", "/queues/drain")
    finally:
        sink.faults(down_seconds=0)
    after = user.deliveries()
    assert {d["event_id"] for d in after} == {d["event_id"] for d in pending}
    assert all(d["state"] == "delivered" and d["last_status"] == 200 for d in after), after
    assert all(d["attempts"] >= 2 for d in after)  # every one was retried through the outage
    received_ids = {r["headers"]["webhook-id"] for r in user.received()}
    assert received_ids >= {d["event_id"] for d in after}  # each event at least once, none lost
    # and nothing arrived before the receiver was back
    back = min(r["time"] for r in user.received())
    assert back >= datetime.fromisoformat(pending[0]["last_attempt_at"].replace("Z", "+00:00")) + timedelta(
        hours=1
    )


def test_another_users_webhook_and_delivery_ids_are_404(e2e: E2EStack) -> None:
    owner = Integrator(e2e, "owner")
    other = e2e.admin("create-user", "--with-key")["api_key"]
    sent = e2e.api("POST", f"/webhooks/{owner.webhook_id}/test", key=owner.key)
    assert sent.status_code == 202, sent.text
    delivery_id = sent.json()["id"]
    e2e.control("POST", "/queues/drain")
    base = f"/webhooks/{owner.webhook_id}"
    for method, path in (
        ("GET", f"{base}/deliveries"),
        ("POST", f"{base}/deliveries/{delivery_id}/retry"),
        ("POST", f"{base}/test"),
    ):
        resp = e2e.api(method, path, key=other)
        assert resp.status_code == 404 and resp.json()["error"] == "webhook_not_found", (path, resp.text)
    missing = e2e.api("POST", f"{base}/deliveries/whd_0000000000000abcdefgh/retry", key=owner.key)
    assert missing.status_code == 404 and missing.json()["error"] == "delivery_not_found"
    retried = e2e.api("POST", f"{base}/deliveries/{delivery_id}/retry", key=owner.key)
    assert retried.status_code == 202 and retried.json()["id"] == delivery_id
    e2e.control("POST", "/queues/drain")
    (shown,) = [d for d in owner.deliveries() if d["id"] == delivery_id]
    assert shown["attempts"] == 2 and shown["state"] == "delivered"
    assert (
        len([r for r in owner.received() if r["payload"]["type"] == "webhook.test"]) == 2
    )  # same webhook-id


def test_no_token_or_secret_in_any_payload_or_log_line(e2e: E2EStack) -> None:
    user = Integrator(e2e, "secrets")
    start = (e2e.clock_now() + timedelta(days=4)).replace(second=0, microsecond=0)
    user.schedule(start, "https://acme.zoom.us/j/9300")
    tokens = e2e.collect_token_material() | {CLIENT_SECRET}
    all_sink = requests.get(Sink(e2e).control + "/deliveries", timeout=30).json()["value"]
    assert all_sink, "the tests above delivered events"
    bodies = {
        f"delivery {n}": json.dumps({"body": d["body"], "path": d["path"]}) for n, d in enumerate(all_sink)
    }
    assert find_leaks(tokens | {user.secret}, bodies) == {}
    # the signing secret of every endpoint registered here never reaches a log line
    assert find_leaks({user.secret}, {"stack log": e2e.log_text()}) == {}


def test_an_endpoint_failing_for_five_days_is_disabled(e2e: E2EStack) -> None:
    user = Integrator(e2e, "failing")
    sink = Sink(e2e)
    begin = e2e.clock_now()
    sink.faults(status=500, until=(begin + timedelta(days=7)).isoformat())
    try:
        day = 0
        while True:
            sent = e2e.api("POST", f"/webhooks/{user.webhook_id}/test", key=user.key)
            if sent.status_code == 409:  # disabled: nothing more is sent to it
                assert sent.json()["error"] == "webhook_disabled"
                break
            assert sent.status_code == 202, sent.text
            assert day <= 6, "still enabled after six days of failures"
            day += 1
            e2e.advance(begin + timedelta(days=day))
            e2e.control("POST", "/queues/drain")
    finally:
        sink.faults(status=200, times=0)
        requests.delete(f"{sink.control}/faults", timeout=30)
    shown = e2e.api("GET", f"/webhooks/{user.webhook_id}", key=user.key).json()
    assert shown["enabled"] is False and shown["disabled_reason"] == "failing_5_days"
    assert day in (5, 6)
    listed = user.deliveries()
    assert listed and all(d["last_status"] == 500 for d in listed if d["attempts"])
    assert {d["state"] for d in listed} <= {"pending", "failed"}
    attempts = Sink(e2e).deliveries(user.path)
    assert attempts and {r["status"] for r in attempts} == {500}
    # its deliveries still pending fail without a POST at their next attempt, into the dead-letter queue
    e2e.advance(e2e.clock_now() + timedelta(days=2))
    e2e.control("POST", "/queues/drain")
    assert {d["state"] for d in user.deliveries()} == {"failed"}
    dead = e2e.control("GET", "/queues/WebhookDeadLetterQueue/messages")["value"]
    failed_ids = {d["id"] for d in user.deliveries()}
    assert failed_ids <= {json.loads(m["body"])["delivery_id"] for m in dead}
    assert len(Sink(e2e).deliveries(user.path)) == len(attempts)  # no POST to a disabled endpoint
