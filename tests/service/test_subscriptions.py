"""services.subscriptions: the 03:00 renewal (sparse expiry index), recreation, and lifecycle events."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import aws, deadline, store
from calbot.deadline import Deadline
from calbot.models import ChangeMessage, RenewalMessage
from calbot.services import notifications, subscriptions
from local.stack import LocalStack
from tests.conftest import connect_new_account, renewal_night, setting

CLIENT_ID = "renew-client"
CLIENT_SECRET = "renew-secret-2b"
_n = itertools.count()


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> LocalStack:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    return inproc_stack


def connected(stack: LocalStack, calendars: int = 1) -> tuple[str, dict[str, Any]]:
    return connect_new_account(
        stack,
        CLIENT_ID,
        CLIENT_SECRET,
        prefix="renew",
        calendars=[{"name": f"Cal {i}", "is_default": i == 0} for i in range(calendars)],
    )


def set_expiry(sub_id: str, when: datetime) -> None:
    sub = store.get_subscription(sub_id)
    assert sub is not None
    store.put_subscriptions([sub.model_copy(update={"expires_at": when})])


def test_renewal_renews_what_expires_within_two_days_and_recreates_what_is_gone(stack: LocalStack) -> None:
    user_id, acct = connected(stack, calendars=3)
    conn = store.list_connections(user_id)[0]
    soon, later, gone = (r.id for r in conn.subscriptions)
    now = datetime.now(UTC)
    set_expiry(soon, now + timedelta(days=1))
    set_expiry(later, now + timedelta(days=5))
    set_expiry(gone, now + timedelta(days=1))
    stack.graph.delete_subscription(gone)  # removed behind our back

    counts = renewal_night()
    assert counts["renewed"] >= 1 and counts["recreated"] >= 1 and counts["needs_reauth"] == 0
    renewed = store.get_subscription(soon)
    assert renewed is not None and renewed.expires_at > now + timedelta(days=6)  # the provider's maximum
    untouched = store.get_subscription(later)
    assert untouched is not None and abs(untouched.expires_at - (now + timedelta(days=5))) < timedelta(
        seconds=1
    )
    assert store.get_subscription(gone) is None
    conn = store.list_connections(user_id)[0]
    at_emulator = {s["id"] for s in stack.graph.subscriptions() if s["account_id"] == acct["id"]}
    assert {r.id for r in conn.subscriptions} == at_emulator and len(at_emulator) == 3
    assert gone not in at_emulator


def test_renewal_marks_needs_reauth_only_on_a_real_auth_failure(stack: LocalStack) -> None:
    user_id, acct = connected(stack)
    conn = store.list_connections(user_id)[0]
    set_expiry(conn.subscriptions[0].id, datetime.now(UTC) + timedelta(hours=20))
    stack.graph.add_fault(path=r"^/v1\.0/subscriptions/", account=acct["id"], status=503, times=-1)
    try:
        assert renewal_night()["failed"] >= 1
    finally:
        stack.graph.clear_faults()
    assert store.get_connection(user_id, "outlook", conn.account_id).status == "active"
    stack.graph.revoke(acct["id"], code=70008)
    stack.graph.expire_access_tokens(acct["id"])
    assert renewal_night()["needs_reauth"] >= 1
    assert store.get_connection(user_id, "outlook", conn.account_id).status == "needs_reauth"


def test_subscription_removed_lifecycle_leads_to_a_new_subscription_and_a_resync(stack: LocalStack) -> None:
    user_id, acct = connected(stack)
    conn = store.list_connections(user_id)[0]
    old = conn.subscriptions[0].id
    stack.graph.delete_subscription(old)
    stack.graph.clear_requests()
    message = ChangeMessage(
        user_id=user_id, provider="outlook", account_id=conn.account_id, kind="recreate", subscription_id=old
    )
    result = notifications.consume({"Records": [{"messageId": "1", "body": message.model_dump_json()}]})
    assert result == {"batchItemFailures": []}
    now_subs = [s["id"] for s in stack.graph.subscriptions() if s["account_id"] == acct["id"]]
    assert len(now_subs) == 1 and now_subs[0] != old
    assert [r.id for r in store.list_connections(user_id)[0].subscriptions] == now_subs
    assert any(
        "calendarView/delta" in r["path"] for r in stack.graph.requests(account=acct["id"])
    )  # resynced
    bad = notifications.consume({"Records": [{"messageId": "2", "body": json.dumps({"user_id": "x"})}]})
    assert bad == {"batchItemFailures": []}  # malformed: dropped, not retried forever


def _private_queue() -> str:
    return str(aws.sqs().create_queue(QueueName=f"renewal-svc-{next(_n)}")["QueueUrl"])


def _drain(queue: str) -> list[dict[str, Any]]:
    bodies = []
    while got := aws.sqs().receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in got]
    return bodies


def test_the_job_only_fans_out_the_due_subscriptions_several_a_message(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, _ = connected(stack, calendars=3)
    refs = store.list_connections(user_id)[0].subscriptions
    now = datetime.now(UTC)
    for ref in refs[:2]:
        set_expiry(ref.id, now + timedelta(hours=30))
    set_expiry(refs[2].id, now + timedelta(days=5))
    monkeypatch.setattr(subscriptions, "SUBSCRIPTIONS_PER_MESSAGE", 1)  # one a message: both are seen
    queue = _private_queue()
    stack.graph.clear_requests()
    result = subscriptions.run_renewal(queue)
    assert stack.graph.requests() == []  # no provider call in the job: the worker renews
    ids = [i for body in _drain(queue) for i in body["subscription_ids"]]
    assert {refs[0].id, refs[1].id} <= set(ids) and refs[2].id not in ids
    assert result["failed"] == 0 and result["subscriptions_enqueued"] == len(ids) == result["messages"]

    monkeypatch.setattr(subscriptions, "SUBSCRIPTIONS_PER_MESSAGE", 25)
    queue = _private_queue()
    result = subscriptions.run_renewal(queue)
    messages = _drain(queue)
    assert result["messages"] == len(messages) and all(len(m["subscription_ids"]) <= 25 for m in messages)
    assert sum(len(m["subscription_ids"]) for m in messages) == result["subscriptions_enqueued"] >= 2
    assert len(messages) == -(-result["subscriptions_enqueued"] // 25)  # packed, not one each


def test_the_worker_isolates_a_failing_subscription_and_puts_it_back_alone(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    good_user, _ = connected(stack)
    bad_user, bad_acct = connected(stack)
    good = store.list_connections(good_user)[0].subscriptions[0].id
    bad = store.list_connections(bad_user)[0].subscriptions[0].id
    soon = datetime.now(UTC) + timedelta(hours=20)
    set_expiry(good, soon)
    set_expiry(bad, soon)
    queue = _private_queue()
    monkeypatch.setattr(subscriptions, "RETRY_DELAY_SECONDS", 0)
    stack.graph.add_fault(path=r"^/v1\.0/subscriptions/", account=bad_acct["id"], status=503, times=-1)
    try:
        with setting("RENEWAL_QUEUE_URL", queue):
            body = RenewalMessage(subscription_ids=[bad, good], run_id="r").model_dump_json()
            answer = subscriptions.consume({"Records": [{"messageId": "m1", "body": body}]})
            assert answer == {"batchItemFailures": []}  # the message is done: its failure went back alone
            assert store.get_subscription(good).expires_at > datetime.now(UTC) + timedelta(days=6)
            (back,) = _drain(queue)
            assert back["subscription_ids"] == [bad]
            # alone in its message, it is SQS's to retry (and, after maxReceiveCount, the dead-letter queue's)
            alone = RenewalMessage.model_validate(back).model_dump_json()
            answer = subscriptions.consume({"Records": [{"messageId": "m2", "body": alone}]})
            assert answer == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    finally:
        stack.graph.clear_faults()
    # redelivered once the provider is back: renewed; a second delivery of the same message is a no-op
    assert subscriptions.consume({"Records": [{"messageId": "m2", "body": alone}]}) == {
        "batchItemFailures": []
    }
    assert store.get_subscription(bad).expires_at > datetime.now(UTC) + timedelta(days=6)
    stack.graph.clear_requests()
    failures, outcomes = subscriptions.renew_batch({"Records": [{"messageId": "m3", "body": body}]})
    assert failures == [] and outcomes == {"current": 2} and stack.graph.requests() == []


def test_the_worker_waits_out_a_throttled_renewal(stack: LocalStack) -> None:
    user_id, acct = connected(stack)
    sub = store.list_connections(user_id)[0].subscriptions[0].id
    set_expiry(sub, datetime.now(UTC) + timedelta(hours=20))
    stack.graph.add_fault(
        path=r"^/v1\.0/subscriptions/", account=acct["id"], status=429, retry_after=2, times=1
    )
    stack.graph.clear_requests()
    try:
        body = RenewalMessage(subscription_ids=[sub], run_id="r").model_dump_json()
        failures, outcomes = subscriptions.renew_batch({"Records": [{"messageId": "m", "body": body}]})
    finally:
        stack.graph.clear_faults()
    assert failures == [] and outcomes == {"renewed": 1}
    patches = [
        r for r in stack.graph.requests(account=acct["id"]) if r["path"].startswith("/v1.0/subscriptions/")
    ]
    assert len(patches) == 2  # the 429, then the renewal after its Retry-After
    assert store.get_subscription(sub).expires_at > datetime.now(UTC) + timedelta(days=6)


def test_the_worker_leaves_subscriptions_it_has_no_time_for_on_the_queue(stack: LocalStack) -> None:
    user_id, acct = connected(stack)
    sub = store.list_connections(user_id)[0].subscriptions[0].id
    set_expiry(sub, datetime.now(UTC) + timedelta(hours=20))
    stack.graph.clear_requests()
    body = RenewalMessage(subscription_ids=[sub, "another"], run_id="r").model_dump_json()
    with deadline.active(Deadline.after(subscriptions.SUBSCRIPTION_SECONDS - 1)):
        answer = subscriptions.consume({"Records": [{"messageId": "m", "body": body}]})
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m"}]}  # none started: SQS retries it
    assert stack.graph.requests(account=acct["id"]) == []
