"""services.subscriptions: the 03:00 renewal (sparse expiry index), recreation, and lifecycle events."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import store
from calbot.models import ChangeMessage
from calbot.services import notifications, subscriptions
from local.stack import LocalStack
from tests.conftest import connect_new_account

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

    counts = subscriptions.run_renewal()
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
        assert subscriptions.run_renewal()["failed"] >= 1
    finally:
        stack.graph.clear_faults()
    assert store.get_connection(user_id, "outlook", conn.account_id).status == "active"
    stack.graph.revoke(acct["id"], code=70008)
    stack.graph.expire_access_tokens(acct["id"])
    assert subscriptions.run_renewal()["needs_reauth"] >= 1
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
