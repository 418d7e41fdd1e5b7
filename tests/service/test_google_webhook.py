"""The webhook's Google branch: header-only channel notifications, checked against the stored channel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from calbot import store
from calbot.http import Request
from calbot.models import ChangeMessage, Subscription
from calbot.services import notifications
from calbot.services.connect import hash_client_state
from calbot.timeutil import now
from local.stack import LocalStack
from tests.function_apps import load_app

TOKEN = "channel-token-" + "x" * 40
USER = "usr_gwebhook"
ACCOUNT = "sam@gmail.example"


# The webhook handler's endpoint, unwrapped: it takes a Request and returns a Response.
WEBHOOK = load_app("webhook", "webhook_app_google_webhook").handler.__wrapped__


@pytest.fixture()
def channel(inproc_stack: LocalStack) -> Subscription:
    sub = Subscription(
        id="chan-0001",
        user_id=USER,
        provider="google",
        account_id=ACCOUNT,
        calendar_id=ACCOUNT,
        client_state_hash=hash_client_state(TOKEN),
        expires_at=now() + timedelta(days=7),
        created_at=now(),
        resource_id="res-123",
    )
    store.put_subscriptions([sub])
    yield sub
    store.delete_subscriptions([sub.id])


@pytest.fixture()
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[ChangeMessage]:
    sent: list[ChangeMessage] = []
    monkeypatch.setattr(notifications, "enqueue", lambda message, dedup: sent.append(message))
    return sent


def _post(headers: dict[str, str], user: str = USER, provider: str = "google", account: str = ACCOUNT) -> Any:
    event = {
        "requestContext": {"http": {"method": "POST"}},
        "headers": headers,
        "pathParameters": {"user_id": user, "provider": provider, "account_id": account.replace("@", "%40")},
        "body": None,
    }
    return WEBHOOK(Request(event))


def _headers(state: str = "exists", token: str = TOKEN, channel_id: str = "chan-0001", **extra: str) -> dict:
    return {
        "X-Goog-Channel-ID": channel_id,
        "X-Goog-Channel-Token": token,
        "X-Goog-Resource-ID": "res-123",
        "X-Goog-Resource-State": state,
        "X-Goog-Message-Number": "7",
        **extra,
    }


def test_a_valid_change_enqueues_one_sync_of_that_account(
    channel: Subscription, enqueued: list[ChangeMessage]
) -> None:
    resp = _post(_headers())
    assert resp.status == 202
    assert [(m.user_id, m.provider, m.account_id, m.kind) for m in enqueued] == [
        (USER, "google", ACCOUNT, "sync")
    ]


def test_sync_state_is_200_and_needs_no_work(channel: Subscription, enqueued: list[ChangeMessage]) -> None:
    assert _post(_headers(state="sync")).status == 200
    assert enqueued == []


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        (_headers(token="wrong-token"), {}),
        (_headers(token=""), {}),
        ({k: v for k, v in _headers().items() if k != "X-Goog-Channel-Token"}, {}),
        (_headers(channel_id="chan-unknown"), {}),
        (_headers(**{"X-Goog-Resource-ID": "res-other"}), {}),
        (_headers(), {"user": "usr_other"}),
        (_headers(), {"account": "someone@gmail.example"}),
        (_headers(), {"provider": "outlook"}),
    ],
    ids=[
        "wrong-token",
        "empty-token",
        "no-token",
        "unknown-channel",
        "other-resource",
        "other-user",
        "other-account",
        "other-provider",
    ],
)
def test_forged_notifications_are_dropped_with_the_same_answer(
    channel: Subscription, enqueued: list[ChangeMessage], headers: dict, path: dict
) -> None:
    resp = _post(headers, **path)
    assert resp.status == 202  # the same answer as a valid one: no oracle for channel ids or tokens
    assert enqueued == []
