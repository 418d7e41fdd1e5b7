"""Customer-webhook deliveries: one record per (endpoint, event), USER#<u> / WHDLV#<webhook id>#<delivery
id>. The delivery id starts with the event's time in milliseconds (fixed width), so one endpoint's
deliveries sort by time in the key: newest first is one Query read backwards, paged by its last key.
TTL `ttl`: DELIVERY_KEEP_DAYS after the delivery ends (delivered or failed), or after its next attempt
while it is pending (a delivery never outlives its endpoint's interest by more than that)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta
from typing import Any, Protocol

from calbot.models import WebhookDelivery
from calbot.store.base import _get, _query, _strip_keys, _write_if, to_item, user_pk

DELIVERY_KEEP_DAYS = 7


class DeliveryRecords(Protocol):
    """Delivery records as the delivery service uses them. This module is the real one."""

    def put_delivery(self, delivery: WebhookDelivery) -> bool: ...

    def get_delivery(self, user_id: str, webhook_id: str, delivery_id: str) -> WebhookDelivery | None: ...

    def save_delivery(self, delivery: WebhookDelivery, *, expected_token: str) -> bool: ...

    def deliveries_page(
        self, user_id: str, webhook_id: str, *, limit: int, after: str | None = None
    ) -> tuple[list[WebhookDelivery], str | None]: ...


def delivery_id(webhook_id: str, event_id: str, at: datetime) -> str:
    """Deterministic per (endpoint, event): a redelivered fan-out message finds the same record."""
    digest = hashlib.sha256(f"{webhook_id}\x1f{event_id}".encode()).digest()[:10]
    tail = base64.b32encode(digest).decode().lower().rstrip("=")
    return f"whd_{int(at.timestamp() * 1000):013d}{tail}"


def _sk(webhook_id: str, delivery: str) -> str:
    return f"WHDLV#{webhook_id}#{delivery}"


def _ttl(delivery: WebhookDelivery) -> int:
    anchor = delivery.next_attempt_at if delivery.state == "pending" and delivery.next_attempt_at else None
    anchor = anchor or delivery.last_attempt_at or delivery.created_at
    return int((anchor + timedelta(days=DELIVERY_KEEP_DAYS)).timestamp())


def _item(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "PK": user_pk(delivery.user_id),
        "SK": _sk(delivery.webhook_id, delivery.delivery_id),
        "kind": "webhook_delivery",
        "ttl": _ttl(delivery),
        **delivery.model_dump(mode="json"),
    }


def put_delivery(delivery: WebhookDelivery) -> bool:
    """Create it; False (nothing written) when it already exists."""
    return _write_if(
        "put_item", Item=to_item(_item(delivery)), ConditionExpression="attribute_not_exists(PK)"
    )


def get_delivery(user_id: str, webhook_id: str, delivery_id: str) -> WebhookDelivery | None:
    item = _get(user_pk(user_id), _sk(webhook_id, delivery_id))
    return WebhookDelivery.model_validate(_strip_keys(item)) if item else None


def save_delivery(delivery: WebhookDelivery, *, expected_token: str) -> bool:
    """Replace it only while it still carries `expected_token` (no other attempt or retry got there
    first); False when one did (nothing written)."""
    return _write_if(
        "put_item",
        Item=to_item(_item(delivery)),
        ConditionExpression="attribute_exists(PK) AND #token = :token",
        ExpressionAttributeNames={"#token": "token"},
        ExpressionAttributeValues=to_item({":token": expected_token}),
    )


def deliveries_page(
    user_id: str, webhook_id: str, *, limit: int, after: str | None = None
) -> tuple[list[WebhookDelivery], str | None]:
    """Up to `limit` deliveries of one endpoint, newest first, after the delivery id `after`; and the
    id to continue after when there may be more."""
    prefix = f"WHDLV#{webhook_id}#"
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
        "ExpressionAttributeValues": to_item({":pk": user_pk(user_id), ":prefix": prefix}),
        "ScanIndexForward": False,
        "Limit": limit + 1,
    }
    if after:
        kwargs["ExclusiveStartKey"] = to_item({"PK": user_pk(user_id), "SK": prefix + after})
    rows: list[WebhookDelivery] = []
    for item in _query(**kwargs):
        rows.append(WebhookDelivery.model_validate(_strip_keys(item)))
        if len(rows) > limit:
            break
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].delivery_id if more and rows else None)
