"""Issue 16: an unauthenticated webhook request stays cheap, and de-duplication covers only what was
accepted. Calls are counted by a botocore hook that records only this thread's calls while the code
under test runs (the in-process stack's other threads share the client and must not be counted)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from calbot import aws, store
from calbot.http import Request
from calbot.models import Subscription
from calbot.services import notifications
from calbot.services.connect import hash_client_state
from calbot.timeutil import now
from local.stack import LocalStack
from tests.function_apps import load_app

USER = "usr_webhookcost"
ACCOUNT = "cost@contoso.example"
SECRET = "client-state-" + "s" * 40


# The webhook handler's endpoint, unwrapped: it takes a Request and returns a Response.
WEBHOOK = load_app("webhook", "webhook_app_webhook_cost").handler.__wrapped__


@contextmanager
def calls_of_this_thread(client: Any) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """(operation, params) of every call this thread makes through `client` inside the block."""
    me = threading.get_ident()
    seen: list[tuple[str, dict[str, Any]]] = []

    def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
        if threading.get_ident() == me:
            seen.append((model.name, params))

    client.meta.events.register("provide-client-params.*.*", hook)
    try:
        yield seen
    finally:
        client.meta.events.unregister("provide-client-params.*.*", hook)


@pytest.fixture()
def subscription(inproc_stack: LocalStack) -> Iterator[Subscription]:
    sub = Subscription(
        id=f"sub-cost-{secrets.token_hex(4)}",
        user_id=USER,
        provider="outlook",
        account_id=ACCOUNT,
        calendar_id="cal-1",
        client_state_hash=hash_client_state(SECRET),
        expires_at=now() + timedelta(days=2),
        created_at=now(),
    )
    store.put_subscriptions([sub])
    yield sub
    store.delete_subscriptions([sub.id])


def post(body: dict[str, Any]) -> Any:
    event = {
        "requestContext": {"http": {"method": "POST"}},
        "headers": {"content-type": "application/json"},
        "pathParameters": {"user_id": USER, "provider": "outlook", "account_id": ACCOUNT.replace("@", "%40")},
        "body": json.dumps(body),
    }
    return WEBHOOK(Request(event))


def genuine(sub: Subscription, n: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "subscriptionId": sub.id,
            "clientState": SECRET,
            "changeType": "updated",
            "resource": f"Users/x/Events/e{i}",
            "resourceData": {"id": f"e{i}", "@odata.etag": f'W/"{i}"'},
        }
        for i in range(n)
    ]


def forged(n: int) -> list[dict[str, Any]]:
    return [
        {
            "subscriptionId": f"forged-{i:04d}-{secrets.token_hex(8)}",
            "clientState": "guess",
            "changeType": "updated",
        }
        for i in range(n)
    ]


def test_a_forged_thousand_item_body_costs_one_read_call(subscription: Subscription) -> None:
    body = {"value": [*forged(999), *genuine(subscription)]}
    with calls_of_this_thread(aws.dynamodb()) as ddb, calls_of_this_thread(aws.sqs()) as sqs:
        assert post(body).status == 202
    reads = [op for op, _ in ddb]
    # One BatchGetItem of at most 100 distinct subscriptions, whatever the body holds: before, this was
    # 1,000 sequential GetItem calls.
    assert reads == ["BatchGetItem"]
    keys = ddb[0][1]["RequestItems"][store._table()]["Keys"]
    assert len(keys) == notifications.MAX_SUBSCRIPTIONS == 100
    # The genuine item was past the cap of distinct ids read, so it was dropped unread: nothing enqueued.
    assert [op for op, _ in sqs] == []


def test_each_subscription_is_read_once_per_request(subscription: Subscription) -> None:
    body = {"value": [*genuine(subscription, 500), *forged(3) * 100]}
    with calls_of_this_thread(aws.dynamodb()) as ddb, calls_of_this_thread(aws.sqs()) as sqs:
        assert post(body).status == 202
    assert [op for op, _ in ddb] == ["BatchGetItem"]
    assert len(ddb[0][1]["RequestItems"][store._table()]["Keys"]) == 4  # 1 genuine + 3 forged ids
    assert [op for op, _ in sqs] == ["SendMessage"]  # the account's one sync


def test_junk_added_to_a_captured_body_makes_no_new_queue_message(subscription: Subscription) -> None:
    captured = {"value": genuine(subscription, 2)}
    tampered = [
        {"value": [*captured["value"], *forged(1)]},
        {"value": [*captured["value"], {"subscriptionId": subscription.id, "clientState": "wrong"}]},
        {"value": [*captured["value"], "junk", 7, None]},
        {"value": [*forged(1), *captured["value"], captured["value"][0]]},  # plus a repeat
    ]
    dedup_ids = []
    for body in [captured, *tampered]:
        with calls_of_this_thread(aws.sqs()) as sqs:
            assert post(body).status == 202
        (sent,) = [params for op, params in sqs if op == "SendMessage"]
        dedup_ids.append(sent["MessageDeduplicationId"])
    # One id: SQS FIFO drops every copy within its 5-minute window, so no new message was produced.
    assert len(set(dedup_ids)) == 1, dedup_ids
    # A genuinely different accepted change still gets its own message.
    with calls_of_this_thread(aws.sqs()) as sqs:
        post({"value": genuine(subscription, 3)})
    (sent,) = [params for op, params in sqs if op == "SendMessage"]
    assert sent["MessageDeduplicationId"] not in dedup_ids
