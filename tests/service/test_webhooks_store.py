"""Customer webhook records (store/webhooks.py) and signing secrets (calbot.webhook_secrets) against the
local moto: the 10-per-user limit under concurrency, updates that touch only their fields, the delivery
result rule (5 days of failures disable), and secrets in either credential backend with the 24 h
overlap of a rotated-out secret."""

from __future__ import annotations

import base64
import itertools
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import aws, store, webhook_secrets
from calbot.models import WEBHOOK_LIMIT, WebhookEndpoint
from local.stack import LocalStack

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_n = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    yield inproc_stack


def new_user() -> str:
    return f"usr_wh{next(_n)}_{uuid.uuid4().hex[:8]}"


def endpoint(user_id: str, **changes: Any) -> WebhookEndpoint:
    data: dict[str, Any] = {
        "webhook_id": f"wh_{uuid.uuid4().hex[:20]}",
        "user_id": user_id,
        "url": "https://hooks.example.com/calbot",
        "event_types": ["*"],
        "created_at": T0,
        "updated_at": T0,
    }
    return WebhookEndpoint.model_validate(data | changes)


def webhook_count(user_id: str) -> int:
    item = (
        aws.dynamodb()
        .get_item(TableName=store._table(), Key={"PK": {"S": store.user_pk(user_id)}, "SK": {"S": "PROFILE"}})
        .get("Item", {})
    )
    return int(item.get("webhook_count", {"N": "0"})["N"])


def test_create_get_list_delete_and_the_count() -> None:
    user = new_user()
    first, second = endpoint(user, description="one"), endpoint(user, created_at=T0 + timedelta(seconds=1))
    store.create_webhook(first)
    store.create_webhook(second)
    assert store.get_webhook(user, first.webhook_id) == first
    assert [e.webhook_id for e in store.list_webhooks(user)] == [first.webhook_id, second.webhook_id]
    assert store.get_webhook(new_user(), first.webhook_id) is None  # another user's id
    assert store.list_webhooks(new_user()) == []
    assert webhook_count(user) == 2
    assert store.delete_webhook(user, first.webhook_id) is True
    assert store.delete_webhook(user, first.webhook_id) is False
    assert store.get_webhook(user, first.webhook_id) is None
    assert webhook_count(user) == 1


def test_the_limit_holds_under_concurrent_registrations() -> None:
    user = new_user()

    def register(_: int) -> bool:
        try:
            store.create_webhook(endpoint(user))
        except store.WebhookLimitReached:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(register, range(WEBHOOK_LIMIT + 4)))
    assert made.count(True) == WEBHOOK_LIMIT
    assert len(store.list_webhooks(user)) == WEBHOOK_LIMIT == webhook_count(user)
    with pytest.raises(store.WebhookLimitReached):
        store.create_webhook(endpoint(user))
    store.delete_webhook(user, store.list_webhooks(user)[0].webhook_id)  # a freed place can be taken
    store.create_webhook(endpoint(user))


def test_update_changes_only_its_fields_and_never_creates() -> None:
    user = new_user()
    made = endpoint(user)
    store.create_webhook(made)
    store.mark_webhook_delivery_result(user, made.webhook_id, ok=False, at=T0)
    after = store.update_webhook(
        user,
        made.webhook_id,
        {"url": "https://other.example.com/h", "description": None, "updated_at": T0 + timedelta(hours=1)},
    )
    assert after is not None
    assert after.url == "https://other.example.com/h" and after.description is None
    assert after.failing_since == T0  # a concurrent delivery's field is untouched
    assert after.updated_at == T0 + timedelta(hours=1) and after.created_at == T0
    assert store.update_webhook(user, "wh_missing", {"enabled": False}) is None
    assert store.get_webhook(user, "wh_missing") is None
    with pytest.raises(ValueError, match="not updatable"):
        store.update_webhook(user, made.webhook_id, {"user_id": "usr_other"})


def test_delivery_results_failing_for_5_days_disable_the_endpoint() -> None:
    user = new_user()
    made = endpoint(user)
    store.create_webhook(made)
    mark = store.mark_webhook_delivery_result
    assert mark(user, made.webhook_id, ok=True, at=T0) == made  # nothing to clear: nothing written
    first = mark(user, made.webhook_id, ok=False, at=T0)
    assert first is not None and first.failing_since == T0 and first.enabled
    later = mark(user, made.webhook_id, ok=False, at=T0 + timedelta(days=4, hours=23))
    assert later is not None and later.failing_since == T0 and later.enabled  # the first failure counts
    cleared = mark(user, made.webhook_id, ok=True, at=T0 + timedelta(days=4, hours=23, minutes=1))
    assert cleared is not None and cleared.failing_since is None
    start = T0 + timedelta(days=5)
    mark(user, made.webhook_id, ok=False, at=start)
    still = mark(user, made.webhook_id, ok=False, at=start + timedelta(days=5) - timedelta(seconds=1))
    assert still is not None and still.enabled
    off = mark(user, made.webhook_id, ok=False, at=start + timedelta(days=5))
    assert off is not None and not off.enabled and off.disabled_reason == "failing_5_days"
    assert store.get_webhook(user, made.webhook_id) == off
    assert mark(user, "wh_missing", ok=False, at=T0) is None
    assert store.get_webhook(user, "wh_missing") is None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    moment = [datetime.now(UTC)]
    monkeypatch.setattr(webhook_secrets, "now", lambda: moment[0])
    return moment


def test_new_secret_is_standard_webhooks_format() -> None:
    secret = webhook_secrets.new_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 64
    assert webhook_secrets.new_secret() != secret


def test_secrets_rotate_with_a_24_hour_overlap(credential_backend: str, clock: list[datetime]) -> None:
    user, webhook_id = new_user(), "wh_rotating"
    webhook_secrets.clear_cache()
    first, second = webhook_secrets.new_secret(), webhook_secrets.new_secret()
    assert webhook_secrets.store_secret(user, webhook_id, first).version == 1
    assert webhook_secrets.signing_secrets(user, webhook_id) == [first]
    stored = webhook_secrets.store_secret(user, webhook_id, second)
    assert stored.version == 2 and stored.previous_expires_at == clock[0] + timedelta(hours=24)
    assert webhook_secrets.signing_secrets(user, webhook_id) == [second, first]
    webhook_secrets.clear_cache()  # another container reads the backend: the same answer
    assert webhook_secrets.signing_secrets(user, webhook_id) == [second, first]
    clock[0] += timedelta(hours=24)
    assert webhook_secrets.signing_secrets(user, webhook_id) == [second]
    # where it is kept: the backend chosen, never in clear in the table
    if credential_backend == "dynamodb":
        item = aws.dynamodb().get_item(
            TableName=store._table(),
            Key={"PK": {"S": store.user_pk(user)}, "SK": {"S": "WHSEC#" + webhook_id}},
        )["Item"]
        assert first not in str(item) and second not in str(item)
    else:
        value = aws.ssm().get_parameter(Name=webhook_secrets.secret_path(user, webhook_id))["Parameter"]
        assert value["Type"] == "SecureString"
    assert webhook_secrets.delete_secrets(user, webhook_id) is True
    assert webhook_secrets.signing_secrets(user, webhook_id) == []
    assert webhook_secrets.delete_secrets(user, webhook_id) is False


def test_signing_secrets_are_cached_per_container_unless_the_version_moved(
    credential_backend: str, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, webhook_id = new_user(), "wh_cached"
    webhook_secrets.clear_cache()
    secret = webhook_secrets.new_secret()
    webhook_secrets.store_secret(user, webhook_id, secret)
    webhook_secrets.clear_cache()
    reads: list[str] = []
    real = webhook_secrets._read
    monkeypatch.setattr(webhook_secrets, "_read", lambda u, w: reads.append(w) or real(u, w))
    for _ in range(5):
        assert webhook_secrets.signing_secrets(user, webhook_id, version=1) == [secret]
    assert reads == [webhook_id]
    # another container rotated: a caller that knows the new version reads it again
    rotated = webhook_secrets.new_secret()
    webhook_secrets.store_secret(user, webhook_id, rotated)
    webhook_secrets._remember(user, webhook_id, webhook_secrets.StoredSecrets(current=secret, version=1))
    assert webhook_secrets.signing_secrets(user, webhook_id, version=2) == [rotated, secret]
    assert "whsec_" not in repr(webhook_secrets.StoredSecrets(current=secret, version=1))
